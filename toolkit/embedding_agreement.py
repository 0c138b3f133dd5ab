"""Agreement with the teacher for `kind: embed`: cosine to the teacher's embedding and top-k neighbour agreement.

Pure numpy and Python 3.8 (the gate runs it on devices). One `AgreementReport` per stage, as for classify:
`agreement` is the task's metric, `details["embedding"]` every figure.

- cosine: per held-out query, the cosine between the student's and the teacher's embedding (rows normalised
  here, whatever the runner gave); mean with a 95% interval, quantiles, a fixed-bin histogram, share under `floor`.
- recall@k against the teacher: the teacher's top-k corpus neighbours of a query (teacher query against teacher
  corpus) versus the student's top-k, `symmetric` (student query against the student-embedded corpus: a device
  with its own index) and `asymmetric` (student query against the teacher's corpus: a device querying an index
  the teacher built); overlap/k per query, averaged. top-1: the nearest neighbour is the teacher's.

The intervals are mean ± t(0.975, n-1)·sd/√n. Every figure is the mean of n bounded per-query values, n ≥ the
rule's min_n (50 by default): the central limit theorem holds well there, and a bootstrap would add a random
seed and seconds for the same interval to the third decimal (benchmarks/embed_metric_check.py compares them).
When all per-query values are equal (identical embeddings) the interval is that value: there is no spread to
measure. top-1 figures are shares of yes/no, with a Wilson interval as classify's agreement.

A corpus row whose teacher embedding is the query's own (cosine ≥ 1 - 1e-5) is the query itself, or a text the
teacher cannot tell from it (case, spacing: the teacher is uncased). It is left out of all three rankings for
that query: finding oneself is no evidence. The pair store never puts a held-out input in the training corpus, so
this is rare; `excluded_self` counts it. The corpus should hold distinct texts (the store's are): duplicate rows
tie, and which of them a top-k takes is arbitrary.

A student row that is zero or not finite (an artifact that overflowed) has no direction: its cosine is 0 and, as
a query, it finds no neighbour; `null_rows` counts them. A teacher row like that is bad data: InputError.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .agreement import AgreementReport, wilson
from .errors import InputError

METRICS = ("recall_asymmetric", "recall_symmetric", "cosine")
QUANTILES = (1, 5, 25, 50, 75)
# fixed for every stage so their histograms can be drawn side by side: one bin under 0, then 0.05 wide
HISTOGRAM_EDGES = [-1.0] + [round(0.05 * i, 2) for i in range(21)]
SAME = 1.0 - 1e-5
WORST = 10
COSINE_KEYS = (
    "mean_cosine",
    "mean_cosine_ci95",
    "cosine_sd",
    "cosine_min",
    "cosine_quantiles",
    "cosine_histogram",
    "under_floor",
)
# similarity entries per block (float32: 16 MiB); a block is rows of queries against the whole corpus
MAX_BLOCK = 1 << 22


def compare_embeddings(
    stage: str,
    student: np.ndarray,
    teacher: np.ndarray,
    corpus_student: np.ndarray,
    corpus_teacher: np.ndarray,
    *,
    metric: str = "recall_asymmetric",
    k: int = 10,
    floor: float = 0.8,
    threshold: float | None = None,
    rule: str = "point",
    reference: np.ndarray | None = None,
    texts: list[str] | None = None,
    max_block: int = MAX_BLOCK,
) -> AgreementReport:
    """Agreement of the student's embeddings with the teacher's on `n` held-out queries and an `m`-row corpus.

    `reference`: the fp32 student's outputs for the same rows, queries then corpus ([n+m, d]), for a compiled
    artifact's fidelity. `texts`: the held-out inputs, to name the worst queries. `max_block` bounds the memory
    of one similarity block (entries); the result does not depend on it.
    """
    if metric not in METRICS:
        raise InputError(f"unknown embed agreement metric {metric!r}: use one of {', '.join(METRICS)}")
    if rule not in ("point", "strict"):
        raise InputError(f"unknown agreement rule {rule!r}: use point or strict")
    q_s, q_t = _matrix(student, "student"), _matrix(teacher, "teacher")
    c_s, c_t = _matrix(corpus_student, "corpus_student"), _matrix(corpus_teacher, "corpus_teacher")
    ref = _matrix(reference, "reference") if reference is not None else None
    _check(q_s, q_t, c_s, c_t, ref, metric=metric, k=k, texts=texts)
    n, m, d, d_t = q_s.shape[0], c_s.shape[0], q_s.shape[1], q_t.shape[1]
    same_space = d == d_t
    nq, nc = _unit(q_s), _unit(c_s)
    null = ~_valid(q_s)
    tq, tc = _unit(q_t), _unit(c_t)

    cosine = np.clip(np.einsum("ij,ij->i", nq, tq, dtype=np.float64), -1.0, 1.0) if same_space else None
    hits = _neighbours(tq, tc, nq, nc, k, max_block, asymmetric=same_space, reference=ref)
    for key in ("recall_symmetric", "recall_asymmetric", "top1_symmetric", "top1_asymmetric"):
        if key in hits:
            hits[key][null] = 0

    figures: dict[str, Any] = {"k": k, "floor": floor, "corpus": m, "dim": d, "teacher_dim": d_t}
    if cosine is not None:
        figures.update(_cosine_figures(cosine, floor))
    else:
        figures.update(dict.fromkeys(COSINE_KEYS))
    for side in ("symmetric", "asymmetric"):
        recall, top1 = hits.get(f"recall_{side}"), hits.get(f"top1_{side}")
        figures[f"recall_{side}"] = float(recall.mean()) if recall is not None else None
        figures[f"recall_{side}_ci95"] = list(mean_interval(recall, 0.0, 1.0)) if recall is not None else None
        figures[f"top1_{side}"] = float(top1.mean()) if top1 is not None else None
        figures[f"top1_{side}_ci95"] = list(wilson(int(top1.sum()), n)) if top1 is not None else None
    figures["excluded_self"] = int(hits["excluded_self"])
    figures["null_rows"] = int(null.sum() + (~_valid(c_s)).sum())

    value_key = "mean_cosine" if metric == "cosine" else metric
    return AgreementReport(
        stage=stage,
        n=n,
        agreement=figures[value_key],
        ci95=tuple(figures[f"{value_key}_ci95"]),
        threshold=threshold,
        rule=rule,
        per_label={},
        confusions=_worst(cosine, hits, texts),
        fidelity=_fidelity(q_s, c_s, ref, hits) if ref is not None else None,
        details={"embedding": figures},
        metric=metric,
    )


def compare_outputs(
    stage: str, outputs: np.ndarray, teacher: np.ndarray, corpus_teacher: np.ndarray, **kw: Any
) -> AgreementReport:
    """`compare_embeddings` on one array of outputs laid out as every stage runs them (the check, the gate): the
    held-out queries' rows first (one per row of `teacher`), then the corpus' rows."""
    n = len(teacher)
    return compare_embeddings(stage, outputs[:n], teacher, outputs[n:], corpus_teacher, **kw)


def describe(report: AgreementReport) -> str:
    """One line for the CLI: the gated metric with its interval first, then the other figures."""
    e = report.details.get("embedding", {})
    k = e.get("k", "?")
    names = {"recall_asymmetric": "asym", "recall_symmetric": "sym", "cosine": "mean cosine"}
    lo, hi = report.ci95
    head = names[report.metric] if report.metric == "cosine" else f"recall@{k} {names[report.metric]}"
    parts = [f"{head} {report.agreement:.2f} (95% CI {lo:.2f}–{hi:.2f})"]
    for key, label in (("recall_symmetric", "sym"), ("recall_asymmetric", "asym")):
        if key != report.metric and e.get(key) is not None:
            parts.append(f"{label} {e[key]:.2f}")
    if report.metric != "cosine" and e.get("mean_cosine") is not None:
        parts.append(f"mean cosine {e['mean_cosine']:.2f}")
    if e.get("under_floor") is not None:
        parts.append(f"{100 * e['under_floor']:.1f}% under {e['floor']:g}")
    parts.append(f"n={report.n} against {e.get('corpus', '?')}")
    return ", ".join(parts)


def mean_interval(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """95% interval of the mean of `values` (bounded by `low`, `high`): mean ± t·sd/√n."""
    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return low, high
    half = t975(n - 1) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return max(low, mean - half), min(high, mean + half)


def t975(df: int) -> float:
    """Student's t 0.975 quantile: the Cornish-Fisher expansion around the normal one (within 0.13% for df ≥ 3,
    0.01% for df ≥ 5). scipy is not on the devices, for one number."""
    z = 1.959964
    terms = (
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    )
    return z + sum(g / df ** (i + 1) for i, g in enumerate(terms))


# -- the pieces ---------------------------------------------------------------------------------------------


def _check(
    q_s: np.ndarray,
    q_t: np.ndarray,
    c_s: np.ndarray,
    c_t: np.ndarray,
    ref: np.ndarray | None,
    *,
    metric: str,
    k: int,
    texts: list[str] | None,
) -> None:
    """One line naming what does not fit, and the fix."""
    n, m, d, d_t = q_s.shape[0], c_s.shape[0], q_s.shape[1], q_t.shape[1]
    if n == 0:
        raise InputError("no held-out queries to measure: the held-out split is empty (raise split.heldout)")
    if q_t.shape[0] != n:
        raise InputError(f"the student embedded {n} held-out queries and the teacher {q_t.shape[0]}: they must match")
    if c_t.shape[0] != m:
        raise InputError(f"the student embedded {m} corpus rows and the teacher {c_t.shape[0]}: they must match")
    if c_s.shape[1] != d or c_t.shape[1] != d_t:
        raise InputError("the corpus is embedded in another dimension than the queries: embed both with one model")
    if not 1 <= k < m:
        raise InputError(f"agreement.k is {k} but the corpus has {m} rows: k must be at least 1 and under the corpus")
    if d != d_t and metric != "recall_symmetric":
        raise InputError(
            f"the student's embeddings have {d} dimensions and the teacher's {d_t}: {metric} compares them "
            f"directly; a narrower output only supports agreement.metric: recall_symmetric (or give the student "
            f"a {d_t}-dimension output)"
        )
    if texts is not None and len(texts) != n:
        raise InputError(f"{len(texts)} texts for {n} held-out queries: pass one text per query")
    if ref is not None and ref.shape != (n + m, d):
        raise InputError(
            f"the reference outputs are {ref.shape[0]}×{ref.shape[1]}, expected {n + m}×{d} (queries then corpus)"
        )
    for a, name in ((q_t, "held-out queries"), (c_t, "corpus")):
        bad = int(np.count_nonzero(~_valid(a)))
        if bad:
            raise InputError(
                f"the teacher's embeddings of the {name} have {bad} zero or non-finite rows: "
                "re-collect them (the pair store rejects such answers)"
            )


def _matrix(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{name} embeddings must be a 2-D numeric array [rows, dim], got shape {arr.shape}")
    return arr.astype(np.float32, copy=False)


def _valid(a: np.ndarray) -> np.ndarray:
    return np.isfinite(a).all(axis=1) & (np.abs(a).max(axis=1, initial=0.0) > 0)


def _unit(a: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 in float32; a zero or non-finite row becomes zero (no direction)."""
    out = np.where(np.isfinite(a), a, 0).astype(np.float32)
    out[~_valid(a)] = 0
    norm = np.sqrt(np.einsum("ij,ij->i", out, out, dtype=np.float64))[:, None]
    out /= np.where(norm > 0, norm, 1).astype(np.float32)
    return out


def _cosine_figures(cosine: np.ndarray, floor: float) -> dict[str, Any]:
    counts, _ = np.histogram(cosine, bins=HISTOGRAM_EDGES)
    return {
        "mean_cosine": float(cosine.mean()),
        "mean_cosine_ci95": list(mean_interval(cosine, -1.0, 1.0)),
        "cosine_sd": float(cosine.std(ddof=1)) if len(cosine) > 1 else 0.0,
        "cosine_min": float(cosine.min()),
        "cosine_quantiles": {f"p{q}": float(np.percentile(cosine, q)) for q in QUANTILES},
        "cosine_histogram": {"edges": HISTOGRAM_EDGES, "counts": [int(c) for c in counts]},
        "under_floor": float(np.mean(cosine < floor)),
    }


def _topk(sims: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's k largest, best first; ties in corpus order."""
    m = sims.shape[1]
    idx = np.argpartition(sims, m - k, axis=1)[:, m - k :]
    vals = np.take_along_axis(sims, idx, axis=1)
    # lexsort: the last key is the primary one, so by similarity (descending), then by index
    order = np.lexsort((idx, -vals), axis=1)
    return np.take_along_axis(idx, order, axis=1)


def _overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, how many of the k indices in `a` are in `b` (both [rows, k], no repeats within a row)."""
    return (a[:, :, None] == b[:, None, :]).sum(axis=(1, 2))


def _neighbours(
    tq: np.ndarray,
    tc: np.ndarray,
    sq: np.ndarray,
    sc: np.ndarray,
    k: int,
    max_block: int,
    *,
    asymmetric: bool,
    reference: np.ndarray | None,
) -> dict[str, Any]:
    """Per-query recall@k and top-1 agreement with the teacher, block by block of queries so that memory stays
    at a few blocks of `max_block` similarities whatever n is."""
    n, m = tq.shape[0], tc.shape[0]
    rows = max(1, max_block // m)
    sides = [("symmetric", sc)] + ([("asymmetric", tc)] if asymmetric else [])
    out: dict[str, Any] = {"excluded_self": 0}
    for side, _ in sides:
        out[f"recall_{side}"], out[f"top1_{side}"] = np.zeros(n), np.zeros(n)
    if reference is not None:
        rq, rc = _unit(reference[:n]), _unit(reference[n:])
        out["recall_reference"], out["top1_reference"] = np.zeros(n), np.zeros(n)
    block = np.empty((rows, m), np.float32)
    for start in range(0, n, rows):
        at = slice(start, min(n, start + rows))
        sims = block[: at.stop - start]
        np.matmul(tq[at], tc.T, out=sims)
        self_rows = _self_matches(sims)
        out["excluded_self"] += len(self_rows[0])
        teacher_top = _ranked(sims, self_rows, k)
        for side, corpus in sides:
            top = _ranked(np.matmul(sq[at], corpus.T, out=sims), self_rows, k)
            out[f"recall_{side}"][at] = _overlap(teacher_top, top) / k
            out[f"top1_{side}"][at] = top[:, 0] == teacher_top[:, 0]
            if side == "symmetric":
                student_top = top
        if reference is not None:
            ref_top = _ranked(np.matmul(rq[at], rc.T, out=sims), self_rows, k)
            out["recall_reference"][at] = _overlap(ref_top, student_top) / k
            out["top1_reference"][at] = ref_top[:, 0] == student_top[:, 0]
    return out


def _self_matches(sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of the corpus rows the teacher embeds as the query itself. Indices, not a mask: setting
    through a full mask scans all of it, and only the rows whose best match reaches SAME need a look."""
    rows = np.nonzero(sims.max(axis=1) >= SAME)[0]
    r, c = np.nonzero(sims[rows] >= SAME)
    return rows[r], c


def _ranked(sims: np.ndarray, self_rows: tuple[np.ndarray, np.ndarray], k: int) -> np.ndarray:
    sims[self_rows] = -np.inf
    return _topk(sims, k)


def _worst(cosine: np.ndarray | None, hits: dict[str, Any], texts: list[str] | None) -> list[dict[str, Any]]:
    """The queries furthest from the teacher: lowest cosine (lowest symmetric recall when there is no cosine)."""
    by = cosine if cosine is not None else hits["recall_symmetric"]
    worst = []
    for i in np.argsort(by, kind="stable")[:WORST]:
        row: dict[str, Any] = {"index": int(i), "text": texts[i] if texts is not None else None}
        row["cosine"] = float(cosine[i]) if cosine is not None else None
        for side in ("symmetric", "asymmetric"):
            recall = hits.get(f"recall_{side}")
            row[f"recall_{side}"] = float(recall[i]) if recall is not None else None
        worst.append(row)
    return worst


def _fidelity(q_s: np.ndarray, c_s: np.ndarray, ref: np.ndarray, hits: dict[str, Any]) -> dict[str, Any]:
    """How close a compiled artifact stays to the fp32 student on the same rows. `prediction_match` and
    `max_abs_dlogit` keep classify's key names (the check line reads them): the share of queries whose nearest
    corpus row (symmetric) is the fp32 student's, and the largest |difference| of an output value (finite ones:
    `nonfinite_outputs` counts the others, which JSON cannot hold)."""
    mine = np.concatenate([q_s, c_s]).astype(np.float64)
    cos = np.clip(np.einsum("ij,ij->i", _unit(mine), _unit(ref), dtype=np.float64), -1.0, 1.0)
    diff = np.abs(mine - ref.astype(np.float64))
    finite = np.isfinite(diff)
    max_diff = float(diff[finite].max()) if finite.any() else 0.0
    return {
        "reference": "student",
        "mean_cosine_to_reference": float(cos.mean()),
        "min_cosine_to_reference": float(cos.min()),
        "max_abs_diff": max_diff,
        "max_abs_dlogit": max_diff,
        "nonfinite_outputs": int(diff.size - finite.sum()),
        "prediction_match": float(hits["top1_reference"].mean()),
        "recall_to_reference": float(hits["recall_reference"].mean()),
    }
