"""Relevance: kNN scores, calibration from the reference alone, re-scoring when the rule changes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from tsd_edge.data import heldout, input_key
from tsd_edge.relevance import Relevance, calibrate, knn_scores
from tsd_edge.store import Pair, PairStore
from tsd_edge.task import load_task

ENCODER = "all-MiniLM-L6-v2"
FP = "teacher-0123456789"


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def test_knn_score_is_the_mean_of_the_k_nearest() -> None:
    ref = unit(np.eye(4, dtype=np.float32))
    x = unit(np.array([[1, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float32))
    np.testing.assert_allclose(knn_scores(x, ref, 1), [2**-0.5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(knn_scores(x, ref, 2), [2**-0.5, 0.5], rtol=1e-6)
    # an input that is itself a reference row is scored against the others only
    np.testing.assert_allclose(knn_scores(ref[:1], ref, 1, [0]), [0.0], atol=1e-7)


def test_calibration_keeps_the_asked_share_of_the_reference() -> None:
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(8, 32)))
    ref = unit(np.repeat(centres, 50, axis=0) + 0.3 * rng.normal(size=(400, 32)))
    for keep in (0.9, 0.99):
        threshold = calibrate(ref, 5, keep)
        loo = knn_scores(ref, ref, 5, list(range(len(ref))))
        assert abs((loo >= threshold).mean() - keep) < 0.01


def _setup(tmp_path: Path, relevance: dict) -> tuple[Path, PairStore, dict[str, np.ndarray]]:
    """A task whose reference and inputs have made-up embeddings already in the store (no encoder is loaded)."""
    rng = np.random.default_rng(1)
    centres = unit(rng.normal(size=(3, 64)))
    ref_texts = [f"on-task example {i}" for i in range(60)]
    on = [f"on-task input {i}" for i in range(40)]
    off = [f"off-task input {i}" for i in range(40)]
    vec = {t: unit(centres[i % 3] + 0.05 * rng.normal(size=64)) for i, t in enumerate(ref_texts + on)}
    vec |= {t: unit(rng.normal(size=64)) for t in off}
    with (tmp_path / "ref.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text"])
        w.writerows([t] for t in ref_texts)
    (tmp_path / "in.txt").write_text("\n".join(on + off) + "\n", encoding="utf-8")
    task = {
        "name": "rel",
        "labels": ["a", "b", "c"],
        "inputs": [{"path": "in.txt"}],
        "teacher": {"kind": "python", "function": "m:f"},
        "relevance": {"reference": {"path": "ref.csv"}, **relevance},
    }
    (tmp_path / "task.yaml").write_text(json.dumps(task), encoding="utf-8")
    store = PairStore(tmp_path / "pairs.sqlite")
    store.register_teacher(FP, ["a", "b", "c"], {})
    store.add_vectors(ENCODER, {input_key(t): vec[t] for t in ref_texts})
    store.add(FP, [_pair(t, vec[t]) for t in on + off])
    return tmp_path / "task.yaml", store, vec


def _pair(text: str, embedding: np.ndarray) -> Pair:
    key = input_key(text)
    split = "heldout" if heldout(key, 0.2) else "train"
    return Pair(key, text, "in.txt", None, split, "ok", "a", None, embedding, None, True)


def relevant(store: PairStore) -> dict[str, bool]:
    return {p.input: p.relevant for p in store.pairs(FP)}


def test_knn_keeps_on_task_inputs_and_drops_off_task_ones(tmp_path: Path) -> None:
    task_path, store, _ = _setup(tmp_path, {})
    with store:
        rule = Relevance(load_task(task_path), store, object()).refresh(FP)
        assert rule.method == "knn" and rule.reference == 60 and 0 < rule.threshold < 1
        marks = relevant(store)
        assert sum(marks[f"on-task input {i}"] for i in range(40)) >= 38
        assert sum(marks[f"off-task input {i}"] for i in range(40)) <= 2
        # the rule and its calibrated threshold are stored: later stages mark with it
        assert store.get_meta(f"relevance/{FP}")["threshold"] == rule.threshold
        store.db.execute("UPDATE pairs SET relevant=0")
        store.mark_relevance(FP, None)
        assert relevant(store) == marks


def test_auto_judges_unasked_inputs_as_collect_marks_stored_ones(tmp_path: Path) -> None:
    """One Relevance: `keeps` (what auto asks) gives the marks `refresh` (collect) gives, same threshold."""
    task_path, store, vec = _setup(tmp_path, {})
    with store:
        rule = Relevance(load_task(task_path), store, object())
        rule.refresh(FP)
        marks = relevant(store)
        texts = sorted(marks)
        kept = rule.keeps(FP, [input_key(t) for t in texts], {input_key(t): vec[t] for t in texts})
        assert dict(zip(texts, kept, strict=True)) == marks
        assert 0 < sum(kept) < len(kept)


def test_a_changed_rule_rescores_every_pair_and_an_unchanged_one_nothing(tmp_path: Path) -> None:
    task_path, store, _ = _setup(tmp_path, {})
    with store:
        first = Relevance(load_task(task_path), store, object()).refresh(FP)
        store.db.execute("UPDATE pairs SET relevance=1.0 WHERE input='off-task input 0'")
        same = Relevance(load_task(task_path), store, object()).refresh(FP)
        assert same.threshold == first.threshold
        assert relevant(store)["off-task input 0"]  # not re-scored: the rule did not change
        task = json.loads(task_path.read_text())
        task["relevance"]["k"] = 3
        task_path.write_text(json.dumps(task))
        changed = Relevance(load_task(task_path), store, object()).refresh(FP)
        assert changed.key != first.key
        assert not relevant(store)["off-task input 0"]  # re-scored
        task["relevance"]["threshold"] = -1.0  # a fixed threshold instead of the calibrated one
        task_path.write_text(json.dumps(task))
        assert Relevance(load_task(task_path), store, object()).refresh(FP).threshold == -1.0
        assert all(relevant(store).values())


def test_method_teacher_uses_only_the_teachers_own_scores(tmp_path: Path) -> None:
    task_path, store, _ = _setup(tmp_path, {"method": "teacher", "threshold": 0.5})
    with store:
        store.db.execute("UPDATE pairs SET relevance=0.2 WHERE input LIKE 'off-task%'")
        rule = Relevance(load_task(task_path), store, object()).refresh(FP)
        assert rule.method == "teacher"
        marks = relevant(store)
        assert not any(v for k, v in marks.items() if k.startswith("off")) and all(
            v for k, v in marks.items() if k.startswith("on")
        )


@pytest.mark.slow
def test_banking77_figures() -> None:
    """The measurement behind the default: keep ≥ 99% of Banking77 test, drop ≥ 95% of held-out hotel queries."""
    from tsd_edge.encoder import embed

    data = Path(__file__).resolve().parents[1] / "samples" / "banking77" / "data"

    def texts(name: str) -> list[str]:
        with (data / name).open(encoding="utf-8", newline="") as fh:
            return [r["text"].strip() for r in csv.DictReader(fh) if r["text"].strip()]

    hotels = [t.strip() for t in (data / "hotels.txt").read_text(encoding="utf-8").splitlines() if t.strip()]
    held_out = [t for t in hotels if int(input_key(t)[:8], 16) % 2 == 1]  # the half not used to choose k and keep
    ref = embed(ENCODER, texts("train.csv"), 64)
    threshold = calibrate(ref, 5, 0.99)
    kept = (knn_scores(embed(ENCODER, texts("test.csv"), 64), ref, 5) >= threshold).mean()
    dropped = (knn_scores(embed(ENCODER, held_out, 64), ref, 5) < threshold).mean()
    assert kept >= 0.99 and dropped >= 0.95, (threshold, kept, dropped)


def test_a_teacher_that_embeds_is_known_by_its_capability_not_its_kind(tmp_path: Path) -> None:
    """Relevance (and distill) use the label vectors of any teacher that can embed, whatever its kind."""
    from tsd_edge.teachers import can_embed

    class HttpEmbedder:  # e.g. an embedding endpoint: not kind `embedding`, but it embeds
        fingerprint, spec, temperature = "http", {"kind": "python"}, 0.05
        prototypes = np.eye(3, 8, dtype=np.float32)

    task_path, store, _ = _setup(tmp_path, {"method": "max_cosine"})
    with store:
        assert can_embed(HttpEmbedder()) and not can_embed(object())
        rule = Relevance(load_task(task_path), store, HttpEmbedder())
        assert (rule.prototypes() == HttpEmbedder.prototypes).all()
