"""Agreement for kind: embed: cosine and recall@k against the teacher, their intervals, the report's JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from tsd_edge.agreement import AgreementReport
from tsd_edge.embedding_agreement import COSINE_KEYS, HISTOGRAM_EDGES, compare_embeddings, describe, mean_interval, t975
from tsd_edge.errors import InputError


def unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, m: int, d: int = 32, clusters: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-like embeddings: queries and corpus drawn around shared topic centres (neighbours mean something)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    pick = rng.integers(0, clusters, n + m)
    rows = unit(centres[pick] + 0.6 * rng.standard_normal((n + m, d)))
    return rows[:n], rows[n:]


def noisy(a: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    return unit(a + sigma * np.random.default_rng(seed).standard_normal(a.shape))


def run(sq: np.ndarray, tq: np.ndarray, sc: np.ndarray, tc: np.ndarray, **kw: object) -> AgreementReport:
    return compare_embeddings("student", sq, tq, sc, tc, **kw)  # type: ignore[arg-type]


def fig(report: AgreementReport, key: str) -> float:
    return report.details["embedding"][key]


TQ, TC = clustered(300, 600)


def test_identical_embeddings_agree_completely() -> None:
    r = run(TQ, TQ, TC, TC, threshold=0.99, rule="strict")
    e = r.details["embedding"]
    assert e["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    for key in ("recall_symmetric", "recall_asymmetric", "top1_symmetric", "top1_asymmetric"):
        assert e[key] == 1.0, key
    assert r.agreement == 1.0 and r.ci95 == (1.0, 1.0) and r.metric == "recall_asymmetric"
    assert e["under_floor"] == 0.0 and e["excluded_self"] == 0 and e["null_rows"] == 0
    assert (e["k"], e["corpus"], e["dim"], e["teacher_dim"]) == (10, 600, 32, 32)
    assert r.passed and r.per_label == {} and r.n == 300


def test_a_rotated_space_keeps_its_own_neighbours_but_cannot_query_the_teachers_index() -> None:
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((32, 32)))
    r = run(TQ @ q, TQ, TC @ q, TC)
    assert fig(r, "recall_symmetric") == pytest.approx(1.0)
    assert fig(r, "top1_symmetric") == 1.0
    # a random direction finds the teacher's 10 of 600 by chance only (expected 10/600)
    assert fig(r, "recall_asymmetric") < 0.1
    assert abs(fig(r, "mean_cosine")) < 0.15


def test_more_noise_means_less_agreement_on_every_figure() -> None:
    reports = [run(noisy(TQ, s, 1), TQ, noisy(TC, s, 2), TC) for s in (0.0, 0.05, 0.15, 0.4, 1.0)]
    for key in ("recall_symmetric", "recall_asymmetric", "mean_cosine"):
        values = [fig(r, key) for r in reports]
        assert values == sorted(values, reverse=True), (key, values)
        assert values[0] > values[-1] + 0.3, (key, values)
    under = [fig(r, "under_floor") for r in reports]
    assert under == sorted(under) and under[0] == 0.0 and under[-1] > 0.5


def test_a_hand_built_example_has_the_neighbours_worked_out_by_hand() -> None:
    # corpus: six directions on a circle, 60° apart (corpus row j at angle 60·j°)
    angles = np.deg2rad(np.arange(6) * 60.0)
    corpus = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)

    def at(deg: float) -> np.ndarray:
        return np.array([[math.cos(math.radians(deg)), math.sin(math.radians(deg))]], np.float32)

    teacher = np.concatenate([at(10), at(200)])  # nearest two: rows {0, 1} and {3, 4}
    student = np.concatenate([at(-20), at(200)])  # in the teacher's corpus: {0, 5} (one of two), {3, 4} (both)
    # the student's corpus turned by 180° (row j at 60·j + 180°): query 0 (-20°) is nearest rows 3 (0°) and
    # 2 (-60°), query 1 (200°) rows 0 (180°) and 1 (240°): none of the teacher's
    r = run(student, teacher, -corpus, corpus, k=2, texts=["first", "second"])
    e = r.details["embedding"]
    assert e["recall_asymmetric"] == pytest.approx((1 / 2 + 2 / 2) / 2)
    assert e["top1_asymmetric"] == 1.0  # row 0 is nearest to 10° and to -20°, row 3 to 200° for both
    assert e["recall_symmetric"] == 0.0 and e["top1_symmetric"] == 0.0
    assert e["mean_cosine"] == pytest.approx((math.cos(math.radians(30)) + 1) / 2, abs=1e-6)
    assert r.confusions[0]["text"] == "first" and r.confusions[0]["cosine"] == pytest.approx(0.866025, abs=1e-5)
    assert r.confusions[0]["recall_asymmetric"] == 0.5 and r.confusions[0]["recall_symmetric"] == 0.0


def test_perturbed_queries_lower_cosine_and_recall_and_are_named_worst() -> None:
    bad = [3, 77, 150, 222, 299]
    student = TQ.copy()
    student[bad] = unit(np.random.default_rng(5).standard_normal((len(bad), 32)))
    texts = [f"query {i}" for i in range(len(TQ))]
    r = run(student, TQ, TC, TC, texts=texts)
    assert sorted(c["index"] for c in r.confusions[:5]) == bad
    assert {c["text"] for c in r.confusions[:5]} == {f"query {i}" for i in bad}
    assert 1 - len(bad) / 300 - 0.01 < fig(r, "recall_asymmetric") < 1.0
    assert fig(r, "recall_symmetric") == pytest.approx(fig(r, "recall_asymmetric"))  # the corpus is untouched
    assert fig(r, "mean_cosine") < 1.0 and fig(r, "under_floor") == pytest.approx(len(bad) / 300)


def test_a_perturbed_student_corpus_lowers_symmetric_recall_only() -> None:
    corpus = TC.copy()
    corpus[::3] = noisy(TC[::3], 1.0, 7)  # a third of the student's corpus rows moved
    r = run(TQ, TQ, corpus, TC)
    assert fig(r, "recall_symmetric") < 0.9
    assert fig(r, "recall_asymmetric") == 1.0 and fig(r, "mean_cosine") == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("metric", ["recall_asymmetric", "recall_symmetric", "cosine"])
def test_the_threshold_is_held_against_the_value_or_the_lower_bound(metric: str) -> None:
    student, corpus = noisy(TQ, 0.3, 3), noisy(TC, 0.3, 4)
    value = run(student, TQ, corpus, TC, metric=metric)
    lo, hi = value.ci95
    assert lo < value.agreement < hi
    between = (lo + value.agreement) / 2
    point = run(student, TQ, corpus, TC, metric=metric, threshold=between, rule="point")
    strict = run(student, TQ, corpus, TC, metric=metric, threshold=between, rule="strict")
    assert point.passed and not strict.passed
    assert not run(student, TQ, corpus, TC, metric=metric, threshold=min(1.0, hi + 0.01)).passed
    key = "mean_cosine" if metric == "cosine" else metric
    assert value.agreement == fig(value, key) and list(value.ci95) == fig(value, f"{key}_ci95")


def test_the_interval_is_the_t_interval_of_the_per_query_values() -> None:
    values = np.random.default_rng(0).uniform(0.2, 1.0, 40)
    lo, hi = mean_interval(values, 0.0, 1.0)
    half = t975(39) * values.std(ddof=1) / math.sqrt(40)
    assert (lo, hi) == pytest.approx((values.mean() - half, values.mean() + half))
    assert mean_interval(np.array([0.99, 1.0, 1.0]), 0.0, 1.0)[1] == 1.0  # clipped to the range
    assert mean_interval(np.array([0.5]), 0.0, 1.0) == (0.0, 1.0)  # one value: no spread measured


@pytest.mark.parametrize(("df", "t"), [(3, 3.182446), (10, 2.228139), (30, 2.042272), (1000, 1.962339)])
def test_t975_matches_the_tables(df: int, t: float) -> None:
    assert t975(df) == pytest.approx(t, rel=1.5e-3)


def test_the_block_size_does_not_change_the_result() -> None:
    student, corpus = noisy(TQ, 0.2, 8), noisy(TC, 0.2, 9)
    whole = run(student, TQ, corpus, TC, reference=np.concatenate([TQ, TC]), max_block=10**9)
    for block in (600, 600 * 7, 600 * 299 + 1):  # one query per block, seven, a ragged last block
        parts = run(student, TQ, corpus, TC, reference=np.concatenate([TQ, TC]), max_block=block)
        assert parts.to_dict() == whole.to_dict()


def test_the_report_round_trips_through_json(tmp_path: Path) -> None:
    texts = [f"q{i}" for i in range(300)]
    student = noisy(TQ, 0.2, 10)
    student[4] = np.nan
    r = run(student, TQ, TC, TC, texts=texts, reference=np.concatenate([noisy(TQ, 0.2, 11), TC]), threshold=0.5)
    json.dumps(r.to_dict(), allow_nan=False)  # strict JSON: no NaN or numpy scalars anywhere
    r.save(tmp_path / "r.json")
    back = AgreementReport.load(tmp_path / "r.json")
    assert back == r and back.to_dict() == r.to_dict()
    hist = r.details["embedding"]["cosine_histogram"]
    assert hist["edges"] == HISTOGRAM_EDGES and sum(hist["counts"]) == 300
    q = r.details["embedding"]["cosine_quantiles"]
    assert list(q) == ["p1", "p5", "p25", "p50", "p75"] and list(q.values()) == sorted(q.values())


def test_a_student_row_without_direction_counts_as_finding_nothing() -> None:
    student = TQ.copy()
    student[0] = np.nan
    student[1] = 0.0
    r = run(student, TQ, TC, TC, texts=[str(i) for i in range(300)])
    assert fig(r, "null_rows") == 2
    assert fig(r, "recall_asymmetric") == pytest.approx(298 / 300)
    assert {c["index"] for c in r.confusions[:2]} == {0, 1} and r.confusions[0]["cosine"] == 0.0


def test_a_query_found_in_the_corpus_is_left_out_of_its_own_neighbours() -> None:
    corpus = TC.copy()
    corpus[[10, 20]] = TQ[[0, 1]]  # queries 0 and 1 are also corpus rows 10 and 20 for the teacher
    student_corpus = corpus.copy()
    student_corpus[[10, 20]] = -TQ[[0, 1]]  # ...but far from themselves for the student
    student = TQ.copy()
    student[[0, 1]] = noisy(TQ[[0, 1]], 1e-3, 19)  # a hair off, so they head the worst queries
    r = run(student, TQ, student_corpus, corpus)
    assert fig(r, "excluded_self") == 2
    # had rows 10 and 20 counted, the teacher's nearest neighbour of queries 0 and 1 would be themselves, which
    # the student never finds
    assert [c["index"] for c in r.confusions[:2]] == [0, 1]
    assert all(c["recall_symmetric"] == 1.0 for c in r.confusions[:2])
    assert fig(r, "recall_asymmetric") == 1.0  # the teacher's own corpus: nothing to miss


def test_fidelity_to_the_fp32_student() -> None:
    student, corpus = noisy(TQ, 0.2, 14), noisy(TC, 0.2, 15)
    same = run(student, TQ, corpus, TC, reference=np.concatenate([student, corpus])).fidelity
    assert same is not None
    assert same["prediction_match"] == 1.0 and same["recall_to_reference"] == 1.0
    assert same["max_abs_diff"] == 0.0 == same["max_abs_dlogit"]
    assert same["mean_cosine_to_reference"] == pytest.approx(1.0) and same["nonfinite_outputs"] == 0
    # an "INT8" artifact: the fp32 student's outputs rounded to a coarse grid
    coarse_q, coarse_c = (np.round(a * 8) / 8 for a in (student, corpus))
    moved = run(coarse_q, TQ, coarse_c, TC, reference=np.concatenate([student, corpus])).fidelity
    assert moved is not None
    assert 0.0 < moved["max_abs_diff"] <= 1 / 16 + 1e-6
    assert moved["prediction_match"] < 1.0 and moved["recall_to_reference"] < 1.0
    assert 0.9 < moved["mean_cosine_to_reference"] < 1.0


def test_a_narrower_student_is_measured_on_its_own_neighbours_only() -> None:
    proj = np.linalg.qr(np.random.default_rng(16).standard_normal((32, 32)))[0][:, :24]
    narrow_q, narrow_c = unit(TQ @ proj), unit(TC @ proj)
    r = run(narrow_q, TQ, narrow_c, TC, metric="recall_symmetric", threshold=0.3)
    e = r.details["embedding"]
    assert 0.3 < e["recall_symmetric"] < 1.0 and r.agreement == e["recall_symmetric"]
    assert all(e[key] is None for key in COSINE_KEYS) and e["recall_asymmetric"] is None and e["dim"] == 24
    assert r.confusions[0]["cosine"] is None
    json.dumps(r.to_dict(), allow_nan=False)
    for metric in ("recall_asymmetric", "cosine"):
        with pytest.raises(InputError, match=r"only supports agreement\.metric: recall_symmetric"):
            run(narrow_q, TQ, narrow_c, TC, metric=metric)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"student": TQ[:0], "teacher": TQ[:0]}, "no held-out queries to measure"),
        ({"teacher": TQ[:-1]}, "the student embedded 300 held-out queries and the teacher 299"),
        ({"corpus_teacher": TC[:-1]}, "the student embedded 600 corpus rows and the teacher 599"),
        ({"k": 600}, "agreement.k is 600 but the corpus has 600 rows"),
        ({"k": 0}, "agreement.k is 0"),
        ({"metric": "label"}, "unknown embed agreement metric 'label'"),
        ({"rule": "lenient"}, "unknown agreement rule"),
        ({"texts": ["one"]}, "1 texts for 300 held-out queries"),
        ({"reference": TQ}, "expected 900×32"),
        ({"student": TQ[:, :, None]}, "must be a 2-D numeric array"),
        ({"corpus_student": TC[:, :16]}, "embed both with one model"),
    ],
)
def test_bad_input_is_one_line_naming_the_fix(change: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"student": TQ, "teacher": TQ, "corpus_student": TC, "corpus_teacher": TC, **change}
    with pytest.raises(InputError, match=message) as err:
        compare_embeddings("student", **args)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_a_teacher_row_without_direction_is_bad_data() -> None:
    teacher = TC.copy()
    teacher[5] = np.inf
    with pytest.raises(InputError, match="teacher's embeddings of the corpus have 1 zero or non-finite rows"):
        run(TQ, TQ, TC, teacher)


def test_describe_puts_the_gated_metric_first() -> None:
    r = run(noisy(TQ, 0.2, 17), TQ, noisy(TC, 0.2, 18), TC, floor=0.9)
    e = r.details["embedding"]
    lo, hi = r.ci95
    assert describe(r) == (
        f"recall@10 asym {e['recall_asymmetric']:.2f} (95% CI {lo:.2f}–{hi:.2f}), sym {e['recall_symmetric']:.2f}, "
        f"mean cosine {e['mean_cosine']:.2f}, {100 * e['under_floor']:.1f}% under 0.9, n=300 against 600"
    )
    c = run(TQ, TQ, TC, TC, metric="cosine")
    assert describe(c).startswith("mean cosine 1.00 (95% CI 1.00–1.00), sym 1.00, asym 1.00, 0.0% under 0.8")
