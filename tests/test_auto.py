"""`tsd-edge auto` on a small Banking77 slice with the real offline teacher and the real pair store;
selection strategies on hand-made pools."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import tsd
from slices import LABELS, write_slice
from tsd_edge.agreement import compare
from tsd_edge.auto import per_label_agreement, split_inputs
from tsd_edge.selection import Pool, label_weights, margin, proxy_probs, select
from tsd_edge.task import load_task

AUTO = "auto: {initial: 40, batch: 40, epochs: 2, min_steps: 12}\n"


def _slice(folder: Path, threshold: float) -> Path:
    return write_slice(folder, train_per_label=30, test_per_label=15, hotels=20, threshold=threshold, extra=AUTO)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _stored(workdir: Path) -> list[str]:
    with sqlite3.connect(workdir / "pairs.sqlite") as db:
        return [r[0] for r in db.execute("SELECT input_hash FROM pairs")]


# -- selection -------------------------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_margin_picks_the_least_sure() -> None:
    probs = np.array([[0.9, 0.05, 0.05], [0.5, 0.45, 0.05], [0.6, 0.3, 0.1], [0.34, 0.33, 0.33]])
    pool = Pool(list("abcd"), np.log(probs), _unit(np.eye(4, 3) + 0.1), np.zeros((0, 3)))
    assert np.allclose(margin(np.log(probs)), [0.85, 0.05, 0.3, 0.01])
    assert select(pool, 2, "margin", labels=["x", "y", "z"]) == ["d", "b"]


def _two_clusters() -> Pool:
    """Cluster A (20 inputs) is the least sure; cluster B (20) a little surer: margin alone takes only A."""
    rng = np.random.default_rng(0)
    emb = _unit(np.vstack([rng.normal([1, 0, 0], 0.02, (20, 3)), rng.normal([0, 1, 0], 0.02, (20, 3))]))
    logits = np.vstack([np.log([[0.36, 0.34, 0.30]] * 20), np.log([[0.5, 0.3, 0.2]] * 20)])
    return Pool([f"a{i}" for i in range(20)] + [f"b{i}" for i in range(20)], logits, emb, np.zeros((0, 3)))


def test_diversity_draws_from_both_clusters() -> None:
    pool = _two_clusters()
    assert all(k.startswith("a") for k in select(pool, 6, "margin", labels=["x", "y", "z"]))
    for strategy in ("diverse", "mix"):
        picked = select(pool, 6, strategy, labels=["x", "y", "z"])
        assert len(set(picked)) == 6
        assert {k[0] for k in picked} == {"a", "b"}, strategy


def test_diversity_moves_away_from_what_was_asked() -> None:
    pool = _two_clusters()
    pool.asked = _unit(np.array([[1.0, 0.0, 0.0]]))  # cluster A has been asked about already
    assert select(pool, 1, "diverse", labels=["x", "y", "z"])[0].startswith("b")


def test_label_weights_follow_held_out_disagreement() -> None:
    w = label_weights({"x": 0.5, "y": 0.9, "z": 1.0}, ["x", "y", "z", "unseen"])
    assert w[0] > w[1] > w[2] > 0  # a perfect label keeps a floor: its estimate comes from few inputs
    assert np.isclose(w.mean(), 1.0)


def _asked_near(pool: Pool, labels: list[int]) -> Pool:
    """Each candidate gets one asked neighbour (a near copy of it) with the given teacher label."""
    pool.asked = _unit(pool.embeddings + 0.01)
    pool.asked_labels = np.array(labels)
    return pool


def test_the_proxy_votes_with_the_nearest_answers() -> None:
    pool = _asked_near(Pool(["p", "q"], np.zeros((2, 3)), _unit(np.eye(2, 3)), np.zeros((0, 3))), [2, 0])
    q = proxy_probs(pool, 3, k=2)
    assert q.shape == (2, 3) and np.allclose(q.sum(axis=1), 1.0)
    assert q[0].argmax() == 2 and q[1].argmax() == 0 and q[0, 2] > 0.99
    assert np.allclose(proxy_probs(Pool(["p"], np.zeros((1, 3)), _unit(np.eye(1, 3)), np.zeros((0, 3))), 3), 1 / 3)


def test_mix_asks_where_the_student_and_the_proxy_disagree() -> None:
    # equally sure of both; the proxy (the teacher's answers nearby) says the student is wrong about q
    logits = np.log([[0.8, 0.1, 0.1], [0.8, 0.1, 0.1]])
    pool = _asked_near(Pool(["p", "q"], logits, _unit(np.eye(2, 3)), np.zeros((0, 3))), [0, 1])
    assert select(pool, 1, "mix", labels=["x", "y", "z"]) == ["q"]


def test_mix_weighs_the_label_the_teacher_would_give_not_the_students() -> None:
    # the student predicts x for both; by the proxy, p is a y and q a z; z holds agreement back on the
    # held-out set (where labels are the teacher's): q, though the student's own label is the same
    logits = np.log([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1]])
    pool = _asked_near(Pool(["p", "q"], logits, _unit(np.eye(2, 3)), np.zeros((0, 3))), [1, 2])
    per_label = {"x": 1.0, "y": 1.0, "z": 0.3}
    assert select(pool, 1, "mix", labels=["x", "y", "z"], per_label=per_label) == ["q"]


def test_selection_sees_the_per_label_agreement_of_a_failing_round() -> None:
    report = compare("student", ["x", "x", "y", "y"], ["x", "y", "y", "y"], threshold=0.99)
    assert not report  # it does not hold, and its per-label agreement must still reach selection
    assert per_label_agreement(report) == {"x": 0.5, "y": 1.0}


def test_random_is_seeded() -> None:
    pool = _two_clusters()
    first = select(pool, 5, "random", labels=["x", "y", "z"], seed=3)
    assert (
        first
        == select(pool, 5, "random", labels=["x", "y", "z"], seed=3)
        != select(pool, 5, "random", labels=["x", "y", "z"], seed=4)
    )


# -- the loop, through the CLI ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def reached(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    folder = tmp_path_factory.mktemp("auto-pass")
    task = _slice(folder, threshold=0.95)
    workdir = folder / "run"
    return task, workdir, tsd("auto", task, "--budget", "400", "--workdir", workdir)


def test_auto_reaches_the_threshold_and_packages(reached: tuple) -> None:
    _, workdir, ran = reached
    assert ran.code == 0, ran.out + ran.err
    assert (workdir / "dist" / "bank-slice-cpu-x86.tsdpkg").is_file()
    rounds = _lines(workdir / "auto.jsonl")
    assert rounds[-1]["passed"] and not any(r["passed"] for r in rounds[:-1])
    assert rounds[-1]["calls"] <= 400 and rounds[-1]["calls"] == len(_stored(workdir))
    assert [r["round"] for r in rounds] == list(range(len(rounds)))
    assert "holds" in ran.out and "package:" in ran.out


def test_held_out_inputs_are_never_selected(reached: tuple) -> None:
    task, workdir, _ = reached
    split = split_inputs(load_task(task))
    batches = _lines(workdir / "auto" / "batches.jsonl")
    chosen = [k for b in batches for k in b["keys"]]
    assert chosen and not set(chosen) & split.held_keys
    assert set(chosen) <= split.pool_keys
    assert len(chosen) == len(set(chosen))  # nothing chosen twice


def test_each_round_trains_at_least_min_steps_and_does_not_keep_its_warm_start(reached: tuple) -> None:
    _, workdir, _ = reached
    rounds = _lines(workdir / "auto.jsonl")
    assert len(rounds) >= 2, "the slice passed in round 0: nothing warm-started to look at"
    # auto.epochs is 2 and all of them run; 12 steps at least need more epochs when the batches are few
    # (16 a batch: the slice's training.batch_size); round 0's ~40 answers are 3 batches, so 4 epochs
    for r in rounds:
        assert r["epochs"] == max(2, -(-12 // -(-r["train_pairs"] // 16))), r
    assert rounds[0]["epochs"] > 2
    details = json.loads((workdir / "auto" / f"round-{rounds[-1]['round']}" / "report.json").read_text())["details"]
    # the warm start (the last round's student) is neither measured nor kept: a round's figure is its own
    assert [h["epoch"] for h in details["history"]] == list(range(1, details["epochs_run"] + 1))
    assert details["best_epoch"] >= 1


def test_a_budget_under_the_held_out_set_is_bad_input(tmp_path: Path) -> None:
    task = _slice(tmp_path, threshold=0.8)
    held = len(split_inputs(load_task(task)).held)
    ran = tsd("auto", task, "--budget", str(held), "--workdir", tmp_path / "run")
    assert ran.code == 2 and "Traceback" not in ran.err
    assert f"give --budget {held + 20} or more" in ran.err
    assert not (tmp_path / "run" / "auto.jsonl").exists()


def test_budget_spent_exits_1_and_a_killed_loop_resumes(tmp_path: Path) -> None:
    task = _slice(tmp_path, threshold=0.99)
    workdir = tmp_path / "run"
    held = len(split_inputs(load_task(task)).held)
    budget = held + 40 + 40  # round 0 (held-out + 40 random) and one round of 40
    cmd = [sys.executable, "-m", "tsd_edge", "auto", str(task), "--budget", str(budget), "--workdir", str(workdir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    batches = workdir / "auto" / "batches.jsonl"
    deadline = time.monotonic() + 600
    try:
        while not (batches.is_file() and len(_lines(batches)) >= 2):  # round 1's batch is chosen: kill it there
            assert proc.poll() is None, "auto ended before round 1"
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    first = _lines(workdir / "auto.jsonl")
    assert [r["round"] for r in first] == [0] and first[0]["calls"] == held + 40
    chosen = _lines(batches)

    ran = tsd("auto", task, "--budget", str(budget), "--workdir", workdir)
    assert ran.code == 1, ran.out + ran.err
    assert "budget spent" in ran.out and "resumed: 1 round(s)" in ran.out
    assert any(label in ran.out for label in LABELS)  # the labels that hold agreement back
    rounds = _lines(workdir / "auto.jsonl")
    assert [r["round"] for r in rounds] == [0, 1]
    assert rounds[1]["calls"] == budget and rounds[1]["asked"] == 40  # calls go on from round 0's
    assert _lines(batches) == chosen  # round 1 asked what was chosen before the kill, nothing re-chosen
    stored = _stored(workdir)
    assert len(stored) == len(set(stored)) == budget
    asked = {i.key for i in split_inputs(load_task(task)).held} | {k for b in chosen for k in b["keys"]}
    assert set(stored) == asked  # exactly one answer per asked input
