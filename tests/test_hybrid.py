"""The hybrid system at run time: unsure inputs go to the task's real teacher, its answers are stored as pairs
for the next distillation, and a teacher that is down degrades to the student's answer marked deferred."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from conftest import tsd

# a mix the slice's student is sure of and inputs it has never seen anything like
TEXTS = [
    "I lost my card",
    "my card still has not arrived",
    "what is the exchange rate for euros",
    "can I bring my dog to the hotel",
    "the pool closes at what time",
    "is breakfast included in the room",
    "why was I charged for taking out cash",
    "how old do I need to be to open an account",
]


def with_threshold(pkg: Path, threshold: float, out: Path) -> Path:
    """The same package with another deferral threshold (the slice's held-out set is too small for SGR to
    certify a demanding target, and at an easy one the student answers everything)."""
    from tsd_edge.runtime.package import read_package, write_package

    src = read_package(pkg, out.parent / "unpacked")
    files = {name: src.file(name).read_bytes() for name in src.manifest["files"]}
    files["deferral.json"] = json.dumps({**json.loads(files["deferral.json"]), "threshold": threshold}).encode()
    manifest = {k: v for k, v in src.manifest.items() if k not in ("files", "schema", "created")}
    manifest["deferral"] = {**manifest["deferral"], "threshold": threshold}
    return write_package(out, files, manifest)


def test_unsure_inputs_go_to_the_teacher_and_are_stored(hybrid_package: tuple[Path, Path], tmp_path: Path) -> None:
    import tsd_edge
    from tsd_edge.hybrid import SOURCE, Hybrid
    from tsd_edge.store import PairStore
    from tsd_edge.task import load_task
    from tsd_edge.teachers import load_teacher

    task_file, shipped = hybrid_package
    pkg = with_threshold(shipped, 0.5, tmp_path / "half.tsdpkg")
    task = load_task(task_file)
    teacher = load_teacher(task)
    with tsd_edge.load(pkg) as model:
        alone = model.predict(TEXTS)
    deferred = [t for t, p in zip(TEXTS, alone, strict=True) if p.deferred]
    assert deferred and len(deferred) < len(TEXTS), [p.confidence for p in alone]  # the mix splits both ways
    store = tmp_path / "run" / "pairs.sqlite"  # --workdir is a run folder: its store keeps the teacher's answers
    ran = tsd("predict", pkg, "--teacher", task_file, "--workdir", store.parent, *TEXTS)
    assert ran.code == 0, ran.err
    rows = [json.loads(line) for line in ran.out.splitlines()]
    teacher_answers = {t: r.label for t, r in zip(deferred, teacher.answer(deferred), strict=True)}
    for text, row, before in zip(TEXTS, rows, alone, strict=True):
        if before.deferred:
            assert row["source"] == "teacher" and row["label"] == teacher_answers[text], row
        else:
            assert row["source"] == "student" and row["label"] == before.label
    with PairStore(store) as pairs:
        stored = {p.input: p for p in pairs.pairs(teacher.fingerprint, status=None) if p.source == SOURCE}
    assert set(stored) == set(deferred)
    assert all(stored[t].label == teacher_answers[t] for t in deferred)
    # stored as collect stores them: no score of the teacher's own (its max cosine) standing in for the task's
    # kNN relevance; the next refresh (collect, run, pairs import) scores them by the task's rule
    assert all(stored[t].relevance is None for t in deferred)
    from tsd_edge.relevance import Relevance

    with PairStore(store) as pairs:
        rule = Relevance(task, pairs, teacher).refresh(teacher.fingerprint)
        scored = {p.input: p for p in pairs.pairs(teacher.fingerprint, status=None) if p.source == SOURCE}
    assert rule.method == "knn" and all(scored[t].relevance is not None for t in deferred)
    assert all(scored[t].relevant == (scored[t].relevance >= rule.threshold) for t in deferred)
    # a serving host's own store closes the loop: its teacher is registered with the labels, so its pairs export
    # and import into another run folder (the training run's)
    with PairStore(store) as pairs:
        assert pairs.labels(teacher.fingerprint) == task.label_names
    exported = tmp_path / "deferred.jsonl"
    assert tsd("pairs", "export", task_file, exported, "--workdir", store.parent).code == 0
    imported = tsd("pairs", "import", task_file, exported, "--workdir", tmp_path / "training")
    assert imported.code == 0 and f"imported {len(deferred)} pairs" in imported.out, imported.out + imported.err
    # asked again: the same answers, nothing stored twice
    again = Hybrid(tsd_edge.load(pkg), task, store=store)
    assert [p.source for p in again.predict(TEXTS)] == [r["source"] for r in rows]
    assert again.stats["stored"] == 0 and again.stats["teacher"] == len(deferred)
    again.close()


def test_a_teacher_that_is_down_degrades_to_the_student(hybrid_package: tuple[Path, Path], tmp_path: Path) -> None:
    """The task's teacher as an OpenAI-compatible endpoint on a port where nothing listens."""
    task_file, shipped = hybrid_package
    pkg = with_threshold(shipped, 0.5, tmp_path / "half.tsdpkg")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: connections are refused
    text = task_file.read_text(encoding="utf-8").replace(
        "teacher:\n",
        f"teacher:\n  kind: openai\n  base_url: http://127.0.0.1:{port}/v1\n  model: m\n  max_retries: 0\n"
        "  timeout: 2\n",
        1,
    )
    text = "\n".join(line for line in text.splitlines() if not line.startswith("  examples:")) + "\n"
    shutil.copytree(task_file.parent / "data", tmp_path / "data")
    down = tmp_path / "task.yaml"
    down.write_text(text, encoding="utf-8")
    ran = tsd("predict", pkg, "--teacher", down, "--workdir", tmp_path / "run", *TEXTS)
    assert ran.code == 0, ran.err
    rows = [json.loads(line) for line in ran.out.splitlines()]
    assert {r["source"] for r in rows} == {"student", "deferred"}
    assert all("error" in r and "teacher" in r["error"] for r in rows if r["source"] == "deferred")


def test_teacher_of_another_task_is_refused(hybrid_package: tuple[Path, Path], tmp_path: Path) -> None:
    task_file, pkg = hybrid_package
    shutil.copytree(task_file.parent / "data", tmp_path / "data")
    other = tmp_path / "task.yaml"
    other.write_text(task_file.read_text(encoding="utf-8").replace("name: bank-slice", "name: other"), encoding="utf-8")
    ran = tsd("predict", pkg, "--teacher", other, "hello")
    assert ran.code == 2 and "give the package's task" in ran.err


@pytest.mark.network
def test_serve_with_the_teacher_answers_as_predict_does(hybrid_package: tuple[Path, Path], tmp_path: Path) -> None:
    """`tsd-edge serve PKG --teacher TASK`: the same sources and labels as `predict --teacher`, over HTTP."""
    import httpx
    from test_serve import Server

    task_file, shipped = hybrid_package
    pkg = with_threshold(shipped, 0.5, tmp_path / "half.tsdpkg")
    want = tsd("predict", pkg, "--teacher", task_file, "--workdir", tmp_path / "a", *TEXTS)
    assert want.code == 0, want.err
    expected = [(r["label"], r["source"]) for r in map(json.loads, want.out.splitlines())]
    server = Server(pkg, "--teacher", task_file, "--workdir", tmp_path / "b").wait_ready()
    try:
        got = httpx.post(server.url + "/v1/classify", json={"texts": TEXTS}, timeout=120).json()
    finally:
        assert server.stop() == 0
    assert [(p["label"], p["source"]) for p in got["predictions"]] == expected
    assert {s for _, s in expected} == {"student", "teacher"}
    assert (tmp_path / "b" / "pairs.sqlite").is_file()  # the teacher's answers were stored


def test_a_slow_teacher_cannot_hold_the_caller(hybrid_package: tuple[Path, Path], tmp_path: Path) -> None:
    """A real OpenAI-compatible server that takes 1.5 s an answer: the caller waits 0.3 s and gets the student's
    answers flagged; while that call is in flight a second one is answered at once ("busy"); the late answers
    are stored anyway, with provenance beside the store."""
    import time

    import tsd_edge
    from openai_server import FakeOpenAI
    from tsd_edge.hybrid import Hybrid
    from tsd_edge.store import PairStore
    from tsd_edge.task import load_task

    task_file, shipped = hybrid_package
    pkg = with_threshold(shipped, 0.5, tmp_path / "half.tsdpkg")
    shutil.copytree(task_file.parent / "data", tmp_path / "data")
    labels = json.loads((tmp_path / "data" / "labels.json").read_text(encoding="utf-8"))
    with FakeOpenAI(labels, latency=1.5) as server:
        text = task_file.read_text(encoding="utf-8").replace(
            "teacher:\n", f"teacher:\n  kind: openai\n  base_url: {server.url}\n  model: m\n  timeout: 20\n", 1
        )
        text = "\n".join(line for line in text.splitlines() if not line.startswith("  examples:")) + "\n"
        (tmp_path / "task.yaml").write_text(text, encoding="utf-8")
        store = tmp_path / "run" / "pairs.sqlite"
        hybrid = Hybrid(tsd_edge.load(pkg), load_task(tmp_path / "task.yaml"), store=store, wait=0.3, pending=1)
        start = time.perf_counter()
        first = hybrid.predict(TEXTS)
        second = hybrid.predict(TEXTS)
        took = time.perf_counter() - start
        hybrid.close()  # waits for the teacher's late answers, which are stored
    unsure = [t for t, p in zip(TEXTS, first, strict=True) if p.deferred]
    assert unsure and took < 1.5, took
    assert all("did not answer within 0.3 s" in str(p.error) for p in first if p.deferred)
    assert all("teacher busy" in str(p.error) for p in second if p.deferred)
    with PairStore(store) as pairs:
        stored = {p.input for p in pairs.pairs(hybrid.teacher.fingerprint, status=None)}
    assert stored == set(unsure)
    rows = [json.loads(line) for line in (store.parent / "deferred.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(unsure) and {r["package"] for r in rows} == {"bank-slice-cpu-x86"}
    assert all(r["confidence"] < 0.5 and r["student"] in labels and r["teacher"] in labels for r in rows)
