"""The CI gate: re-run a package's compiled artifact on its held-out inputs and compare with the teacher.

Imports no torch, transformers, teacher or trainer: a CI runner needs numpy, `tokenizers` and the
artifact's runtime. Checks, each a JUnit test case:

- integrity: every file matches the manifest's SHA-256 (and the signature, with a trusted key);
- agreement: the re-run artifact's agreement with the teacher holds under the packaged rule;
- regression (with a baseline package): on the same held-out inputs, the new artifact is at most
  `max_drop` below the baseline's.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

from .agreement import AgreementReport, compare
from .errors import RuntimeMissingError
from .exporters import get_backend
from .exporters.base import Artifact
from .infer import predict_logits
from .package import Package, PackageIntegrityError, read_package
from .tokenization import TextEncoder


@dataclass
class Check:
    name: str
    passed: bool
    message: str


@dataclass
class GateResult:
    package: str
    checks: list[Check] = field(default_factory=list)
    report: AgreementReport | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict:
        return {
            "package": self.package,
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "checks": [c.__dict__ for c in self.checks],
            "report": self.report.to_dict() if self.report else None,
        }


@dataclass
class Heldout:
    texts: list[str]
    teacher: list[str]
    gold: list[str | None]

    @classmethod
    def of(cls, pkg: Package) -> Heldout:
        rows = [json.loads(ln) for ln in pkg.file("heldout.jsonl").read_text(encoding="utf-8").splitlines() if ln]
        return cls([r["input"] for r in rows], [r["teacher"] for r in rows], [r.get("gold") for r in rows])


def rerun(pkg: Package, texts: list[str], threads: int | None) -> list[str]:
    """The packaged artifact's labels for `texts`, through its own tokenizer, runtime and label map."""
    artifact = Artifact.load_meta(pkg.file("artifact.json"))
    artifact.path = pkg.file(artifact.path.name)
    labels = json.loads(pkg.file("labels.json").read_text(encoding="utf-8"))
    encode = TextEncoder(pkg.file("tokenizer.json"), pkg.manifest["max_length"])
    with get_backend(artifact.backend).load(artifact, threads) as runner:
        logits = predict_logits(runner, encode, texts)
    return [labels[i] for i in logits.argmax(1)]


def gate_package(
    path: Path,
    threshold: float | None = None,
    threads: int | None = 1,
    *,
    baseline: Path | None = None,
    max_drop: float = 0.01,
    trust: Path | None = None,
) -> GateResult:
    start = time.perf_counter()
    result = GateResult(str(path))
    with tempfile.TemporaryDirectory(prefix="tsd-gate-") as tmp:
        try:
            pkg = read_package(path, Path(tmp) / "new", trust)
        except PackageIntegrityError as exc:
            result.checks.append(Check("integrity", False, str(exc)))
            result.seconds = time.perf_counter() - start
            return result
        signed = (
            "signature verified"
            if pkg.verified
            else ("signed, not verified (no --trust key)" if pkg.signed else "unsigned")
        )
        result.checks.append(
            Check("integrity", True, f"{len(pkg.manifest['files'])} files match the manifest; {signed}")
        )
        m, held = pkg.manifest, Heldout.of(pkg)
        bar = m["threshold"] if threshold is None else threshold
        try:
            predicted = rerun(pkg, held.texts, threads)
        except RuntimeMissingError as exc:
            # No runtime here (say, a TensorRT engine on a CPU runner): judge the hash-bound report instead,
            # and say so plainly.
            report = AgreementReport.load(pkg.file("report.json"))
            report.threshold, report.rule = bar, m.get("rule", "point")
            result.report = report
            result.checks.append(
                Check(
                    "agreement",
                    report.passed,
                    f"not re-run ({exc}); the packaged report, bound by the manifest's hash"
                    f"{' and signature' if pkg.verified else ''}, says {report.agreement:.4f} (n={report.n}) "
                    f"{'≥' if report.passed else '<'} threshold {bar:.3f}",
                )
            )
            result.seconds = time.perf_counter() - start
            return result
        report = compare(
            f"gate:{m['target']}",
            held.teacher,
            predicted,
            threshold=bar,
            rule=m.get("rule", "point"),
            texts=held.texts,
            gold=held.gold,
        )
        result.report = report
        lo, hi = report.ci95
        judged = f"lower 95% bound {lo:.4f}" if report.rule == "strict" else f"{report.agreement:.4f}"
        result.checks.append(
            Check(
                "agreement",
                report.passed,
                f"agreement {report.agreement:.4f} (95% CI {lo:.3f}–{hi:.3f}, n={report.n}): {judged} "
                f"{'≥' if report.passed else '<'} threshold {bar:.3f}",
            )
        )
        if baseline is not None:
            result.checks.append(_regression(report, baseline, held, Path(tmp) / "base", threads, max_drop, trust))
    result.seconds = time.perf_counter() - start
    return result


def _regression(
    new: AgreementReport,
    baseline: Path,
    held: Heldout,
    dest: Path,
    threads: int | None,
    max_drop: float,
    trust: Path | None,
) -> Check:
    """The baseline's artifact on the new package's held-out inputs: same inputs, same teacher answers."""
    try:
        base = read_package(baseline, dest, trust)
    except PackageIntegrityError as exc:
        return Check("regression", False, f"baseline: {exc}")
    old = compare("baseline", held.teacher, rerun(base, held.texts, threads))
    drop = old.agreement - new.agreement
    ok = drop <= max_drop
    return Check(
        "regression",
        ok,
        f"agreement {new.agreement:.4f} vs baseline {old.agreement:.4f} on the same "
        f"{new.n} inputs: {'drop' if drop > 0 else 'gain'} {abs(drop):.4f} {'≤' if ok else '>'} max drop "
        f"{max_drop:.4f}",
    )


def write_junit(results: list[GateResult], path: Path) -> None:
    """JUnit XML: one test case per package and check, which every CI system can display."""
    suite = ET.Element(
        "testsuite",
        name="tsd-edge gate",
        tests=str(sum(len(r.checks) for r in results)),
        failures=str(sum(not c.passed for r in results for c in r.checks)),
    )
    for r in results:
        for c in r.checks:
            case = ET.SubElement(suite, "testcase", classname=Path(r.package).name, name=c.name)
            if not c.passed:
                ET.SubElement(case, "failure", message=c.message).text = c.message
            else:
                ET.SubElement(case, "system-out").text = c.message
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def markdown(results: list[GateResult]) -> str:
    """A summary for people: GitHub shows it on the run page when written to $GITHUB_STEP_SUMMARY."""
    verdict = "✅ all packages hold" if all(results) else "❌ the gate does not hold"
    lines = [f"## tsd-edge gate: {verdict}", "", "| package | check | result | detail |", "| --- | --- | --- | --- |"]
    for r in results:
        for c in r.checks:
            detail = c.message.replace("|", "\\|")
            lines.append(f"| `{Path(r.package).name}` | {c.name} | {'pass' if c.passed else '**FAIL**'} | {detail} |")
    for r in results:
        if r.report and r.report.confusions:
            lines += ["", f"Most frequent disagreements in `{Path(r.package).name}` (teacher → artifact):", ""]
            lines += [f"- {c['teacher']} → {c['predicted']}: {c['count']}" for c in r.report.confusions[:5]]
    return "\n".join(lines) + "\n"
