"""The CI gate: re-run a package's compiled artifact on its held-out inputs and compare with the teacher.

Imports no torch, transformers, pydantic, teacher or trainer, and runs on Python 3.8: a CI runner or a
device needs numpy, `tokenizers` and the artifact's runtime. Checks, each a JUnit test case:

- integrity: every file matches the manifest's SHA-256 (and the signature, with a trusted key);
- agreement: the artifact, re-run here through tsd_edge.runtime (or on a device over SSH, `device`), holds
  under the rule the package was judged by (`tsd_edge.verdict`). Where its runtime is missing the check is
  *not verified*: it fails (JUnit `skipped`) unless `accept_packaged` says to judge the packaged report;
- regression (with a baseline package): on the same held-out inputs, the new artifact is at most
  `max_drop` below the baseline's.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np

from .agreement import AgreementReport, compare
from .errors import RuntimeMissingError
from .runtime.model import Model
from .runtime.package import Package, PackageIntegrityError, read_package
from .verdict import Rule, judge


@dataclass
class Check:
    name: str
    passed: bool
    message: str
    skipped: bool = False  # not verified (no runtime here): reported as JUnit `skipped`, and it does not pass


@dataclass
class GateResult:
    package: str
    checks: list[Check] = field(default_factory=list)
    report: AgreementReport | None = None
    seconds: float = 0.0
    ran_on: str = "this host"

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
            "ran_on": self.ran_on,
            "checks": [c.__dict__ for c in self.checks],
            "report": self.report.to_dict() if self.report else None,
        }


def _rows(pkg: Package, name: str) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in pkg.file(name).read_text(encoding="utf-8").splitlines() if ln]


@dataclass
class Heldout:
    """A classify package's held-out inputs and the teacher's labels: what its artifact is re-run on and judged by."""

    texts: list[str]
    teacher: list[str]
    gold: list[str | None]

    @classmethod
    def of(cls, pkg: Package) -> Heldout:
        rows = _rows(pkg, "heldout.jsonl")
        return cls([r["input"] for r in rows], [r["teacher"] for r in rows], [r.get("gold") for r in rows])

    @property
    def run_texts(self) -> list[str]:
        return self.texts

    def report(self, stage: str, outputs: np.ndarray, labels: list[str], rule: Rule) -> AgreementReport:
        predicted = [labels[i] for i in outputs.argmax(1)]
        return compare(
            stage, self.teacher, predicted, threshold=rule.threshold, rule=rule.rule, texts=self.texts, gold=self.gold
        )


@dataclass
class EmbedHeldout:
    """An embed package's held-out queries and corpus with the teacher's embeddings of both (docs/embed.md)."""

    texts: list[str]
    teacher: np.ndarray
    corpus: list[str]
    corpus_teacher: np.ndarray
    metric: str
    k: int
    floor: float

    @classmethod
    def of(cls, pkg: Package) -> EmbedHeldout:
        m = pkg.manifest
        load = lambda name: np.load(pkg.file(name), allow_pickle=False)  # noqa: E731
        texts, corpus = (
            [r["input"] for r in _rows(pkg, "heldout.jsonl")],
            [r["input"] for r in _rows(pkg, "corpus.jsonl")],
        )
        return cls(
            texts, load("heldout_teacher.npy"), corpus, load("corpus_teacher.npy"), m["metric"], m["k"], m["floor"]
        )

    @property
    def run_texts(self) -> list[str]:
        return self.texts + self.corpus

    def report(self, stage: str, outputs: np.ndarray, labels: list[str], rule: Rule) -> AgreementReport:
        from .embedding_agreement import compare_outputs

        return compare_outputs(
            stage,
            outputs,
            self.teacher,
            self.corpus_teacher,
            metric=self.metric,
            k=self.k,
            floor=self.floor,
            threshold=rule.threshold,
            rule=rule.rule,
            texts=self.texts,
        )


def heldout_of(pkg: Package) -> Heldout | EmbedHeldout:
    return EmbedHeldout.of(pkg) if pkg.manifest.get("kind", "classify") == "embed" else Heldout.of(pkg)


def rerun(pkg: Package, texts: list[str], threads: int | None) -> tuple[np.ndarray, str]:
    """The packaged artifact's logits for `texts` through tsd_edge.runtime, and the runtime that ran it."""
    with Model(pkg, threads) as model:
        return model.logits(texts), model.runtime


def gate_package(
    path: Path,
    threshold: float | None = None,
    threads: int | None = 1,
    *,
    baseline: Path | None = None,
    max_drop: float = 0.01,
    trust: Path | None = None,
    accept_packaged: bool = False,
    device: Any = None,
) -> GateResult:
    """Verify the package and judge its artifact's agreement, re-run here or on `device` (an SshDevice)."""
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
        m, held = pkg.manifest, heldout_of(pkg)
        rule = Rule.from_manifest(m)
        if threshold is not None:
            rule.threshold = threshold
        labels = json.loads(pkg.file("labels.json").read_text(encoding="utf-8"))
        try:
            if device is not None:
                from .device import logits_on_device

                logits, runtime = logits_on_device(device, path, held.run_texts, threads)
                result.ran_on = f"{device.url} ({runtime})"
            else:
                logits, runtime = rerun(pkg, held.run_texts, threads)
                result.ran_on = f"this host ({runtime})"
        except RuntimeMissingError as exc:
            result.checks.append(_packaged_report(pkg, rule, str(exc), accept_packaged))
            result.report = AgreementReport.load(pkg.file("report.json"))
            result.ran_on = "not re-run"
            result.seconds = time.perf_counter() - start
            return result
        report = held.report(f"gate:{m['target']}", logits, labels, rule)
        result.report = report
        why = judge(report, rule)
        lo, hi = report.ci95
        result.checks.append(
            Check(
                "agreement",
                why is None,
                f"re-run on {result.ran_on}: {report.measure} {report.agreement:.4f} (95% CI {lo:.3f}–{hi:.3f}, "
                f"n={report.n}) " + ("holds under the packaged rule" if why is None else f"does not hold: {why}"),
            )
        )
        if "deferral" in m and isinstance(held, Heldout):
            result.checks.append(_deferral(pkg, logits, [labels[i] for i in logits.argmax(1)], held))
        if baseline is not None:
            result.checks.append(
                _regression(
                    report,
                    baseline,
                    held,
                    Path(tmp) / "base",
                    threads,
                    max_drop,
                    trust,
                    logits,
                    labels,
                    m.get("deferral"),
                )
            )
    result.seconds = time.perf_counter() - start
    return result


def _packaged_report(pkg: Package, rule: Rule, missing: str, accept: bool) -> Check:
    """No runtime here (say, a TensorRT engine on a CPU runner): not verified, unless the user accepts the
    packaged report (bound by the manifest's hash) in so many words."""
    report = AgreementReport.load(pkg.file("report.json"))
    why = judge(report, rule)
    says = f"the packaged report says {report.agreement:.4f} (n={report.n})"
    if not accept:
        return Check(
            "agreement",
            False,
            f"NOT VERIFIED: the artifact was not re-run ({missing}); {says}. Re-run it where its runtime is "
            "(`tsd-edge gate --device ssh://user@host`, or on the device), or accept the packaged report "
            "with --accept-packaged-report",
            skipped=True,
        )
    verdict = "holds" if why is None else f"does not hold: {why}"
    return Check(
        "agreement",
        why is None,
        f"NOT RE-RUN, packaged report accepted (--accept-packaged-report; {missing}): {says}, {verdict}",
    )


def _deferral(pkg: Package, logits: np.ndarray, predicted: list[str], held: Heldout) -> Check:
    """The hybrid system's rule on the re-run answers: answered agreement at τ (its lower bound at the packaged
    confidence) still meets the target, and coverage fell no more than allowed."""
    from .deferral import Deferral, recheck

    shipped = Deferral.from_dict(json.loads(pkg.file("deferral.json").read_text(encoding="utf-8")))
    why = recheck(shipped, logits, predicted, held.teacher, pkg.manifest["deferral"].get("max_coverage_drop", 0.05))
    if shipped.threshold is None:
        return Check("deferral", True, "no threshold was promised: every input goes to the teacher")
    ok = why is None
    return Check(
        "deferral",
        ok,
        f"answers when {shipped.measure} ≥ {shipped.threshold:.4f}: "
        + ("answered agreement and coverage hold" if ok else str(why)),
    )


def _regression(
    new: AgreementReport,
    baseline: Path,
    held: Heldout | EmbedHeldout,
    dest: Path,
    threads: int | None,
    max_drop: float,
    trust: Path | None,
    new_logits: np.ndarray | None = None,
    new_labels: list[str] | None = None,
    deferral: dict | None = None,
) -> Check:
    """The baseline's artifact on the new package's held-out inputs: same inputs, same teacher answers."""
    try:
        base = read_package(baseline, dest, trust)
    except PackageIntegrityError as exc:
        return Check("regression", False, f"baseline: {exc}")
    try:
        logits, _ = rerun(base, held.run_texts, threads)
    except RuntimeMissingError as exc:
        return Check("regression", False, f"NOT VERIFIED: the baseline could not be re-run here ({exc})", skipped=True)
    labels = json.loads(base.file("labels.json").read_text(encoding="utf-8"))
    old = held.report("baseline", logits, labels, Rule(threshold=0.0))
    drop = old.agreement - new.agreement
    ok = drop <= max_drop
    message = (
        f"{new.measure} {new.agreement:.4f} vs baseline {old.agreement:.4f} on the same "
        f"{new.n} inputs: {'drop' if drop > 0 else 'gain'} {abs(drop):.4f} {'≤' if ok else '>'} max drop "
        f"{max_drop:.4f}"
    )
    classify = isinstance(held, Heldout)
    if classify and new_logits is not None and new_labels is not None and deferral and "deferral" in base.manifest:
        from .deferral import confidences, coverage_at

        def coverage(lg: np.ndarray, names: list[str]) -> float:
            agree = np.array([names[i] == t for i, t in zip(lg.argmax(1), held.teacher)], dtype=np.float64)
            return coverage_at(confidences(lg, deferral["measure"]), agree, deferral["target"])

        ours, theirs = coverage(new_logits, new_labels), coverage(logits, labels)
        allowed = deferral.get("max_coverage_drop", 0.05)
        held_up = theirs - ours <= allowed
        ok = ok and held_up
        message += (
            f"; coverage at answered agreement {deferral['target']}: {ours:.3f} vs baseline {theirs:.3f} "
            f"({'within' if held_up else 'more than'} the allowed drop {allowed})"
        )
    return Check("regression", ok, message)


def write_junit(results: list[GateResult], path: Path) -> None:
    """JUnit XML: one test case per package and check, which every CI system can display."""
    suite = ET.Element(
        "testsuite",
        name="tsd-edge gate",
        tests=str(sum(len(r.checks) for r in results)),
        failures=str(sum(not c.passed and not c.skipped for r in results for c in r.checks)),
        skipped=str(sum(c.skipped for r in results for c in r.checks)),
    )
    for r in results:
        for c in r.checks:
            case = ET.SubElement(suite, "testcase", classname=Path(r.package).name, name=c.name)
            if c.skipped:
                ET.SubElement(case, "skipped", message=c.message)
            elif not c.passed:
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
            status = "**NOT VERIFIED**" if c.skipped else ("pass" if c.passed else "**FAIL**")
            lines.append(f"| `{Path(r.package).name}` | {c.name} | {status} | {detail} |")
    for r in results:
        if r.report and r.report.confusions:
            lines += ["", f"Most frequent disagreements in `{Path(r.package).name}` (teacher → artifact):", ""]
            lines += [f"- {c['teacher']} → {c['predicted']}: {c['count']}" for c in r.report.confusions[:5]]
    return "\n".join(lines) + "\n"
