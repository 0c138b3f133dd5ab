"""Compile and check: build a target's artifact where it will run, then score it against the teacher.

    compile(ctx, target, device=None)   one route: the host's part (calibration; `Backend.lower` and the agreement
                                        predicted from the lowered ONNX), then the build at the place it runs:
                                        `Here()` or `OnDevice(ssh)` (probe, upload, build, run the held-out inputs
                                        there, fetch the artifact and the logits). compiled/<target>/ changes only
                                        once all of it is there.
    check(ctx, target)                  one route: the held-out logits from where the artifact ran (computed here
                                        now, or the device's, fetched and hash-checked at compile time), scored.
    verdict(ctx, report)                why the artifact may not ship (toolkit/verdict.py), or None.

Backends are reached only through `exporters.get_backend(profile.backend)`; a backend that refuses to build on
this machine (`Backend.refusal`) raises NotBuildableHere, which `pipeline.run` reports and goes on.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .agreement import AgreementReport
from .context import RunContext
from .digest import sha256_file
from .errors import InputError, NotBuildableHere
from .rundir import fingerprint, npy_bytes, write_atomic
from .stages import StageResult, agreement_line
from .store import PairStore
from .targets import Profile, load_profile
from .verdict import Rule, judge

if TYPE_CHECKING:
    from .device import SshDevice
    from .exporters import Backend
    from .runtime.artifact import Artifact


@dataclass
class Job:
    """One compile: the context, the target's profile and backend, and the key of the ONNX + profile."""

    ctx: RunContext
    profile: Profile
    backend: Backend
    key: str
    force: bool

    @property
    def out(self) -> Path:
        return self.ctx.run.compiled(self.profile.name)

    def calibration(self) -> list[dict[str, np.ndarray]]:
        """INT8 calibration batches from the task's own relevant training inputs (never the held-out ones)."""
        if self.profile.precision != "int8":
            return []
        with PairStore(self.ctx.run.pairs) as store:
            texts = [p.input for p in store.pairs(self.ctx.teacher_fingerprint, split="train", relevant=True)]
        texts = texts[: self.profile.calibration.samples]  # ordered by input hash: a fixed, unbiased sample
        encode = self.ctx.encoder
        # one padded length for every batch: the percentile and entropy calibrators stack all batches
        width = max(encode.lengths(texts), default=1)
        return [encode(texts[i : i + 16], pad_to=width) for i in range(0, len(texts), 16)]

    def predict(self, calibration: list[dict[str, np.ndarray]]) -> AgreementReport | None:
        """Where the backend lowers the ONNX (`Backend.lower`): run the lowered ONNX in ONNX Runtime here, the
        agreement the artifact's check must later confirm (reports/<target>-predicted.json); else None."""
        from .runtime.backends.onnxruntime import OnnxRuntimeRunner
        from .runtime.infer import predict_logits

        run, name = self.ctx.run, self.profile.name
        stage = f"{name}-predicted"
        if not self.force and run.up_to_date(f"lower-{name}", self.key, run.report(stage)):
            return AgreementReport.load(run.report(stage))
        run.invalidate(f"lower-{name}")
        lowered = self.backend.lower(run.onnx, self.profile, calibration, self.out)
        if lowered is None:
            return None
        with OnnxRuntimeRunner(lowered.path, threads=None) as runner:
            logits = predict_logits(runner, self.ctx.encoder, self.ctx.eval_texts)
        report = self.ctx.report(stage, logits, self.ctx.reference_logits())
        report.details |= {
            "predicted": True,
            "runtime": "onnxruntime on the host",
            "precision": lowered.precision,
            "lowered_onnx": lowered.path.name,
            **lowered.details,
        }
        report.save(run.report(stage))
        outputs = [lowered.path, run.report(stage)]
        run.finish(f"lower-{name}", self.key, outputs, lowered_sha256=sha256_file(lowered.path))
        return report


class Place(Protocol):
    """Where an artifact is built and runs."""

    def record_key(self, key: str) -> str: ...

    def build(self, job: Job) -> tuple[Artifact, list[Path]]:
        """Build into job.out (replacing it whole), saving artifact.json; the artifact and its output files."""
        ...


class Here:
    """This machine: the backend builds here (unless it refuses: NotBuildableHere), the check runs here."""

    def record_key(self, key: str) -> str:
        return key

    def build(self, job: Job) -> tuple[Artifact, list[Path]]:
        run, profile = job.ctx.run, job.profile
        calibration = job.calibration()
        predicted = job.predict(calibration)
        refusal = job.backend.refusal(profile)
        if refusal:
            said = (
                f"; host-predicted agreement of the lowered {profile.precision} ONNX {predicted.agreement:.4f} "
                f"({run.report(predicted.stage)})"
                if predicted
                else ""
            )
            raise NotBuildableHere(
                f"{profile.name}: {refusal}{said}; build on the device: from here with "
                f"`tsd-edge compile --target {profile.name} --device ssh://user@host`, or copy {run.root} there and "
                f"run `tsd-edge compile --target {profile.name}` (or by hand: {job.out / 'trtexec.txt'})"
            )
        # the host's lowered ONNX and timing cache stay beside the new artifact
        keep = (predicted.details["lowered_onnx"], "timing.cache") if predicted is not None else ()
        run.invalidate(f"compile-{profile.name}")
        with run.staged(job.out, carry=keep) as folder:
            artifact = job.backend.build(run.onnx, profile, calibration, folder)
            artifact.build["profile"] = profile.name
            if predicted is not None:
                artifact.build["predicted_agreement"] = predicted.agreement
            artifact.save_meta(folder / "artifact.json")
        artifact.path = job.out / artifact.path.name
        return artifact, artifact_files(artifact)


@dataclass
class OnDevice:
    """A device over SSH (tsd_edge.device): probed against the profile, then the host's part (lowering and its
    predicted agreement, or ONNX Runtime's portable build) is uploaded, built there, and the held-out inputs
    are run there; the artifact and the logits come back, and `check` scores those logits."""

    device: SshDevice

    def record_key(self, key: str) -> str:
        return fingerprint(key, self.device.url)

    def build(self, job: Job) -> tuple[Artifact, list[Path]]:
        from .device import build_on_device
        from .device.ssh import import_asyncssh
        from .runtime.artifact import Artifact
        from .runtime.tokenizer import length_batches

        import_asyncssh()  # before any work: without it, say which extra to install
        ctx, profile, out = job.ctx, job.profile, job.out
        texts, encode = ctx.eval_texts, ctx.encoder
        batches = [(idx, encode([texts[i] for i in idx])) for idx in length_batches(encode.lengths(texts), 16)]
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{profile.name}-device-", dir=out.parent))

        def prepare() -> tuple[Path, dict[str, Any]]:
            """The host's part, run once the device fits: the model to upload and the host's build record."""
            calibration = job.calibration()
            predicted = job.predict(calibration)
            if predicted is not None:  # tensorrt: the lowered ONNX goes to the device, which builds the engine
                lowered = out / predicted.details["lowered_onnx"]
                onnx_sha = sha256_file(ctx.run.onnx)
                return lowered, {"predicted_agreement": predicted.agreement, "source_onnx_sha256": onnx_sha}
            host = job.backend.build(ctx.run.onnx, profile, calibration, staging / "host")  # a portable ONNX
            return host.path, host.build

        try:
            need = 4 * ctx.run.onnx.stat().st_size + (64 << 20)
            cache = out / "timing.cache"
            got = build_on_device(
                self.device, profile, prepare, batches, len(texts), staging, need_bytes=need, timing_cache=cache
            )
            ctx.run.invalidate(f"compile-{profile.name}")  # all came back: from here compiled/<target> changes
            out.mkdir(parents=True, exist_ok=True)
            for path in [got.artifact, *got.extra_files]:
                shutil.move(str(path), out / path.name)
            np.save(out / "device_logits.npy", got.logits)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        device_run = {
            "device": got.device.url,
            "where": got.where,
            "runtime": got.run.get("runtime"),
            "providers": got.run.get("providers"),
            "logits": "device_logits.npy",
            "logits_sha256": sha256_file(out / "device_logits.npy"),
            "heldout_sha256": heldout_digest(ctx),
            "inputs": got.run.get("inputs"),
            "run_seconds": got.run.get("seconds"),
            "seconds": got.seconds,
        }
        build = {**got.host_build, **got.build, "profile": profile.name, "device_run": device_run}
        artifact = Artifact(profile.backend, out / got.artifact.name, profile.precision, build=build)
        artifact.save_meta(out / "artifact.json")
        return artifact, [*artifact_files(artifact), out / "device_logits.npy"]


def compile(ctx: RunContext, target: str, *, force: bool = False, device: SshDevice | None = None) -> StageResult:
    """Build the target's artifact here, or with `device` on that machine over SSH."""
    from .exporters import get_backend
    from .runtime.artifact import Artifact

    run, profile = ctx.run, load_profile(target)
    if not run.onnx.is_file():
        raise InputError(f"no ONNX model in {run.onnx}: run `tsd-edge export` first")
    run.require("export", f"the ONNX model {run.onnx}", "run `tsd-edge export`")
    place: Place = Here() if device is None else OnDevice(device)
    key = fingerprint(sha256_file(run.onnx), profile.model_dump(mode="json"))
    record_key = place.record_key(key)
    stage, meta = f"compile-{profile.name}", run.compiled(profile.name) / "artifact.json"
    if not force and run.up_to_date(stage, record_key, meta):
        return StageResult(f"compile {profile.name}", True, _artifact_line(Artifact.load_meta(meta)))
    artifact, outputs = place.build(Job(ctx, profile, get_backend(profile.backend), key, force))
    run.finish(stage, record_key, outputs, artifact_sha256=sha256_file(artifact.path))
    line = _artifact_line(artifact)
    if device is not None:
        report = ctx.report(profile.name, _device_logits(ctx, profile, artifact), ctx.reference_logits())
        there = f"{report.agreement:.4f} (n={report.n}; `tsd-edge check` records it)"
        line += f"; agreement of the logits computed there {there}"
    return StageResult(f"compile {profile.name}", False, line)


def artifact_files(artifact: Artifact) -> list[Path]:
    folder = artifact.path.parent
    return [folder / "artifact.json", artifact.path, *(folder / name for name in artifact.extra_files)]


def _artifact_line(artifact: Artifact) -> str:
    size = artifact.path.stat().st_size / 1e6
    where = artifact.build.get("device_run", {}).get("device")
    return f"{artifact.backend} {artifact.precision}: {artifact.path} ({size:.1f} MB)" + (
        f"; built and run on {where}" if where else ""
    )


def heldout_digest(ctx: RunContext) -> str:
    """Identifies the held-out inputs and their tokenization: logits computed on a device belong to it."""
    return fingerprint(ctx.eval_texts, sha256_file(ctx.run.student / "tokenizer.json"))


# -- check -----------------------------------------------------------------------------------------


def check(ctx: RunContext, target: str, *, force: bool = False) -> StageResult:
    run, profile = ctx.run, load_profile(target)
    artifact, key = compiled(ctx, profile)
    stage = f"check-{profile.name}"
    if not force and run.up_to_date(stage, key, run.report(profile.name)):
        report = AgreementReport.load(run.report(profile.name))
        return StageResult(f"check {profile.name}", True, _check_line(report, ctx), report)
    device_run = artifact.build.get("device_run")
    if device_run:  # it runs on the device: the logits computed there at compile time
        logits = _device_logits(ctx, profile, artifact)
        where = {k: device_run[k] for k in ("runtime", "providers", "device", "where")}
        where["ran_on"] = f"the device, over SSH ({device_run['device']}): logits computed there at compile time"
    else:
        logits, where = _logits_here(ctx, profile, artifact)
    report = ctx.report(profile.name, logits, ctx.reference_logits())
    report.details |= {
        "backend": artifact.backend,
        "precision": artifact.precision,
        "artifact_bytes": sum(
            (artifact.path.parent / f).stat().st_size for f in [artifact.path.name, *artifact.extra_files]
        ),
        **where,
    }
    if "predicted_agreement" in artifact.build:  # what the host predicted from the lowered ONNX, to compare
        report.details["predicted_agreement"] = artifact.build["predicted_agreement"]
    run.invalidate(stage)
    report.save(run.report(profile.name))
    # what package calibrates the deferral rule on: the same answers, not a second run
    write_atomic(run.check_logits(profile.name), npy_bytes(logits))
    run.finish(stage, key, [run.report(profile.name), run.check_logits(profile.name)], passed=report.passed)
    line = _check_line(report, ctx) + (f"; logits computed on {device_run['device']}" if device_run else "")
    return StageResult(f"check {profile.name}", False, line, report)


def _logits_here(ctx: RunContext, profile: Profile, artifact: Artifact) -> tuple[np.ndarray, dict[str, Any]]:
    from .runtime.backends import open_runner
    from .runtime.infer import predict_logits

    with open_runner(artifact, profile.threads) as runner:
        logits = predict_logits(runner, ctx.encoder, ctx.eval_texts)
        where: dict[str, Any] = {"ran_on": "this host"}
        if providers := getattr(runner, "providers", None):
            where["providers"] = providers
    return logits, where


def compiled(ctx: RunContext, profile: Profile) -> tuple[Artifact, str]:
    """The finished compiled artifact of `profile`, and the key a check of it is recorded under."""
    from .runtime.artifact import Artifact

    run = ctx.run
    meta = run.compiled(profile.name) / "artifact.json"
    if not meta.is_file():
        raise InputError(f"no compiled artifact for {profile.name}: run `tsd-edge compile --target {profile.name}`")
    again = f"run `tsd-edge compile --target {profile.name}`"
    run.require(f"compile-{profile.name}", f"the compiled artifact in {meta.parent}", again)
    artifact = Artifact.load_meta(meta)
    with PairStore(run.pairs) as store:
        digest = store.digest(ctx.teacher_fingerprint)
    key = fingerprint(sha256_file(artifact.path), digest, ctx.task.settings("agreement"))
    device_run = artifact.build.get("device_run")
    if device_run:  # built on a device over SSH: score the logits computed there
        key = fingerprint(key, device_run["logits_sha256"])
    return artifact, key


def _device_logits(ctx: RunContext, profile: Profile, artifact: Artifact) -> np.ndarray:
    device_run = artifact.build["device_run"]
    path = artifact.path.parent / device_run["logits"]
    again = f"run `tsd-edge compile --target {profile.name} --device {device_run['device']} --force`"
    if not path.is_file() or sha256_file(path) != device_run["logits_sha256"]:
        raise InputError(f"{path}: the logits computed on the device are missing or changed: {again}")
    if heldout_digest(ctx) != device_run["heldout_sha256"]:
        raise InputError(f"{profile.name}: the held-out inputs changed since the device ran them: {again}")
    return np.load(path)


def _check_line(report: AgreementReport, ctx: RunContext) -> str:
    fid = report.fidelity or {}
    same, delta = ("top-1 neighbour", "output") if report.metric != "label" else ("prediction", "logit")
    return (
        f"{agreement_line(report)}; threshold {ctx.task.agreement.threshold}; "
        f"same {same} as the fp32 student on {fid.get('prediction_match', float('nan')):.4f}, "
        f"max |Δ {delta}| {fid.get('max_abs_dlogit', float('nan')):.3f}"
    )


def rule_of(ctx: RunContext) -> Rule:
    """The task's agreement rule, with the fp32 student's agreement that `max_drop` is measured from."""
    spec, student = ctx.task.agreement, ctx.run.report("student")
    return Rule(
        threshold=spec.threshold,
        rule=spec.rule,
        min_n=spec.min_n,
        max_drop=spec.max_drop,
        student_agreement=AgreementReport.load(student).agreement if student.is_file() else None,
    )


def verdict(ctx: RunContext, report: AgreementReport) -> str | None:
    """Why the compiled artifact may not ship, or None when it may (the rule the gate re-applies)."""
    return judge(report, rule_of(ctx))
