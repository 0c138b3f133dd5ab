"""The one rule that decides whether a compiled artifact's agreement holds.

`check`'s exit code, `package`'s refusal and the gate's agreement check all call `judge` with a `Rule`; the
package's manifest records the whole rule (`manifest["verdict"]`), so the gate judges a re-run exactly as
`package` judged the check. Pure Python 3.8: the gate runs on devices and CI runners.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .agreement import AgreementReport, inputs_needed


@dataclass
class Rule:
    """`point`: the measured agreement must reach `threshold`; `strict`: its lower 95% bound must. At least
    `min_n` held-out inputs. `max_drop`: how far under the fp32 student's agreement (`student_agreement`,
    measured on the same inputs) a compiled artifact may fall."""

    threshold: float
    rule: str = "point"
    min_n: int = 1
    max_drop: float | None = None
    student_agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Rule:
        """The rule a package was judged by (packages written before it was recorded: threshold and rule)."""
        if "verdict" in manifest:
            return cls(**manifest["verdict"])
        return cls(threshold=float(manifest["threshold"]), rule=manifest.get("rule", "point"))


def judge(report: AgreementReport, rule: Rule) -> str | None:
    """Why the agreement in `report` does not hold under `rule`, in one line; None when it holds."""
    if report.n < rule.min_n:
        return f"only {report.n} held-out inputs, agreement.min_n is {rule.min_n}: add inputs or raise split.heldout"
    judged = report.ci95[0] if rule.rule == "strict" else report.agreement
    if judged < rule.threshold:
        if rule.rule == "strict":
            need = inputs_needed(report.agreement, rule.threshold)
            more = f"; about {need} held-out inputs would let {report.agreement:.4f} clear it" if need else ""
            return (
                f"the lower 95% bound of agreement, {report.ci95[0]:.4f} (n={report.n}), is under the threshold "
                f"{rule.threshold} (rule: strict){more}"
            )
        return f"agreement {report.agreement:.4f} is under the threshold {rule.threshold}"
    if rule.max_drop is not None and rule.student_agreement is not None:
        drop = rule.student_agreement - report.agreement
        if drop > rule.max_drop + 1e-12:
            return (
                f"agreement fell {drop:.4f} from the fp32 student's {rule.student_agreement:.4f}, "
                f"over agreement.max_drop={rule.max_drop}"
            )
    return None
