"""The package stage: dist/<task>-<target>.tsdpkg, written only when the compiled artifact's check holds.

A package the task now refuses is moved aside (`.stale`), so no `*.tsdpkg` glob finds it. With a `deploy:`
section the hybrid system's deferral rule is calibrated here on the artifact's own held-out answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .agreement import AgreementReport
from .compile_check import compiled, rule_of
from .context import RunContext
from .digest import sha256_file
from .errors import InputError, RefusedError
from .objectives import Embed
from .rundir import npy_bytes
from .stages import StageResult
from .targets import Profile, load_profile
from .task import Task
from .textfile import load_json_or_none
from .verdict import judge

if TYPE_CHECKING:
    from .deferral import Deferral
    from .runtime.artifact import Artifact


def package(ctx: RunContext, target: str, *, sign: Path | None = None) -> StageResult:
    task, run = ctx.task, ctx.run
    from .runtime.package import versions, write_package

    profile = load_profile(target)
    stage, out = f"package-{profile.name}", run.dist / f"{task.name}-{profile.name}.tsdpkg"
    run.invalidate(stage)
    if not run.report(profile.name).is_file():
        raise InputError(f"no check for {profile.name}: run `tsd-edge check --target {profile.name}` first")
    artifact, check_key = compiled(ctx, profile)
    again = f"run `tsd-edge check --target {profile.name}`"
    run.require(f"check-{profile.name}", f"the check of {profile.name}", again, key=check_key)
    report = AgreementReport.load(run.report(profile.name))
    rule = rule_of(ctx)
    why = judge(report, rule)
    if why:
        stale = _set_aside(out)
        moved = f"; the earlier package was moved aside to {stale}" if stale else ""
        raise RefusedError(f"not packaged: {why}{moved}")
    teacher_fp = ctx.teacher_fingerprint
    deferral = _deferral(ctx, artifact, profile.name) if task.deploy else None
    files = {
        **_evidence(ctx),
        artifact.path.name: artifact.path.read_bytes(),
        **{name: (artifact.path.parent / name).read_bytes() for name in artifact.extra_files},
        "artifact.json": (run.compiled(profile.name) / "artifact.json").read_bytes(),
        "tokenizer.json": (run.student / "tokenizer.json").read_bytes(),
        "labels.json": (run.student / "labels.json").read_bytes(),
        "profile.json": json.dumps(profile.model_dump(mode="json"), indent=2).encode(),
        "report.json": run.report(profile.name).read_bytes(),
        "MODEL_CARD.md": _model_card(task, profile, report, artifact).encode(),
    }
    if deferral is not None:
        files["deferral.json"] = json.dumps(deferral.to_dict(), indent=2).encode()
    manifest = {
        "task": task.name,
        "kind": task.kind,
        "target": profile.name,
        "backend": artifact.backend,
        "precision": artifact.precision,
        "artifact": artifact.path.name,
        "max_length": task.student.max_length,
        "threshold": task.agreement.threshold,
        "rule": task.agreement.rule,
        "verdict": rule.to_dict(),  # everything the gate needs to judge a re-run as this package was judged
        "agreement": report.agreement,
        "n": report.n,
        "teacher": teacher_fp,
        "build": artifact.build,  # runtime version, source ONNX hash, calibration hash, ...
        "report_sha256": sha256_file(run.report(profile.name)),
        "versions": {"tsd-edge": __version__, **versions("onnxruntime", "onnx", "torch", "transformers", "tokenizers")},
    }
    if isinstance(ctx.objective, Embed):  # what the gate's re-run is scored by (toolkit/embedding_agreement.py)
        spec, dim = task.agreement, int(ctx.objective.held_teacher.shape[1])
        manifest.update(metric=task.metric, k=spec.k, floor=spec.floor, dim=dim)
    if deferral is not None:  # what the runtime applies, and what the gate re-checks
        manifest["deferral"] = {
            "measure": deferral.measure,
            "threshold": deferral.threshold,
            "target": deferral.target,
            "confidence": deferral.confidence,
            "max_coverage_drop": task.deploy.max_coverage_drop if task.deploy else 0.05,
        }
    out = write_package(out, files, manifest, sign_key=sign)
    run.finish(stage, check_key, [out])
    line = f"{out} ({out.stat().st_size / 1e6:.1f} MB)"
    if deferral is not None:
        line += "; " + _deferral_line(deferral)
    return StageResult(f"package {profile.name}", False, line, data={"path": str(out)})


def _evidence(ctx: RunContext) -> dict[str, bytes]:
    """What the gate re-runs the artifact on and judges it by: the held-out inputs with the teacher's answers
    (classify: its labels; embed: its embeddings of them and of the corpus, as float32 .npy)."""
    objective = ctx.objective
    if not isinstance(objective, Embed):
        rows = [{"input": p.input, "teacher": p.label, "gold": p.gold} for p in ctx.heldout]
        return {"heldout.jsonl": _jsonl(rows)}
    return {
        "heldout.jsonl": _jsonl([{"input": p.input} for p in objective.held]),
        "heldout_teacher.npy": npy_bytes(objective.held_teacher),
        "corpus.jsonl": _jsonl([{"input": p.input} for p in objective.corpus]),
        "corpus_teacher.npy": npy_bytes(objective.corpus_teacher),
    }


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _deferral(ctx: RunContext, artifact: Artifact, target: str) -> Deferral:
    """Calibrate the hybrid system's threshold on the compiled artifact's own held-out answers: the logits `check`
    computed (where the artifact runs: here, or on the device) and recorded, whose record `package` has just
    verified; the artifact is run here again only for a check recorded before check kept them. Toolkit/deferral.py;
    saved as reports/deferral/<target>.json."""
    from .deferral import calibrate

    spec, labels, held, texts = ctx.task.deploy, ctx.labels, ctx.heldout, ctx.heldout_texts
    if spec is None:
        raise InputError("the task has no `deploy:` section: nothing to calibrate a deferral rule for")
    logits = _checked_logits(ctx, target, len(texts))
    if logits is None:
        from .runtime.backends import open_runner
        from .runtime.infer import predict_logits

        with open_runner(artifact, None) as runner:
            logits = predict_logits(runner, ctx.encoder, texts)
    deferral = calibrate(
        logits,
        [labels[i] for i in logits.argmax(1)],
        [p.label for p in held],  # type: ignore[misc]
        texts,
        target=spec.answered_agreement,
        confidence=spec.confidence,
        min_coverage=spec.min_coverage,
        measure=spec.measure,
    )
    path = ctx.run.reports / "deferral" / f"{artifact.build.get('profile', artifact.backend)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(deferral.to_dict(), indent=2) + "\n", encoding="utf-8")
    return deferral


def _checked_logits(ctx: RunContext, target: str, n: int) -> np.ndarray | None:
    """The held-out logits check recorded for `target` (its record lists them with their SHA-256, checked by
    `RunDir.require` before this), or None when that check's record does not."""
    run = ctx.run
    path = run.check_logits(target)
    record = load_json_or_none(run.record(f"check-{target}"))
    outputs = record.get("outputs") if isinstance(record, dict) else None
    if not isinstance(outputs, dict) or path.relative_to(run.root).as_posix() not in outputs or not path.is_file():
        return None
    logits = np.load(path)
    return logits if logits.ndim == 2 and len(logits) == n else None


def _deferral_line(d: Deferral) -> str:
    if d.threshold is None:
        return (
            f"deferral: no threshold reaches answered agreement {d.target} with {d.confidence:.0%} confidence "
            f"(best lower bound {d.bound:.3f}): every input would go to the teacher"
        )
    ev = d.evaluation
    useful = "" if d.useful else f" — under deploy.min_coverage={d.min_coverage}: not useful as a hybrid"
    return (
        f"deferral: answers when {d.measure} ≥ {d.threshold:.4f}; on held-out inputs it was not chosen on: "
        f"coverage {ev['coverage']:.3f}, answered agreement {ev['answered_agreement'] or 0:.4f} "
        f"(n={ev['n']}; target {d.target}, {d.confidence:.0%} bound on the calibration half {d.bound:.4f}){useful}"
    )


def _set_aside(package: Path) -> Path | None:
    """A package the task now refuses leaves dist/: renamed to <name>.tsdpkg.stale (no `*.tsdpkg` glob
    finds it), replacing an older stale one."""
    if not package.is_file():
        return None
    stale = package.with_name(package.name + ".stale")
    package.replace(stale)
    return stale


def _model_card(task: Task, profile: Profile, report: AgreementReport, artifact: Artifact) -> str:
    lo, hi = report.ci95
    metric = "" if report.metric == "label" else f" ({report.metric})"
    return (
        f"# {task.name} — {profile.name}\n\n"
        f"A task-specific student distilled by tsd-edge {__version__}, compiled with {artifact.backend} "
        f"({artifact.precision}) for {profile.description}.\n\n"
        + (
            f"- Labels: {len(task.label_names)}\n"
            if task.kind == "classify"
            else "- Kind: embed (sentence embeddings)\n"
        )
        + f"- Agreement with the teacher{metric} on {report.n} held-out inputs: {report.agreement:.4f} "
        f"(95% CI {lo:.3f}–{hi:.3f}); threshold {task.agreement.threshold}\n"
        f"- Re-check with: `tsd-edge gate {task.name}-{profile.name}.tsdpkg`\n"
    )
