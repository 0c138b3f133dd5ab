"""`tsd-edge pairs`: the store at a glance, and pairs to and from JSONL / Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tsd
from tsd_edge.errors import InputError
from tsd_edge.pairs import export_pairs, import_pairs, summarise
from tsd_edge.store import Pair, PairStore
from tsd_edge.task import load_task
from tsd_edge.teachers import load_teacher

LABELS = ["refund", "card_lost", "balance"]


def make_task(folder: Path) -> Path:
    (folder / "in.txt").write_text("refund please\n", encoding="utf-8")
    (folder / "teach_pairs.py").write_text("def teach(texts):\n    return ['refund' for _ in texts]\n")
    task = {
        "name": "pairs",
        "labels": LABELS,
        "inputs": [{"path": "in.txt"}],
        "relevance": {"method": "teacher", "threshold": 0.5},
        "teacher": {"kind": "python", "function": "teach_pairs:teach"},
    }
    (folder / "task.yaml").write_text(json.dumps(task), encoding="utf-8")
    return folder / "task.yaml"


def fill(store: PairStore, fp: str) -> None:
    from tsd_edge.data import heldout, input_key

    store.register_teacher(fp, LABELS, {"kind": "python"})
    pairs = []
    for i in range(30):
        text = f"query {i}"
        key = input_key(text)
        rejected = i % 10 == 9
        pairs.append(
            Pair(
                key,
                text,
                "in.txt",
                "refund" if i % 2 else None,
                "heldout" if heldout(key, 0.2) else "train",
                "rejected" if rejected else "ok",
                None if rejected else LABELS[i % 3],
                None if rejected else np.array([0.7, 0.2, 0.1], np.float32),
                np.full(4, i, np.float32),
                i / 30,
                True,
                "answer 'pizza' is not one of the task's labels" if rejected else None,
                "pizza" if rejected else None,
                12.5,
                40,
                2,
                1 + (i == 3),
            )
        )
    store.add(fp, pairs)
    store.mark_relevance(fp, 0.5)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, str]:
    task = make_task(tmp_path)
    fp = load_teacher(load_task(task)).fingerprint
    with PairStore(tmp_path / "w" / "pairs.sqlite") as store:
        fill(store, fp)
    return task, tmp_path / "w", fp


def _all(path: Path, fp: str) -> list[Pair]:
    with PairStore(path) as store:
        return list(store.pairs(fp, status=None))


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_export_then_import_gives_back_every_pair(tmp_path: Path, setup: tuple[Path, Path, str], suffix: str) -> None:
    if suffix == "parquet":
        pytest.importorskip("pyarrow")
    task_path, work, fp = setup
    out = tmp_path / f"pairs.{suffix}"
    with PairStore(work / "pairs.sqlite") as store:
        assert export_pairs(store, fp, out, embeddings=True) == 30
    with PairStore(tmp_path / "other" / "pairs.sqlite") as other:
        assert import_pairs(other, load_task(task_path), fp, out) == (30, 0)
        assert import_pairs(other, load_task(task_path), fp, out) == (0, 30)  # nothing twice
    before, after = _all(work / "pairs.sqlite", fp), _all(tmp_path / "other" / "pairs.sqlite", fp)
    assert len(before) == len(after) == 30
    for a, b in zip(before, after, strict=True):
        for name in ("input_hash", "input", "source", "gold", "split", "status", "label", "relevance", "relevant"):
            assert getattr(a, name) == getattr(b, name), name
        for name in ("reason", "raw", "latency_ms", "tokens_in", "tokens_out", "attempts"):
            assert getattr(a, name) == getattr(b, name), name
        for name in ("probs", "embedding"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or np.allclose(x, y)


def test_a_foreign_jsonl_file_is_imported_for_the_tasks_teacher(tmp_path: Path, setup: tuple[Path, Path, str]) -> None:
    task_path, _, fp = setup
    rows = [
        {"input": "a new text", "label": "balance", "probs": [0.1, 0.1, 0.8]},
        {"input": "another", "label": "refund"},
    ]
    (tmp_path / "foreign.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with PairStore(tmp_path / "x" / "pairs.sqlite") as store:
        assert import_pairs(store, load_task(task_path), fp, tmp_path / "foreign.jsonl") == (2, 0)
        labels = {p.input: p.label for p in store.pairs(fp)}
    assert labels == {"a new text": "balance", "another": "refund"}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"label": "refund"}, "no 'input' text"),
        ({"input": "x", "label": "pizza"}, "label 'pizza' is not one of"),
        ({"input": "x", "label": "refund", "probs": [1.0]}, "probs has 1 values for 3 labels"),
        ({"input": "x", "label": "refund", "status": "maybe"}, "status 'maybe'"),
        ({"input": "x", "input_hash": "0" * 64, "label": "refund"}, "input_hash does not match"),
    ],
)
def test_a_bad_row_is_named(tmp_path: Path, setup: tuple[Path, Path, str], row: dict, message: str) -> None:
    task_path, _, fp = setup
    (tmp_path / "bad.jsonl").write_text(
        json.dumps({"input": "fine", "label": "refund"}) + "\n" + json.dumps(row) + "\n"
    )
    with PairStore(tmp_path / "x" / "pairs.sqlite") as store, pytest.raises(InputError, match="row 2") as err:
        import_pairs(store, load_task(task_path), fp, tmp_path / "bad.jsonl")
    assert message in str(err.value)
    with PairStore(tmp_path / "x" / "pairs.sqlite") as store:
        assert not store.answered(fp)  # all or nothing


def test_summary_counts_and_rejected_sample(setup: tuple[Path, Path, str]) -> None:
    _, work, fp = setup
    with PairStore(work / "pairs.sqlite") as store:
        s = summarise(store, fp, sample=2)
    assert s.total == 30 and s.by_status == {"ok": 27, "rejected": 3}
    assert sum(s.by_split.values()) == 30
    assert s.by_relevance == {"relevant": 13, "not relevant": 14}
    assert sum(s.by_label.values()) == 27
    assert (s.tokens_in, s.tokens_out, s.retried) == (1200, 60, 1)
    assert len(s.rejected) == 2 and s.rejected[0][1].startswith("answer 'pizza'") and s.rejected[0][2] == "pizza"


def test_the_pairs_command(tmp_path: Path, setup: tuple[Path, Path, str]) -> None:
    task_path, work, _ = setup
    shown = tsd("pairs", task_path, "--workdir", work)
    assert shown.code == 0, shown.err
    for text in ("ok 27, rejected 3", "not relevant 14, relevant 13", "1,200 prompt + 60 completion tokens", "pizza"):
        assert text in shown.out, shown.out
    out = tmp_path / "p.jsonl"
    assert tsd("pairs", "export", task_path, out, "--workdir", work).code == 0
    assert len(out.read_text().splitlines()) == 30 and (tmp_path / "p.jsonl.teacher.json").is_file()
    bad = tsd("pairs", "export", task_path, tmp_path / "p.csv", "--workdir", work)
    assert bad.code == 2 and "name the file *.parquet or *.jsonl" in bad.err
    assert tsd("pairs", task_path, "--workdir", tmp_path / "empty").code == 2
