"""Agreement with the teacher: one report schema for every stage (student, ONNX, each compiled target).

Pure numpy and Python 3.8: the gate uses it on a device or a CI runner without torch.
A report is truthy when it holds.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

SCHEMA = "tsd-edge/agreement/1"


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval: honest at small n and near 0 or 1, unlike p ± 1.96·se."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class AgreementReport:
    stage: str
    n: int
    agreement: float
    ci95: tuple[float, float]
    threshold: float | None = None
    rule: str = "point"
    per_label: dict[str, dict[str, float]] = field(default_factory=dict)
    confusions: list[dict[str, Any]] = field(default_factory=list)
    fidelity: dict[str, Any] | None = None
    gold_accuracy: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # what `agreement` measures: "label" (classify), or an embed task's metric (toolkit/embedding_agreement.py)
    metric: str = "label"
    schema: str = SCHEMA

    @property
    def measure(self) -> str:
        """What `agreement` measures, in words: "agreement", or an embed metric ("recall asymmetric")."""
        return "agreement" if self.metric == "label" else self.metric.replace("_", " ")

    @property
    def judged(self) -> float:
        """The figure the threshold is held against: the agreement, or its lower 95% bound (`strict`)."""
        return self.ci95[0] if self.rule == "strict" else self.agreement

    @property
    def passed(self) -> bool:
        return self.threshold is None or self.judged >= self.threshold

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def save(self, path: Path) -> None:
        """Written whole or not at all (a temporary file renamed onto it)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> AgreementReport:
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("passed", None)
        data["ci95"] = tuple(data["ci95"])
        return cls(**data)


def inputs_needed(agreement: float, threshold: float, limit: int = 1_000_000) -> int | None:
    """How many held-out inputs the strict rule needs before an agreement this high can clear the
    threshold (None when it never can: the agreement itself is under the threshold)."""
    if agreement <= threshold:
        return None
    n = 1
    while n <= limit:
        if wilson(round(agreement * n), n)[0] >= threshold:
            # doubling found an n that suffices; bisect back to the smallest
            lo, hi = n // 2, n
            while lo + 1 < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if wilson(round(agreement * mid), mid)[0] >= threshold else (mid, hi)
            return hi
        n *= 2
    return None


def compare(
    stage: str,
    teacher: Sequence[str | None],
    predicted: list[str],
    *,
    threshold: float | None = None,
    rule: str = "point",
    texts: list[str] | None = None,
    gold: list[str | None] | None = None,
    logits: np.ndarray | None = None,
    reference_logits: np.ndarray | None = None,
    reference: str = "student",
    top_confusions: int = 10,
) -> AgreementReport:
    """Agreement of `predicted` with the teacher's labels on the same inputs, with the evidence. Every input
    must have the teacher's label (a pair's label is None only where the teacher did not answer)."""
    if len(teacher) != len(predicted):
        raise ValueError("teacher and predicted label lists differ in length")
    told = [t for t in teacher if t is not None]
    if len(told) != len(teacher):
        raise ValueError(f"{len(teacher) - len(told)} input(s) without the teacher's label cannot be scored")
    n = len(told)
    hits = [t == p for t, p in zip(told, predicted)]
    k = sum(hits)
    per_label: dict[str, dict[str, float]] = {}
    for label in sorted(set(told)):
        idx = [i for i, t in enumerate(told) if t == label]
        per_label[label] = {"n": len(idx), "agreement": sum(hits[i] for i in idx) / len(idx)}
    pairs = Counter((t, p) for t, p in zip(told, predicted) if t != p)
    confusions = []
    for (t, p), count in pairs.most_common(top_confusions):
        example = next((texts[i] for i in range(n) if told[i] == t and predicted[i] == p), None) if texts else None
        confusions.append({"teacher": t, "predicted": p, "count": count, "example": example})
    fidelity = None
    if logits is not None and reference_logits is not None:
        delta = np.abs(np.asarray(logits, np.float64) - np.asarray(reference_logits, np.float64))
        fidelity = {
            "reference": reference,
            "prediction_match": float(np.mean(logits.argmax(1) == reference_logits.argmax(1))) if n else 1.0,
            "max_abs_dlogit": float(delta.max()) if delta.size else 0.0,
            "mean_abs_dlogit": float(delta.mean()) if delta.size else 0.0,
        }
    gold_accuracy = None
    if gold is not None:
        if len(gold) != n:
            raise ValueError("gold and predicted label lists differ in length")
        scored = [(g, p) for g, p in zip(gold, predicted) if g is not None]
        if scored:
            gold_accuracy = sum(g == p for g, p in scored) / len(scored)
    return AgreementReport(
        stage=stage,
        n=n,
        agreement=k / n if n else 0.0,
        ci95=wilson(k, n),
        threshold=threshold,
        rule=rule,
        per_label=per_label,
        confusions=confusions,
        fidelity=fidelity,
        gold_accuracy=gold_accuracy,
    )
