"""Collection for kind: embed: `tsd-edge collect` stores each input's embedding (no label), relevance keeps the
task's inputs and drops off-task ones, an embed teacher's own vectors are never overwritten, and pairs move
through export/import with their embeddings. Banking77 queries (CC-BY-4.0) and NLU++ hotel queries as off-task
inputs, copied with their attribution files."""

from __future__ import annotations

import csv
import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tsd
from tsd_edge.collect import collect
from tsd_edge.errors import InputError
from tsd_edge.pairs import export_pairs, import_pairs, summarise
from tsd_edge.relevance import Relevance
from tsd_edge.store import Pair, PairStore
from tsd_edge.task import load_task

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "banking77" / "data"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 Banking77 training queries (the task), 200 others (the relevance reference), 50 hotel queries."""
    folder = tmp_path_factory.mktemp("embed-data")
    with (SAMPLE / "train.csv").open(encoding="utf-8", newline="") as fh:
        queries = [" ".join(row["text"].split()) for row in csv.DictReader(fh)]
    random.Random(0).shuffle(queries)
    (folder / "bank.txt").write_text("\n".join(queries[:300]) + "\n", encoding="utf-8")
    (folder / "reference.txt").write_text("\n".join(queries[300:500]) + "\n", encoding="utf-8")
    hotels = (SAMPLE / "hotels.txt").read_text(encoding="utf-8").splitlines()[:50]
    (folder / "hotels.txt").write_text("\n".join(hotels) + "\n", encoding="utf-8")
    for name in ("LICENSE", "SOURCE-banking77.md", "SOURCE-hotels.md"):
        shutil.copy(SAMPLE / name, folder / name)
    return folder


def write_task(folder: Path, data: Path, teacher: dict[str, Any], **extra: Any) -> Path:
    task = {
        "name": "embed-slice",
        "kind": "embed",
        "inputs": [{"path": str(data / "bank.txt")}, {"path": str(data / "hotels.txt")}],
        "teacher": teacher,
        "relevance": {"reference": {"path": str(data / "reference.txt")}},
        **extra,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "task.yaml"
    path.write_text(json.dumps(task), encoding="utf-8")
    return path


def test_collect_stores_embeddings_and_relevance_drops_the_hotels(tmp_path: Path, data: Path) -> None:
    task = write_task(tmp_path, data, {"kind": "embedding"})
    work = tmp_path / "run"
    ran = tsd("collect", task, "--workdir", work)
    assert ran.code == 0, ran.err[-2000:]
    assert "kNN ≥" in ran.out
    with PairStore(work / "pairs.sqlite") as store:
        rows = store.db.execute("SELECT source, status, label, probs, embedding, relevant FROM pairs").fetchall()
        (fingerprint,) = store.db.execute("SELECT DISTINCT teacher FROM pairs").fetchone()
        assert store.labels(fingerprint) == [] and store.spec(fingerprint)["task"] == "embed"
        summary = summarise(store, fingerprint)
    assert len(rows) == 350
    assert all(status == "ok" and label is None and probs is None for _, status, label, probs, _, _ in rows)
    vectors = np.stack([np.frombuffer(r[4], dtype="<f4") for r in rows])
    assert vectors.shape == (350, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    kept = {src: sum(r[5] for r in rows if r[0] == src) for src in ("bank.txt", "hotels.txt")}
    assert kept["bank.txt"] >= 270, kept  # at least 90% of the task's queries train the student
    assert kept["hotels.txt"] <= 10, kept  # at least 80% of the hotel queries do not
    assert summary.by_label == {} and summary.embedding_dim == 384
    shown = tsd("pairs", task, "--workdir", work)  # what a person reads: vectors, not an empty label line
    assert shown.code == 0 and "embeddings of 384 dimensions" in shown.out and "labels" not in shown.out, shown.out


def read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def fake_vectors(texts: list[str]) -> list[list[float]]:
    """16 numbers per text from its hash: a teacher whose space is not the relevance encoder's."""
    return [[b - 128.0 for b in hashlib.sha256(t.encode()).digest()[:16]] for t in texts]


def test_a_teacher_in_its_own_space_keeps_its_vectors_and_relevance_uses_the_encoder(
    tmp_path: Path, data: Path
) -> None:
    (tmp_path / "hashvecs.py").write_text(
        "import hashlib\n"
        "def embed(texts):\n"
        "    return [[b - 128.0 for b in hashlib.sha256(t.encode()).digest()[:16]] for t in texts]\n",
        encoding="utf-8",
    )
    small = tmp_path / "small"
    small.mkdir()
    for name, n in (("bank.txt", 40), ("hotels.txt", 20), ("reference.txt", 100)):  # a smaller slice: faster
        lines = read_lines(data / name)[:n]
        (small / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = load_task(write_task(tmp_path, small, {"kind": "python", "function": "hashvecs:embed"}))
    with PairStore(tmp_path / "pairs.sqlite") as store:
        res = collect(task, store)
        assert res.asked == 60 and res.rule is not None and res.rule.method == "knn"
        rows = store.db.execute("SELECT input, source, embedding, relevance, relevant FROM pairs").fetchall()
        cached = store.db.execute("SELECT COUNT(*), MIN(LENGTH(embedding)) FROM vectors").fetchone()
        # re-scoring under a new rule reads the cached encoder vectors, and still leaves the teacher's alone
        res = collect(
            load_task(
                write_task(
                    tmp_path,
                    small,
                    task.teacher.model_dump(),
                    relevance={"reference": {"path": str(small / "reference.txt")}, "k": 3},
                )
            ),
            store,
        )
        again = dict(store.db.execute("SELECT input, embedding FROM pairs").fetchall())
    want = np.asarray(fake_vectors([r[0] for r in rows]), dtype=np.float64)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    got = np.stack([np.frombuffer(r[2], dtype="<f4") for r in rows])
    assert got.shape == (60, 16) and np.abs(got - want).max() < 1e-6  # the teacher's answer, not the encoder's
    assert all(again[r[0]] == r[2] for r in rows)
    texts = {line for name in ("bank.txt", "hotels.txt", "reference.txt") for line in read_lines(small / name)}
    assert cached == (len(texts), 384 * 4)  # the encoder's vectors of the 60 inputs and the 100 reference texts
    assert all(r[3] is not None for r in rows)
    kept = {src: sum(r[4] for r in rows if r[1] == src) for src in ("bank.txt", "hotels.txt")}
    assert kept["bank.txt"] >= 36 and kept["hotels.txt"] <= 4, kept


def embed_store(path: Path, n: int = 6) -> tuple[PairStore, str]:
    store = PairStore(path)
    fingerprint = "e" * 16
    store.register_teacher(fingerprint, [], {"kind": "python", "task": "embed"})
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        text = f"query {i}"
        vec = rng.normal(size=8).astype(np.float32)
        pairs.append(
            Pair(
                input_hash=hashlib.sha256(text.encode()).hexdigest(),
                input=text,
                source="in.txt",
                gold=None,
                split="train",
                status="ok" if i else "rejected",
                label=None,
                probs=None,
                embedding=vec / np.linalg.norm(vec) if i else None,
                relevance=None,
                relevant=bool(i),
                reason=None if i else "the vector has non-finite values (NaN or inf)",
            )
        )
    store.add(fingerprint, pairs)
    return store, fingerprint


def test_an_embed_answer_is_relevant_where_a_classify_none_of_these_is_not(tmp_path: Path) -> None:
    store, fingerprint = embed_store(tmp_path / "pairs.sqlite")
    with store:
        store.mark_relevance(fingerprint, 0.5)
        assert dict(store.db.execute("SELECT input, relevant FROM pairs").fetchall()) == {
            "query 0": 0,  # rejected
            **{f"query {i}": 1 for i in range(1, 6)},
        }
        store.register_teacher("c" * 16, ["a", "b"], {"kind": "embedding"})
        (none,) = [p for p in store.pairs(fingerprint) if p.input == "query 1"]
        store.add("c" * 16, [none])  # label None with an embedding: a classify teacher's "none of these"
        store.mark_relevance("c" * 16, 0.5)
        assert store.db.execute("SELECT relevant FROM pairs WHERE teacher=?", ("c" * 16,)).fetchone() == (0,)


@pytest.mark.parametrize("name", ["pairs.jsonl", "pairs.parquet"])
def test_pairs_export_and_import_round_trip_embeddings(tmp_path: Path, name: str) -> None:
    task = load_task(write_task(tmp_path, tmp_path, {"kind": "embedding"}, relevance={"method": "teacher"}))
    store, fingerprint = embed_store(tmp_path / "a.sqlite")
    with store:
        assert export_pairs(store, fingerprint, tmp_path / name) == 6  # embeddings without being asked
        before = {p.input: p for p in store.pairs(fingerprint, status=None)}
    with PairStore(tmp_path / "b.sqlite") as other:
        assert import_pairs(other, task, "x" * 16, tmp_path / name) == (6, 0)
        assert other.labels(fingerprint) == []
        after = {p.input: p for p in other.pairs(fingerprint, status=None)}
    assert set(after) == set(before)
    for text, p in before.items():
        q = after[text]
        assert (q.status, q.label, q.reason) == (p.status, p.label, p.reason)
        assert (q.embedding is None and p.embedding is None) or np.allclose(q.embedding, p.embedding, atol=1e-7)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"input": "a"}, "needs its 'embedding'"),
        ({"input": "a", "embedding": [1.0, 0.0], "label": "x"}, "label 'x' is not one of the teacher's labels"),
        ({"input": "a", "embedding": [1.0, 0.0], "probs": []}, "no label or probs"),
        ({"input": "a", "embedding": [1.0, "nan"]}, "not a list of numbers"),
        ({"input": "a", "embedding": [0.0, 0.0]}, "all zeros"),
    ],
)
def test_importing_a_bad_embed_row_names_the_row_and_the_fix(tmp_path: Path, row: dict, message: str) -> None:
    task = load_task(write_task(tmp_path, tmp_path, {"kind": "embedding"}, relevance={"method": "teacher"}))
    (tmp_path / "bad.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    with PairStore(tmp_path / "p.sqlite") as store, pytest.raises(InputError, match=message) as err:
        import_pairs(store, task, "x" * 16, tmp_path / "bad.jsonl")
    assert "row 1" in str(err.value) and "\n" not in str(err.value)


def test_max_cosine_relevance_is_refused_for_an_embed_task(tmp_path: Path) -> None:
    task = load_task(write_task(tmp_path, tmp_path, {"kind": "embedding"}, relevance={"method": "max_cosine"}))
    with PairStore(tmp_path / "p.sqlite") as store, pytest.raises(InputError, match="no labels") as err:
        Relevance(task, store, None)
    assert "relevance.reference" in str(err.value) and "\n" not in str(err.value)


def test_without_a_reference_every_answered_input_is_kept_and_the_rule_says_so(tmp_path: Path) -> None:
    task = load_task(write_task(tmp_path, tmp_path, {"kind": "embedding"}, relevance={}))
    store, fingerprint = embed_store(tmp_path / "p.sqlite")
    with store:
        rule = Relevance(task, store, None).refresh(fingerprint)
        assert store.count_by(fingerprint, "relevant", ok_only=True) == {"relevant": 5}
    assert rule.method == "teacher" and rule.describe().startswith("none: every answered input kept")
