"""Agreement with the teacher: Wilson interval, per-label figures, confusions, fidelity, the JSON report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from tsd_edge.agreement import SCHEMA, AgreementReport, compare, wilson

# --- wilson -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (81, 100, 0.7222, 0.8749),
        (50, 100, 0.4038, 0.5962),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (1, 1, 0.2065, 1.0),
        (950, 1000, 0.9347, 0.9619),
    ],
)
def test_wilson_known_values(k: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)


def test_wilson_with_no_trials_is_the_whole_interval() -> None:
    assert wilson(0, 0) == (0.0, 1.0)


def test_wilson_contains_the_estimate_and_narrows_with_n() -> None:
    widths = []
    for n in (10, 100, 1000, 10_000):
        k = int(0.9 * n)
        lo, hi = wilson(k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0
        widths.append(hi - lo)
    assert widths == sorted(widths, reverse=True)


def test_wilson_z_widens_the_interval() -> None:
    lo95, hi95 = wilson(40, 50)
    lo99, hi99 = wilson(40, 50, z=2.575829)
    assert lo99 < lo95 and hi99 > hi95


def test_wilson_matches_the_formula() -> None:
    k, n, z = 37, 53, 1.959964
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert wilson(k, n) == pytest.approx((centre - half, centre + half), rel=1e-12)


# --- compare ----------------------------------------------------------------------------------------------

TEACHER = ["a", "a", "a", "a", "b", "b", "b", "c", "c", "c"]
PREDICTED = ["a", "a", "b", "b", "b", "a", "b", "c", "b", "a"]
TEXTS = [f"text {i}" for i in range(10)]


def test_compare_agreement_and_interval() -> None:
    report = compare("student", TEACHER, PREDICTED, threshold=0.5)
    assert report.stage == "student"
    assert report.n == 10
    assert report.agreement == pytest.approx(0.5)
    assert report.ci95 == wilson(5, 10)
    assert report.threshold == 0.5
    assert report.schema == SCHEMA
    assert report.fidelity is None
    assert report.gold_accuracy is None


def test_compare_per_label() -> None:
    report = compare("student", TEACHER, PREDICTED)
    assert report.per_label == {
        "a": {"n": 4, "agreement": pytest.approx(0.5)},
        "b": {"n": 3, "agreement": pytest.approx(2 / 3)},
        "c": {"n": 3, "agreement": pytest.approx(1 / 3)},
    }
    assert list(report.per_label) == ["a", "b", "c"]


def test_compare_per_label_only_counts_teacher_labels() -> None:
    report = compare("s", ["a", "a"], ["z", "a"])
    assert set(report.per_label) == {"a"}


def test_confusions_sorted_by_count_with_first_example() -> None:
    report = compare("student", TEACHER, PREDICTED, texts=TEXTS)
    # a→b twice (texts 2, 3), then b→a, c→b, c→a once each
    assert report.confusions[0] == {"teacher": "a", "predicted": "b", "count": 2, "example": "text 2"}
    counts = [c["count"] for c in report.confusions]
    assert counts == sorted(counts, reverse=True)
    pairs = {(c["teacher"], c["predicted"]) for c in report.confusions}
    assert pairs == {("a", "b"), ("b", "a"), ("c", "b"), ("c", "a")}
    by_pair = {(c["teacher"], c["predicted"]): c["example"] for c in report.confusions}
    assert by_pair[("c", "a")] == "text 9"
    assert sum(counts) == 5


def test_confusions_without_texts_have_no_example() -> None:
    report = compare("student", TEACHER, PREDICTED)
    assert all(c["example"] is None for c in report.confusions)


def test_top_confusions_limits_the_list() -> None:
    report = compare("student", TEACHER, PREDICTED, top_confusions=2)
    assert len(report.confusions) == 2
    assert report.confusions[0]["count"] == 2


def test_perfect_agreement_has_no_confusions() -> None:
    report = compare("student", ["a", "b"], ["a", "b"], threshold=1.0)
    assert report.agreement == 1.0 and report.confusions == [] and bool(report)


def test_compare_with_no_pairs() -> None:
    report = compare("student", [], [])
    assert report.n == 0
    assert report.agreement == 0.0
    assert report.ci95 == (0.0, 1.0)
    assert report.per_label == {} and report.confusions == []


def test_compare_refuses_lists_of_different_length() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        compare("student", ["a", "b"], ["a"])


def test_fidelity() -> None:
    reference = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.5], [0.0, 0.0, 1.0]], np.float32)
    compiled = reference.copy()
    compiled[0] += [0.0, 0.25, 0.0]  # still class 0
    compiled[2] = [0.4, 0.0, 0.6]  # class 2 now: a prediction changed, |Δ| 0.6 at most
    report = compare(
        "cpu-x86",
        ["a", "b", "a", "c"],
        ["a", "b", "c", "c"],
        logits=compiled,
        reference_logits=reference,
        reference="onnx",
    )
    assert report.fidelity is not None
    assert report.fidelity["reference"] == "onnx"
    assert report.fidelity["prediction_match"] == pytest.approx(0.75)
    assert report.fidelity["max_abs_dlogit"] == pytest.approx(0.6, abs=1e-6)
    assert report.fidelity["mean_abs_dlogit"] == pytest.approx((0.25 + 0.6 + 0.0 + 0.1) / 12, abs=1e-6)


def test_fidelity_needs_both_logits() -> None:
    logits = np.zeros((2, 3))
    assert compare("s", ["a", "b"], ["a", "b"], logits=logits).fidelity is None
    assert compare("s", ["a", "b"], ["a", "b"], reference_logits=logits).fidelity is None


def test_identical_logits_have_full_fidelity() -> None:
    logits = np.random.default_rng(1).standard_normal((50, 4)).astype(np.float32)
    report = compare("s", ["a"] * 50, ["a"] * 50, logits=logits, reference_logits=logits.copy())
    assert report.fidelity == {
        "reference": "student",
        "prediction_match": 1.0,
        "max_abs_dlogit": 0.0,
        "mean_abs_dlogit": 0.0,
    }


def test_gold_accuracy_ignores_missing_gold() -> None:
    report = compare("s", ["a", "a", "b", "b"], ["a", "b", "b", "a"], gold=["a", None, "a", "a"])
    # scored: (a, a) right, (a, b) wrong, (a, a) right
    assert report.gold_accuracy == pytest.approx(2 / 3)


def test_gold_accuracy_is_none_when_no_gold() -> None:
    assert compare("s", ["a", "b"], ["a", "b"], gold=[None, None]).gold_accuracy is None


# --- the report -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("agreement", "threshold", "passed"),
    [(0.9, 0.85, True), (0.85, 0.85, True), (0.84, 0.85, False), (0.1, None, True)],
)
def test_report_truthiness_is_whether_it_holds(agreement: float, threshold: float | None, passed: bool) -> None:
    report = AgreementReport(stage="s", n=100, agreement=agreement, ci95=(0.0, 1.0), threshold=threshold)
    assert report.passed is passed
    assert bool(report) is passed


def test_compare_threshold_decides_bool() -> None:
    assert bool(compare("s", TEACHER, PREDICTED, threshold=0.5))
    assert not compare("s", TEACHER, PREDICTED, threshold=0.51)


def test_report_save_load_round_trip(tmp_path: Path) -> None:
    logits = np.random.default_rng(2).standard_normal((10, 3))
    report = compare(
        "cpu-x86",
        TEACHER,
        PREDICTED,
        threshold=0.6,
        texts=TEXTS,
        gold=[*TEACHER[:9], None],
        logits=logits,
        reference_logits=logits + 0.01,
    )
    report.details["target"] = {"name": "cpu-x86", "latency_ms": 1.25}
    path = tmp_path / "reports" / "cpu-x86.json"
    report.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["schema"] == SCHEMA
    assert data["passed"] is False
    assert data["ci95"] == list(report.ci95)
    loaded = AgreementReport.load(path)
    assert loaded == report
    assert isinstance(loaded.ci95, tuple)
    assert bool(loaded) is False


def test_saved_report_is_plain_json(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    compare("s", ["a", "b"], ["a", "a"], threshold=0.4).save(path)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    data = json.loads(text)
    assert data["passed"] is True
    assert data["agreement"] == 0.5
    assert data["confusions"] == [{"teacher": "b", "predicted": "a", "count": 1, "example": None}]
