"""Pairs at scale: a store exported as Parquet shards and imported from the folder (or a glob) is the same store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tsd
from tsd_edge.data import heldout, input_key
from tsd_edge.errors import InputError
from tsd_edge.pairs import export_pairs, import_pairs
from tsd_edge.store import Pair, PairStore
from tsd_edge.task import load_task
from tsd_edge.teachers import load_teacher

pytest.importorskip("pyarrow")

LABELS = ["refund", "card_lost", "balance"]
N = 53


def make_task(folder: Path) -> Path:
    (folder / "in.txt").write_text("\n".join(f"query {i}" for i in range(N)) + "\n", encoding="utf-8")
    (folder / "teach_shards.py").write_text("def teach(texts):\n    return ['refund' for _ in texts]\n")
    task = {
        "name": "shards",
        "labels": LABELS,
        "inputs": [{"path": "in.txt"}],
        "relevance": {"method": "teacher", "threshold": 0.5},
        "teacher": {"kind": "python", "function": "teach_shards:teach"},
    }
    (folder / "task.yaml").write_text(json.dumps(task), encoding="utf-8")
    return folder / "task.yaml"


def fill(store: PairStore, fp: str) -> None:
    """N pairs with every kind of value: rejected rows, no gold, soft labels, embeddings, costs."""
    store.register_teacher(fp, LABELS, {"kind": "python"})
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(N):
        text, rejected = f"query {i}", i % 10 == 9
        key = input_key(text)
        probs = rng.dirichlet(np.ones(3)).astype(np.float32)
        pairs.append(
            Pair(
                key,
                text,
                "in.txt",
                LABELS[i % 3] if i % 2 else None,
                "heldout" if heldout(key, 0.2) else "train",
                "rejected" if rejected else "ok",
                None if rejected else LABELS[int(probs.argmax())],
                None if rejected else probs,
                rng.standard_normal(8).astype(np.float32),
                float(rng.uniform()),
                True,
                "answer 'pizza' is not one of the task's labels" if rejected else None,
                "pizza" if rejected else None,
                float(rng.uniform(5, 50)),
                40 + i,
                2,
                1 + (i == 3),
            )
        )
    store.add(fp, pairs)
    store.mark_relevance(fp, 0.5)


def everything(path: Path) -> list[tuple]:
    """Every teacher and every column of every pair but `created_at` (when a row was written, not what it says)."""
    with PairStore(path) as store:
        teachers = list(store.db.execute("SELECT fingerprint, labels, spec FROM teachers"))
        columns = [r[1] for r in store.db.execute("PRAGMA table_info(pairs)") if r[1] != "created_at"]
        rows = list(store.db.execute(f"SELECT {', '.join(columns)} FROM pairs ORDER BY input_hash"))
    return teachers + rows


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, Path, str]:
    task = make_task(tmp_path)
    fp = load_teacher(load_task(task)).fingerprint
    with PairStore(tmp_path / "w" / "pairs.sqlite") as s:
        fill(s, fp)
    return task, tmp_path / "w" / "pairs.sqlite", fp


@pytest.mark.parametrize("how", ["folder", "glob", "files"])
def test_shards_round_trip_to_an_identical_store(tmp_path: Path, store: tuple[Path, Path, str], how: str) -> None:
    task_path, db, fp = store
    out = tmp_path / "shards"
    with PairStore(db) as s:
        assert export_pairs(s, fp, out, embeddings=True, shard_size=10) == N
    shards = sorted(out.iterdir())
    assert [p.name for p in shards] == [f"part-{i:05d}.parquet" for i in range(6)]  # 53 rows: 5 x 10 + 3
    source = {"folder": out, "glob": str(out / "part-*.parquet"), "files": shards}[how]
    with PairStore(tmp_path / "other" / "pairs.sqlite") as other:
        assert import_pairs(other, load_task(task_path), fp, source) == (N, 0)
        assert import_pairs(other, load_task(task_path), fp, source) == (0, N)  # nothing twice
    assert everything(tmp_path / "other" / "pairs.sqlite") == everything(db)


def test_a_new_export_replaces_the_old_shards(tmp_path: Path, store: tuple[Path, Path, str]) -> None:
    _, db, fp = store
    out = tmp_path / "shards"
    with PairStore(db) as s:
        export_pairs(s, fp, out, shard_size=5)
        assert len(list(out.glob("part-*.parquet"))) == 11
        export_pairs(s, fp, out, shard_size=20)
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    with PairStore(db) as s, pytest.raises(InputError, match="give a folder"):
        export_pairs(s, fp, tmp_path / "pairs.parquet", shard_size=10)
    with PairStore(db) as s, pytest.raises(InputError, match="no files match"):
        import_pairs(s, load_task(store[0]), fp, str(tmp_path / "nothing-*.parquet"))


def test_the_cli_exports_and_imports_shards(tmp_path: Path, store: tuple[Path, Path, str]) -> None:
    task_path, db, _ = store
    out = tmp_path / "shards"
    ran = tsd("pairs", "export", task_path, f"{out}/", "--shard-size", "20", "--embeddings", "--workdir", db.parent)
    assert ran.code == 0 and f"exported {N} pairs" in ran.out, ran.err
    assert len(list(out.glob("part-*.parquet"))) == 3
    ran = tsd("pairs", "import", task_path, *sorted(out.glob("part-*.parquet")), "--workdir", tmp_path / "b")
    assert ran.code == 0 and f"imported {N} pairs from 3 files" in ran.out, ran.err
    assert everything(tmp_path / "b" / "pairs.sqlite") == everything(db)
