"""Calibrated deferral: the student answers when it is sure, the teacher answers the rest.

Selective classification with guaranteed risk (SGR; Geifman & El-Yaniv, "Selective Classification for Deep
Neural Networks", NeurIPS 2017, Algorithm 1). Given the compiled artifact's confidence on held-out inputs and
whether it agreed with the teacher on each, find a threshold τ such that, with probability at least
`confidence`, the agreement on the inputs it answers (confidence ≥ τ) is at least `target`:

- candidate thresholds are the observed confidences, searched by bisection (⌈log2 m⌉ steps);
- at each step the disagreement rate on the answered inputs gets an exact one-sided binomial upper bound
  (Clopper–Pearson) at level δ/⌈log2 m⌉, δ = 1 − confidence: the union bound over every threshold tried,
  which is the correction for having searched;
- the lowest threshold whose bound meets the target is kept (the largest coverage that is still guaranteed).

τ is chosen on one half of the held-out inputs (stable by input hash) and its answered agreement and coverage
are also measured on the other half, which τ never saw: that is the figure to believe. Confidence is the
top softmax probability or the margin between the two most likely labels, whichever has the smaller area
under the risk–coverage curve on the calibration half (recorded). Pure numpy + Python 3.8: the gate and the
runtime use it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .runtime.confidence import MEASURES, confidences


def _log_binom_cdf(k: int, n: int, p: float) -> float:
    """log P[X ≤ k] for X ~ Binomial(n, p), summed in log space (n is a few thousand at most here)."""
    if p <= 0:
        return 0.0
    if p >= 1:
        return 0.0 if k >= n else -math.inf
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)
        for i in range(k + 1)
    ]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def risk_upper_bound(errors: int, n: int, delta: float) -> float:
    """The exact one-sided (Clopper–Pearson) upper bound on an error rate: the largest p with
    P[X ≤ errors | n, p] ≥ δ. Bisection to 1e-7."""
    if n == 0:
        return 1.0
    if errors >= n:
        return 1.0
    lo, hi, log_delta = errors / n, 1.0, math.log(delta)
    for _ in range(60):
        mid = (lo + hi) / 2
        if _log_binom_cdf(errors, n, mid) >= log_delta:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-7:
            break
    return hi


@dataclass
class Point:
    threshold: float
    coverage: float
    answered_agreement: float
    answered: int


def curve(conf: np.ndarray, agree: np.ndarray, points: int = 50) -> list[Point]:
    """Coverage vs answered agreement, answering the most confident first (for the report's plot)."""
    order = np.argsort(-conf, kind="stable")
    hits = np.cumsum(agree[order])
    m = len(conf)
    out = []
    for k in sorted({max(1, round(m * (i + 1) / points)) for i in range(points)}):
        out.append(Point(float(conf[order[k - 1]]), k / m, float(hits[k - 1] / k), k))
    return out


def coverage_at(conf: np.ndarray, agree: np.ndarray, target: float) -> float:
    """The largest share of inputs, most confident first, whose agreement is still at least `target` (measured,
    no bound: for comparing two artifacts on the same inputs)."""
    if not len(conf):
        return 0.0
    order = np.argsort(-conf, kind="stable")
    running = np.cumsum(agree[order]) / np.arange(1, len(conf) + 1)
    ok = np.nonzero(running >= target)[0]
    return float((ok.max() + 1) / len(conf)) if len(ok) else 0.0


def aurc(conf: np.ndarray, agree: np.ndarray) -> float:
    """Area under the risk–coverage curve: lower means confidence ranks disagreements last."""
    order = np.argsort(-conf, kind="stable")
    risk = np.cumsum(1 - agree[order]) / np.arange(1, len(conf) + 1)
    return float(risk.mean()) if len(conf) else 1.0


def sgr(conf: np.ndarray, agree: np.ndarray, target: float, delta: float) -> tuple[float | None, float]:
    """SGR's bisection: (τ, the agreement lower bound at τ), or (None, best bound) when no threshold holds."""
    m = len(conf)
    if m == 0:
        return None, 0.0
    order = np.argsort(conf, kind="stable")  # ascending: index z answers every input from z on
    sorted_conf, sorted_agree = conf[order], agree[order]
    steps = max(1, math.ceil(math.log2(m)))
    level = delta / steps
    lo, hi = 0, m - 1
    best: tuple[float | None, float] = (None, 0.0)
    for _ in range(steps):
        mid = (lo + hi) // 2
        tau = float(sorted_conf[mid])
        answered = sorted_conf >= tau
        n = int(answered.sum())
        errors = int(n - sorted_agree[answered].sum())
        bound = 1.0 - risk_upper_bound(errors, n, level)
        if bound >= target:
            best = (tau, bound)
            hi = mid  # holds: try a lower threshold (more coverage)
        else:
            lo = mid + 1
            if best[0] is None:
                best = (None, max(best[1], bound))
        if lo >= hi:
            break
    if best[0] is None:  # the bisection's last step may have ended on an untried, higher threshold
        tau = float(sorted_conf[min(lo, m - 1)])
        answered = sorted_conf >= tau
        n = int(answered.sum())
        bound = 1.0 - risk_upper_bound(int(n - sorted_agree[answered].sum()), n, level)
        if bound >= target:
            best = (tau, bound)
    return best


def calibration_half(text: str) -> bool:
    """Stable by input: True for the inputs τ is chosen on, False for those it is measured on."""
    return hashlib.sha256(text.encode("utf-8")).digest()[0] % 2 == 0


@dataclass
class Deferral:
    """The rule a package ships: answer when `measure`'s confidence ≥ `threshold`; else defer to the teacher."""

    target: float
    confidence: float
    measure: str
    threshold: float | None  # None: no threshold reaches the target with that confidence
    bound: float  # lower confidence bound of answered agreement at the threshold, on the calibration half
    calibration: dict[str, Any] = field(default_factory=dict)  # n, coverage, answered agreement (τ chosen here)
    evaluation: dict[str, Any] = field(default_factory=dict)  # the same on the half τ never saw
    overall: dict[str, Any] = field(default_factory=dict)  # on every held-out input (what the gate re-measures)
    curve: list[dict[str, float]] = field(default_factory=list)  # on every held-out input
    aurc: dict[str, float] = field(default_factory=dict)
    min_coverage: float = 0.0
    useful: bool = True  # reached at least min_coverage on the evaluation half

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Deferral:
        return cls(**data)

    def answers(self, conf: np.ndarray) -> np.ndarray:
        """Which inputs the student answers (True) and which it defers (False)."""
        if self.threshold is None:
            return np.zeros(len(conf), dtype=bool)
        return conf >= self.threshold


def measured(conf: np.ndarray, agree: np.ndarray, threshold: float | None) -> dict[str, Any]:
    answered = conf >= threshold if threshold is not None else np.zeros(len(conf), dtype=bool)
    n = int(answered.sum())
    return {
        "n": len(conf),
        "answered": n,
        "coverage": n / len(conf) if len(conf) else 0.0,
        "answered_agreement": float(agree[answered].mean()) if n else None,
        "overall_agreement": float(agree.mean()) if len(conf) else None,
    }


def calibrate(
    logits: np.ndarray,
    predicted: Sequence[str],
    teacher: Sequence[str],
    texts: Sequence[str],
    *,
    target: float,
    confidence: float = 0.95,
    min_coverage: float = 0.0,
    measure: str | None = None,
) -> Deferral:
    """Choose the deferral rule on the calibration half of the held-out inputs; measure it on the other half."""
    agree = np.array([p == t for p, t in zip(predicted, teacher)], dtype=np.float64)
    cal = np.array([calibration_half(t) for t in texts], dtype=bool)
    scores = {name: confidences(logits, name) for name in MEASURES}
    areas = {name: aurc(scores[name][cal], agree[cal]) for name in MEASURES}
    chosen = measure or min(areas, key=lambda k: areas[k])
    conf = scores[chosen]
    tau, bound = sgr(conf[cal], agree[cal], target, 1.0 - confidence)
    evaluation = measured(conf[~cal], agree[~cal], tau)
    return Deferral(
        target=target,
        confidence=confidence,
        measure=chosen,
        threshold=tau,
        bound=bound,
        calibration=measured(conf[cal], agree[cal], tau),
        evaluation=evaluation,
        overall=measured(conf, agree, tau),
        curve=[asdict(p) for p in curve(conf, agree)],
        aurc=areas,
        min_coverage=min_coverage,
        useful=tau is not None and evaluation["coverage"] >= min_coverage,
    )


def recheck(
    deferral: Deferral, logits: np.ndarray, predicted: Sequence[str], teacher: Sequence[str], max_coverage_drop: float
) -> str | None:
    """The gate's check of a shipped rule on re-run logits: at τ, the answered agreement's lower bound (same
    confidence, no search this time) still meets the target, and coverage has not fallen more than allowed.
    Why not, in one line; None when it holds."""
    if deferral.threshold is None:
        return None  # nothing was promised: every input goes to the teacher
    agree = np.array([p == t for p, t in zip(predicted, teacher)], dtype=np.float64)
    conf = confidences(logits, deferral.measure)
    got = measured(conf, agree, deferral.threshold)
    n, k = got["answered"], int(agree[conf >= deferral.threshold].sum())
    bound = 1.0 - risk_upper_bound(n - k, n, 1.0 - deferral.confidence)
    if bound < deferral.target:
        return (
            f"answered agreement at τ={deferral.threshold:.4f} is {got['answered_agreement'] or 0:.4f} "
            f"(lower {deferral.confidence:.0%} bound {bound:.4f}, n={n}), under the target {deferral.target}"
        )
    before = deferral.overall["coverage"]
    if before - got["coverage"] > max_coverage_drop:
        return f"coverage fell from {before:.3f} to {got['coverage']:.3f}, more than {max_coverage_drop}"
    return None
