"""The CI gate: re-run a package's compiled artifact on its held-out inputs and compare with the teacher.

Imports no torch, transformers, teacher or trainer: a CI runner needs numpy, `tokenizers` and the
artifact's runtime. A package whose files do not match its manifest fails the gate.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

from .agreement import AgreementReport, compare
from .exporters import get_backend
from .exporters.base import Artifact
from .infer import predict_logits
from .package import PackageIntegrityError, read_package
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


def gate_package(path: Path, threshold: float | None = None, threads: int | None = 1) -> GateResult:
    start = time.perf_counter()
    result = GateResult(str(path))
    with tempfile.TemporaryDirectory(prefix="tsd-gate-") as tmp:
        try:
            pkg = read_package(path, Path(tmp))
        except PackageIntegrityError as exc:
            result.checks.append(Check("integrity", False, str(exc)))
            result.seconds = time.perf_counter() - start
            return result
        result.checks.append(Check("integrity", True, f"{len(pkg.manifest['files'])} files match the manifest"))
        m = pkg.manifest
        artifact = Artifact.load_meta(pkg.file("artifact.json"))
        artifact.path = pkg.file(artifact.path.name)
        rows = [json.loads(line) for line in pkg.file("heldout.jsonl").read_text(encoding="utf-8").splitlines()]
        texts, teacher = [r["input"] for r in rows], [r["teacher"] for r in rows]
        labels = json.loads(pkg.file("labels.json").read_text(encoding="utf-8"))
        encode = TextEncoder(pkg.file("tokenizer.json"), m["max_length"])
        with get_backend(artifact.backend).load(artifact, threads) as runner:
            logits = predict_logits(runner, encode, texts)
        bar = m["threshold"] if threshold is None else threshold
        report = compare(
            f"gate:{m['target']}",
            teacher,
            [labels[i] for i in logits.argmax(1)],
            threshold=bar,
            texts=texts,
            gold=[r.get("gold") for r in rows],
        )
        result.report = report
        lo, hi = report.ci95
        result.checks.append(
            Check(
                "agreement",
                report.passed,
                f"agreement {report.agreement:.4f} (95% CI {lo:.3f}–{hi:.3f}, n={report.n}) "
                f"{'≥' if report.passed else '<'} threshold {bar:.3f}",
            )
        )
    result.seconds = time.perf_counter() - start
    return result


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
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
