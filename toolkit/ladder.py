"""The student ladder: train students from the cheapest up and ship the first whose compiled agreement holds.

`student: {ladder: [rung, ...]}` (or `ladder: auto`) in the task file. Each rung is a `student:` setting
(its own `training:` laid over the task's). For each rung, in order: distill, export, compile and check for
every target, then the same rule `package` applies (`verdict.judge`: threshold, `max_drop` from the rung's
own fp32 student, `min_n`). The first rung that holds on every target is the one `run` packages; the
rungs after it are not trained.

Each rung works in its own run folder, `runs/<task>/ladder/<rung>/` (student/, onnx/, compiled/,
reports/, records/), sharing the task's pairs.sqlite and dist/: every stage is cached by its own record as
in a plain run, so a second `run` trains nothing. `reports/ladder.json` (main run folder, and the chosen
rung's) lists every rung tried: agreement, size and latency on each target, and why the ladder stopped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .context import RunContext
from .digest import sha256_file
from .rundir import RunDir, write_atomic
from .stages import StageResult
from .task import StudentSpec, Task

SCHEMA = "tsd-edge/ladder/1"

# `ladder: auto`, cheapest first; the settings measured on Banking77 (benchmarks/README.md)
AUTO: list[dict[str, Any]] = [
    {
        "kind": "static",
        "hidden": 384,  # the teacher's width: Banking77 0.889 held-out agreement (width 256: 0.883)
        "max_length": 64,
        "training": {"epochs": 30, "patience": 4, "batch_size": 64, "lr": 3.0e-3, "soft_temperature": 2.0},
    },
    {
        "init": "teacher",
        "layers": 1,
        "hidden": 128,
        "max_length": 64,
        "dropout": 0.0,
        "training": {"epochs": 8, "patience": 3, "batch_size": 64, "lr": 2.0e-3, "soft_temperature": 2.0},
    },
    {
        "init": "teacher",
        "layers": 2,
        "max_length": 64,
        "training": {"epochs": 6, "patience": 3, "batch_size": 64, "lr": 5.0e-4, "soft_temperature": 2.0},
    },
]


@dataclass
class RungDir(RunDir):
    """A rung's run folder: its own stages and records, the task's pair store and dist/."""

    shared: Path = Path(".")

    pairs = property(lambda self: self.shared / "pairs.sqlite")
    dist = property(lambda self: self.shared / "dist")

    def _outputs(self, paths: tuple[Path, ...] | list[Path]) -> dict[str, str]:
        """As RunDir's, with the shared dist/'s files named relative to this folder (`../../dist/...`)."""
        files: list[Path] = []
        for p in paths:
            files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        return {Path(os.path.relpath(f, self.root)).as_posix(): sha256_file(f) for f in files}


@dataclass
class Rung:
    name: str
    spec: StudentSpec
    task: Task
    run: RungDir
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    student_agreement: float | None = None
    parameters: int | None = None
    holds: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "student": self.spec.model_dump(mode="json", exclude_defaults=True),
            "folder": str(self.run.root),
            "student_agreement": self.student_agreement,
            "parameters": self.parameters,
            "targets": self.targets,
            "holds": self.holds,
        }


def rung_name(i: int, spec: StudentSpec) -> str:
    if spec.kind == "static":
        return f"{i}-static-{spec.hidden or 256}"
    return f"{i}-transformer-{spec.layers}x{spec.hidden or 'teacher'}"


def rungs(task: Task, run: RunDir) -> list[Rung]:
    ladder = task.student.ladder
    specs = [StudentSpec.model_validate(r) for r in AUTO] if ladder == "auto" else list(ladder or [])
    out = []
    for i, spec in enumerate(specs, 1):
        name = rung_name(i, spec)
        out.append(Rung(name, spec, task.for_student(spec), RungDir(run.root / "ladder" / name, shared=run.root)))
    return out


def climb(
    task: Task, run: RunDir, targets: list[str], show: Callable[[StageResult], None] = lambda r: None
) -> tuple[Rung | None, list[Rung]]:
    """Train, compile and check the rungs in order until one holds on every target; (that rung, all tried)."""
    from . import compile_check, stages

    tried: list[Rung] = []
    chosen: Rung | None = None
    for rung in rungs(task, run):
        rung.run.validate()
        tried.append(rung)
        t, rd = rung.task, rung.run
        ctx = RunContext(task=t, run=rd)
        distilled = stages.distill(ctx)
        show(_named(distilled, rung))
        rung.student_agreement = distilled.report.agreement if distilled.report else None
        record = json.loads(rd.record("distill").read_text(encoding="utf-8"))
        rung.parameters = record.get("parameters")
        show(_named(stages.export(ctx), rung))
        rung.holds = True
        for target in targets:
            show(_named(compile_check.compile(ctx, target), rung))
            checked = compile_check.check(ctx, target)
            show(_named(checked, rung))
            assert checked.report is not None
            why = compile_check.verdict(ctx, checked.report)
            details = checked.report.details or {}
            rung.targets[target] = {
                "agreement": checked.report.agreement,
                "ci95": list(checked.report.ci95),
                "n": checked.report.n,
                "artifact_bytes": details.get("artifact_bytes"),
                "backend": details.get("backend"),
                "precision": details.get("precision"),
                "holds": why is None,
                "why_not": why,
                "latency": latency(t, rd, target),
            }
            rung.holds = rung.holds and why is None
        if rung.holds:
            chosen = rung
            break
    save(run, task, tried, chosen)
    return chosen, tried


def _named(result: StageResult, rung: Rung) -> StageResult:
    result.stage = f"{result.stage} [{rung.name}]"
    return result


def stopped_because(tried: list[Rung], chosen: Rung | None) -> str:
    if chosen is not None:
        if chosen is tried[0]:
            return f"the cheapest rung ({chosen.name}) holds on every target: the dearer rungs were not trained"
        return f"{chosen.name} is the first rung that holds on every target: the cheaper ones did not"
    return "no rung holds on every target: nothing packaged"


def save(run: RunDir, task: Task, tried: list[Rung], chosen: Rung | None) -> dict[str, Any]:
    data = {
        "schema": SCHEMA,
        "task": task.name,
        "rule": {k: getattr(task.agreement, k) for k in ("threshold", "rule", "max_drop", "min_n")},
        "rungs": [r.to_dict() for r in tried],
        "chosen": chosen.name if chosen else None,
        "stopped": stopped_because(tried, chosen),
    }
    payload = (json.dumps(data, indent=2) + "\n").encode()
    write_atomic(run.reports / "ladder.json", payload)
    if chosen is not None:
        write_atomic(chosen.run.reports / "ladder.json", payload)
    return data


def latency(task: Task, run: RunDir, target: str, texts: int = 512) -> dict[str, Any] | None:
    """End to end from raw text (tokenization included), 1 thread, on this host: texts/s at batch 32 and ms
    at batch 1 over held-out inputs; cached per artifact in reports/latency-<target>.json. None where the
    artifact does not run here (an engine built on a device)."""
    from .runtime.artifact import Artifact
    from .targets import load_profile

    profile = load_profile(target)
    meta = run.compiled(profile.name) / "artifact.json"
    artifact = Artifact.load_meta(meta)
    if artifact.build.get("device_run"):
        return None
    cache = run.reports / f"latency-{profile.name}.json"
    digest = sha256_file(artifact.path)
    if cache.is_file():
        old = json.loads(cache.read_text(encoding="utf-8"))
        if old.get("artifact_sha256") == digest:
            return old["latency"]
    try:
        measured = _measure(task, run, artifact, texts)
    except Exception as exc:  # a runtime missing here: the rung is still judged, its latency is not known
        return {"error": f"{type(exc).__name__}: {exc}"}
    write_atomic(cache, (json.dumps({"artifact_sha256": digest, "latency": measured}, indent=2) + "\n").encode())
    return measured


def _measure(task: Task, run: RunDir, artifact: Any, n: int) -> dict[str, Any]:
    import os

    from .runtime.backends import open_runner

    ctx = RunContext(task=task, run=run)
    held = ctx.heldout_texts[:n]
    encode = ctx.encoder
    b32, b1 = [], []
    with open_runner(artifact, 1) as runner:
        runner.run(encode(held[:32]))  # warm-up
        for _ in range(3):
            start = time.perf_counter()
            for i in range(0, len(held) - 31, 32):
                runner.run(encode(held[i : i + 32]))
            b32.append((len(held) // 32 * 32) / (time.perf_counter() - start))
            start = time.perf_counter()
            for text in held[:128]:
                runner.run(encode([text]))
            b1.append((time.perf_counter() - start) / min(128, len(held)) * 1e3)
    return {
        "texts_per_s_b32": round(sorted(b32)[1]),
        "ms_b1": round(sorted(b1)[1], 4),
        "threads": 1,
        "load_average": round(os.getloadavg()[0], 2),
    }


def table_rows(data: dict[str, Any]) -> list[list[str]]:
    """One row per rung and target: rung, target, agreement, size, texts/s at b32, ms at b1, holds."""
    rows = []
    for r in data["rungs"]:
        for target, t in r["targets"].items():
            lat = t.get("latency") or {}
            size = t.get("artifact_bytes")
            rows.append(
                [
                    r["name"],
                    target,
                    f"{t['agreement']:.4f}",
                    f"{size / 1e6:.1f} MB" if size else "",
                    f"{lat['texts_per_s_b32']:,}" if "texts_per_s_b32" in lat else "",
                    f"{lat['ms_b1']:.3f}" if "ms_b1" in lat else "",
                    "yes" if t["holds"] else f"no: {t['why_not']}",
                ]
            )
    return rows


HEADER = ["rung", "target", "agreement", "size", "texts/s b32", "ms b1", "holds"]


def html_section(reports: Path) -> str:
    """The ladder's table for report.html ('' when the run had no ladder)."""
    import html

    path = reports / "ladder.json"
    if not path.is_file():
        return ""
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("schema") != SCHEMA:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table_rows(data))
    return (
        f"<h2>Student ladder</h2><p>{html.escape(data['stopped'])} (rule: {html.escape(json.dumps(data['rule']))}; "
        "latency end to end from raw text, 1 thread, on the machine that ran it)</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )
