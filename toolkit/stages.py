"""The pipeline's stages over a run directory, each skipped when its inputs have not changed.

    runs/<task>/pairs.sqlite            collect
    runs/<task>/student/                distill
    runs/<task>/onnx/model.onnx         export
    runs/<task>/compiled/<target>/      compile
    runs/<task>/reports/*.json          every stage's agreement report
    runs/<task>/dist/*.tsdpkg           package
    runs/<task>/records/<stage>.json    the hash of each stage's inputs and settings

A stage whose record matches the hash of its current inputs is skipped. Stages return results
and raise TsdEdgeError subclasses; they never print or exit (that is the CLI's job).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .agreement import AgreementReport, compare
from .digest import sha256_file
from .errors import InputError, RefusedError
from .store import Pair, PairStore
from .targets import Profile, load_profile
from .task import Task
from .textfile import load_json_or_none
from .verdict import Rule, judge

if TYPE_CHECKING:
    from .device import SshDevice


@dataclass
class RunDir:
    """The run directory. Each stage builds its output in a temporary folder next to it (`staged`) and
    renames it into place only when finished; its record is removed first (`invalidate`) and written
    last (`finish`) with the SHA-256 of every output file. A stage without a record that matches its
    outputs is not done, and no stage reads another's output without one (`require`)."""

    root: Path

    @classmethod
    def for_task(cls, task: Task, workdir: Path | None) -> RunDir:
        run = cls(workdir or Path("runs") / task.name)
        run.validate()
        return run

    pairs = property(lambda self: self.root / "pairs.sqlite")
    student = property(lambda self: self.root / "student")
    onnx = property(lambda self: self.root / "onnx" / "model.onnx")
    reports = property(lambda self: self.root / "reports")
    dist = property(lambda self: self.root / "dist")

    def compiled(self, target: str) -> Path:
        return self.root / "compiled" / target

    def report(self, stage: str) -> Path:
        return self.reports / f"{stage}.json"

    def record(self, stage: str) -> Path:
        return self.root / "records" / f"{stage}.json"

    def validate(self) -> None:
        """A file where the run directory keeps a folder (or the reverse) is bad input, said before any work."""
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"--workdir {self.root} is a file, not a folder: give a folder (or leave it out)")
        folders = [
            self.student,
            self.onnx.parent,
            self.reports,
            self.dist,
            self.root / "records",
            self.root / "compiled",
        ]
        compiled = self.root / "compiled"
        if compiled.is_dir():
            folders += [p for p in compiled.iterdir() if not p.name.startswith(".")]
        for folder in folders:
            if folder.exists() and not folder.is_dir():
                raise InputError(
                    f"{folder}: a file where tsd-edge keeps a folder; move it away or use another --workdir"
                )
        if self.pairs.exists() and not self.pairs.is_file():
            raise InputError(f"{self.pairs}: a folder where the pair store should be; move it away")

    # -- records ------------------------------------------------------------------------------------

    def _outputs(self, paths: tuple[Path, ...] | list[Path]) -> dict[str, str]:
        files = []
        for p in paths:
            files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        return {f.relative_to(self.root).as_posix(): sha256_file(f) for f in files}

    def _intact(self, rec: Any) -> bool:
        outputs = rec.get("outputs") if isinstance(rec, dict) else None
        if not isinstance(outputs, dict) or not outputs:
            return False
        for name, digest in outputs.items():
            path = self.root / str(name)
            if not path.is_file() or sha256_file(path) != digest:
                return False
        return True

    def up_to_date(self, stage: str, key: str, *outputs: Path) -> bool:
        """The stage's record matches `key` and every output file it recorded is there, unchanged."""
        rec = load_json_or_none(self.record(stage))
        if not isinstance(rec, dict) or rec.get("key") != key or not all(p.exists() for p in outputs):
            return False
        return self._intact(rec)

    def require(self, stage: str, what: str, fix: str, key: str | None = None) -> None:
        """Refuse to read `stage`'s output unless its record is there, matches `key` (if given) and its outputs."""
        rec = load_json_or_none(self.record(stage))
        if not isinstance(rec, dict) or (key is not None and rec.get("key") != key) or not self._intact(rec):
            raise InputError(f"{what} is missing, out of date or half-made (no matching {self.record(stage)}): {fix}")

    def invalidate(self, stage: str) -> None:
        """Before a stage touches its output: from here until `finish` it is not done."""
        self.record(stage).unlink(missing_ok=True)

    def finish(self, stage: str, key: str, outputs: list[Path] | None = None, **info: Any) -> None:
        """The stage's record, written last: its key and the SHA-256 of each of its output files."""
        rec = self.record(stage)
        rec.parent.mkdir(parents=True, exist_ok=True)
        data = {"key": key, "finished": time.time(), "outputs": self._outputs(outputs or []), **info}
        write_atomic(rec, (json.dumps(data, indent=2) + "\n").encode())

    # -- building an output beside the live one ------------------------------------------------------

    @contextmanager
    def staged(self, target: Path, *, carry: tuple[str, ...] = (), active: bool = True) -> Iterator[Path]:
        """A fresh temporary folder next to `target`, renamed onto it when the block ends without an error
        (removed when it raises or the process dies: the next `staged` of that target clears leftovers).
        `carry` names files of the live folder the new one keeps; inactive (other DDP ranks): `target`."""
        if not active:
            yield target
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        for left in target.parent.glob(f".{target.name}.*-*"):  # leftovers of a killed stage
            shutil.rmtree(left, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        try:
            for name in carry:
                if (target / name).is_file():
                    shutil.copy2(target / name, tmp / name)
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file whole or not at all: a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


@dataclass
class StageResult:
    stage: str
    skipped: bool
    summary: str
    report: AgreementReport | None = None
    data: dict[str, Any] = field(default_factory=dict)


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([__version__, *parts], sort_keys=True, default=str).encode()).hexdigest()


def _teacher(task: Task) -> Any:
    from .teachers import load_teacher

    return load_teacher(task)


def _heldout(store: PairStore, fingerprint_: str) -> list[Pair]:
    return list(store.pairs(fingerprint_, split="heldout", relevant=True))


# -- collect ---------------------------------------------------------------------------------------


def collect(task: Task, run: RunDir, *, limit: int | None = None, dry_run: bool = False) -> StageResult:
    from .collect import collect as collect_pairs
    from .relevance import summary

    teacher = _teacher(task)
    with PairStore(run.pairs) as store:
        res = collect_pairs(task, store, teacher, limit=limit, dry_run=dry_run)
        relevance = summary(store, teacher.fingerprint)
        held = _heldout(store, teacher.fingerprint)
        if not dry_run:
            gold = [p for p in held if p.gold]
            report = (
                compare(
                    "teacher",
                    [p.label for p in held],
                    [p.label for p in held],  # type: ignore[misc]
                    gold=[p.gold for p in held],
                )
                if held
                else None
            )
            if report:
                report.details = {"gold_n": len(gold)}
                report.save(run.report("teacher"))
    if dry_run:
        return StageResult(
            "collect",
            True,
            f"{res.pending} teacher calls would be made ({res.already} of {res.inputs} inputs already answered)",
            data={"pending": res.pending},
        )
    dropped = ", ".join(f"{r.source}: kept {r.kept}/{r.total}" for r in relevance)
    asked = (
        f"{res.asked} asked ({res.rate:.0f}/s), {res.already} already answered, {res.rejected} rejected"
        if res.asked
        else f"all {res.inputs} inputs already answered"
    )
    if res.asked and res.asked + res.already < res.inputs:
        asked += f", {res.inputs - res.asked - res.already} not answered yet"
    if res.failed:
        asked += f" ({res.failed} failed, e.g. {res.failures[0]}: run collect again to retry them)"
    if res.stopped:
        asked += f"; stopped: {res.stopped}"
    rule = res.rule.describe() if res.rule else f"relevance ≥ {task.relevance.threshold}"
    summary_ = f"{asked}; relevance {rule}: {dropped}"
    data = {
        "relevance": [r.__dict__ for r in relevance],
        "inputs": res.inputs,
        "unanswered": res.inputs - res.already - res.asked,
        "failed": res.failed,
        "stopped": res.stopped,
    }
    return StageResult("collect", res.asked == 0, summary_, report, data)


# -- distill ---------------------------------------------------------------------------------------


def distill(task: Task, run: RunDir, *, force: bool = False) -> StageResult:
    # under torchrun / accelerate every process runs this; only rank 0 writes (docs/scale.md)
    from .distributed import barrier, broadcast, is_main

    teacher = _teacher(task)
    with PairStore(run.pairs) as store:
        if not store.answered(teacher.fingerprint):
            raise InputError(f"no teacher answers in {run.pairs}: run `tsd-edge collect` first")
        if store.collect_record(teacher.fingerprint) is None:
            raise InputError(
                f"{run.pairs}: the last collection stopped before it finished (relevance is not scored): "
                "run `tsd-edge collect` again"
            )
        if is_main():
            store.mark_relevance(teacher.fingerprint, task.relevance.threshold)
        barrier()
        # the threshold is not part of the key: changing it re-judges the student, it does not retrain it
        key = fingerprint(task.settings("student", "training", "teacher", "split"), store.digest(teacher.fingerprint))
        fresh = run.up_to_date("distill", key, run.student / "model.safetensors", run.report("student"))
        if not force and broadcast(fresh):
            report: AgreementReport = broadcast(AgreementReport.load(run.report("student")) if is_main() else None)
            report.threshold, report.rule = task.agreement.threshold, task.agreement.rule
            if is_main():
                report.save(run.report("student"))
            return StageResult("distill", True, _agreement_line(report), report)
        from .distill import distill as train

        if is_main():
            run.invalidate("distill")
        # trained in a folder beside student/, renamed onto it once the best epoch is saved
        with run.staged(run.student, active=is_main()) as out:
            result = train(task, store, teacher, out)
    if is_main():
        result.report.details["artifact_bytes"] = (run.student / "model.safetensors").stat().st_size
        result.report.save(run.report("student"))
        # reports/student.json is left out of the hashes: a skipped distill re-judges it against the threshold
        run.finish("distill", key, [run.student], parameters=result.parameters)
    barrier()
    summary = (
        f"{_agreement_line(result.report)}; {result.parameters / 1e6:.2f}M parameters, "
        f"best epoch {result.best_epoch}/{result.epochs_run}, {result.seconds:.0f} s"
    )
    return StageResult("distill", False, summary, result.report, {"parameters": result.parameters})


def _agreement_line(report: AgreementReport) -> str:
    lo, hi = report.ci95
    gold = f", gold accuracy {report.gold_accuracy:.3f}" if report.gold_accuracy is not None else ""
    return f"agreement {report.agreement:.4f} (95% CI {lo:.3f}–{hi:.3f}, n={report.n}){gold}"


# -- export ----------------------------------------------------------------------------------------


def _encoder(run: RunDir, task: Task) -> Any:
    from .runtime.tokenizer import TextEncoder

    return TextEncoder(run.student / "tokenizer.json", task.student.max_length)


def _labels(run: RunDir) -> list[str]:
    return json.loads((run.student / "labels.json").read_text(encoding="utf-8"))


def export(task: Task, run: RunDir, *, force: bool = False) -> StageResult:
    if not (run.student / "model.safetensors").is_file():
        raise InputError(f"no student in {run.student}: run `tsd-edge distill` first")
    run.require("distill", f"the student in {run.student}", "run `tsd-edge distill`")
    key = fingerprint(sha256_file(run.student / "model.safetensors"), sha256_file(run.student / "tokenizer.json"))
    if not force and run.up_to_date("export", key, run.onnx, run.report("onnx")):
        report = AgreementReport.load(run.report("onnx"))
        report.threshold, report.rule = task.agreement.threshold, task.agreement.rule
        report.save(run.report("onnx"))
        return StageResult("export", True, _agreement_line(report), report)
    from .exporters.onnx import export_onnx
    from .runtime.backends.onnxruntime import OnnxRuntimeRunner
    from .runtime.infer import predict_logits
    from .student import StudentRunner

    with PairStore(run.pairs) as store:
        held = _heldout(store, _teacher(task).fingerprint)
    run.invalidate("export")
    texts = [p.input for p in held]
    encode = _encoder(run, task)
    samples = [encode(texts[:1]), encode(texts[1:9]), encode(texts[9:73])]
    with run.staged(run.onnx.parent) as folder:
        onnx = folder / run.onnx.name
        validation = export_onnx(run.student, onnx, [s for s in samples if len(s["input_ids"])])
        # the fp32 student's logits: the reference every compiled artifact is held to
        reference = predict_logits(StudentRunner.load(run.student), encode, texts)
        with OnnxRuntimeRunner(onnx, threads=None) as runner:
            logits = predict_logits(runner, encode, texts)
        size = onnx.stat().st_size
    buf = io.BytesIO()
    np.save(buf, reference)
    write_atomic(run.reports / "student_logits.npy", buf.getvalue())
    report = _report("onnx", task, run, held, logits, reference)
    report.details = {"validation": validation.to_dict(), "opset": 17, "artifact_bytes": size}
    report.save(run.report("onnx"))
    outputs = [run.onnx.parent, run.reports / "student_logits.npy"]  # onnx.json: re-judged when skipped
    run.finish("export", key, outputs, onnx_sha256=sha256_file(run.onnx))
    return StageResult(
        "export", False, f"{_agreement_line(report)}; matches PyTorch to {validation.max_abs_diff:.1e}", report
    )


def _report(
    stage: str, task: Task, run: RunDir, held: list[Pair], logits: np.ndarray, reference: np.ndarray | None
) -> AgreementReport:
    labels = _labels(run)
    return compare(
        stage,
        [p.label for p in held],
        [labels[i] for i in logits.argmax(1)],  # type: ignore[misc]
        threshold=task.agreement.threshold,
        rule=task.agreement.rule,
        texts=[p.input for p in held],
        gold=[p.gold for p in held],
        logits=logits,
        reference_logits=reference,
    )


# -- compile and check -----------------------------------------------------------------------------


def compile(
    task: Task, run: RunDir, target: str, *, force: bool = False, device: SshDevice | None = None
) -> StageResult:
    """Build the target's artifact here, or with `device` on that machine over SSH (`_compile_on_device`)."""
    from .exporters import get_backend
    from .runtime.artifact import Artifact

    profile = load_profile(target)
    if not run.onnx.is_file():
        raise InputError(f"no ONNX model in {run.onnx}: run `tsd-edge export` first")
    run.require("export", f"the ONNX model {run.onnx}", "run `tsd-edge export`")
    out = run.compiled(profile.name)
    key = fingerprint(sha256_file(run.onnx), profile.model_dump(mode="json"))
    record_key = key if device is None else fingerprint(key, device.url)
    if not force and run.up_to_date(f"compile-{profile.name}", record_key, out / "artifact.json"):
        artifact = Artifact.load_meta(out / "artifact.json")
        return StageResult(f"compile {profile.name}", True, _artifact_line(artifact))
    backend = get_backend(profile.backend)
    if device is not None:
        return _compile_on_device(task, run, profile, backend, device, key, record_key, force)
    calibration = _calibration(task, run, profile) if profile.precision == "int8" else []
    predicted = _predict(task, run, profile, backend, calibration, key, force) if hasattr(backend, "lower") else None
    refusal = backend.refusal(profile) if hasattr(backend, "refusal") else None
    if refusal:
        assert predicted is not None
        raise InputError(
            f"{profile.name}: {refusal}; host-predicted agreement of the lowered {profile.precision} ONNX "
            f"{predicted.agreement:.4f} ({run.report(predicted.stage)}); build on the device: from here with "
            f"`tsd-edge compile --target {profile.name} --device ssh://user@host`, or copy {run.root} there and run "
            f"`tsd-edge compile --target {profile.name}` (or by hand: {out / 'trtexec.txt'})"
        )
    # the host's lowered ONNX and timing cache stay beside the new artifact
    keep = (predicted.details["lowered_onnx"], "timing.cache") if predicted is not None else ()
    run.invalidate(f"compile-{profile.name}")
    with run.staged(out, carry=keep) as folder:
        artifact = backend.build(run.onnx, profile, calibration, folder)
        artifact.build["profile"] = profile.name
        if predicted is not None:
            artifact.build["predicted_agreement"] = predicted.agreement
        artifact.save_meta(folder / "artifact.json")
    artifact.path = out / artifact.path.name
    run.finish(f"compile-{profile.name}", key, _artifact_files(artifact), artifact_sha256=sha256_file(artifact.path))
    return StageResult(f"compile {profile.name}", False, _artifact_line(artifact))


def _artifact_files(artifact: Any) -> list[Path]:
    folder = artifact.path.parent
    return [folder / "artifact.json", artifact.path, *(folder / name for name in artifact.extra_files)]


def _artifact_line(artifact: Any) -> str:
    size = artifact.path.stat().st_size / 1e6
    where = artifact.build.get("device_run", {}).get("device")
    return f"{artifact.backend} {artifact.precision}: {artifact.path} ({size:.1f} MB)" + (
        f"; built and run on {where}" if where else ""
    )


def _heldout_digest(run: RunDir, texts: list[str]) -> str:
    """Identifies the held-out inputs and their tokenization: logits computed on a device belong to it."""
    return fingerprint(texts, sha256_file(run.student / "tokenizer.json"))


def _compile_on_device(
    task: Task, run: RunDir, profile: Profile, backend: Any, device: SshDevice, key: str, record_key: str, force: bool
) -> StageResult:
    """Build on `device` over SSH (tsd_edge.device): probe it against the profile, then do the host's part
    (lowering and its predicted agreement, or ONNX Runtime's host build), upload, build and run the held-out
    inputs there, and fetch the artifact and the logits. The logits computed on the device are what `check`
    scores. Nothing under compiled/<target>/ changes unless all of it came back."""
    import shutil
    import tempfile

    from .device import build_on_device
    from .device.ssh import import_asyncssh
    from .runtime.artifact import Artifact
    from .runtime.tokenizer import length_batches

    import_asyncssh()  # before any work: without it, say which extra to install
    out = run.compiled(profile.name)
    with PairStore(run.pairs) as store:
        held = _heldout(store, _teacher(task).fingerprint)
    texts = [p.input for p in held]
    encode = _encoder(run, task)
    batches = [(idx, encode([texts[i] for i in idx])) for idx in length_batches(encode.lengths(texts), 16)]
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{profile.name}-device-", dir=out.parent))

    def prepare() -> tuple[Path, dict[str, Any]]:
        """The host's part, run once the device fits: the model to upload and the host's build record."""
        calibration = _calibration(task, run, profile) if profile.precision == "int8" else []
        if hasattr(backend, "lower"):  # tensorrt: the lowered ONNX goes to the device, which builds the engine
            predicted = _predict(task, run, profile, backend, calibration, key, force)
            lowered = out / predicted.details["lowered_onnx"]
            return lowered, {"predicted_agreement": predicted.agreement, "source_onnx_sha256": sha256_file(run.onnx)}
        host = backend.build(run.onnx, profile, calibration, staging / "host")  # onnxruntime: a portable ONNX
        return host.path, host.build

    try:
        need = 4 * run.onnx.stat().st_size + (64 << 20)
        got = build_on_device(
            device, profile, prepare, batches, len(texts), staging, need_bytes=need, timing_cache=out / "timing.cache"
        )
        run.invalidate(f"compile-{profile.name}")  # all came back: from here compiled/<target> changes
        out.mkdir(parents=True, exist_ok=True)
        for path in [got.artifact, *got.extra_files]:
            shutil.move(str(path), out / path.name)
        np.save(out / "device_logits.npy", got.logits)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    artifact = Artifact(
        backend=profile.backend,
        path=out / got.artifact.name,
        precision=profile.precision,
        build={
            **got.host_build,
            **got.build,
            "profile": profile.name,
            "device_run": {
                "device": got.device.url,
                "where": got.where,
                "runtime": got.run.get("runtime"),
                "providers": got.run.get("providers"),
                "logits": "device_logits.npy",
                "logits_sha256": sha256_file(out / "device_logits.npy"),
                "heldout_sha256": _heldout_digest(run, texts),
                "inputs": got.run.get("inputs"),
                "run_seconds": got.run.get("seconds"),
                "seconds": got.seconds,
            },
        },
    )
    artifact.save_meta(out / "artifact.json")
    outputs = [*_artifact_files(artifact), out / "device_logits.npy"]
    run.finish(f"compile-{profile.name}", record_key, outputs, artifact_sha256=sha256_file(artifact.path))
    report = _report(profile.name, task, run, held, got.logits, np.load(run.reports / "student_logits.npy"))
    return StageResult(
        f"compile {profile.name}",
        False,
        f"{_artifact_line(artifact)}; agreement of the logits computed there {report.agreement:.4f} "
        f"(n={report.n}; `tsd-edge check` records it)",
    )


def _calibration(task: Task, run: RunDir, profile: Profile) -> list[dict[str, np.ndarray]]:
    """Calibration batches from the task's own relevant training inputs (never the held-out ones)."""
    with PairStore(run.pairs) as store:
        texts = [p.input for p in store.pairs(_teacher(task).fingerprint, split="train", relevant=True)]
    texts = texts[: profile.calibration.samples]  # pairs come ordered by input hash: a fixed, unbiased sample
    encode = _encoder(run, task)
    # one padded length for every batch: the percentile and entropy calibrators stack all batches
    width = max(encode.lengths(texts), default=1)
    return [encode(texts[i : i + 16], pad_to=width) for i in range(0, len(texts), 16)]


def _predict(
    task: Task, run: RunDir, profile: Profile, backend: Any, calibration: list, key: str, force: bool
) -> AgreementReport:
    """Lower the ONNX to the target's precision and run it in ONNX Runtime here: the agreement the device
    check must later confirm (reports/<target>-predicted.json)."""
    from .runtime.backends.onnxruntime import OnnxRuntimeRunner
    from .runtime.infer import predict_logits

    stage = f"{profile.name}-predicted"
    if not force and run.up_to_date(f"lower-{profile.name}", key, run.report(stage)):
        return AgreementReport.load(run.report(stage))
    run.invalidate(f"lower-{profile.name}")
    lowered = backend.lower(run.onnx, profile, calibration, run.compiled(profile.name))
    with PairStore(run.pairs) as store:
        held = _heldout(store, _teacher(task).fingerprint)
    with OnnxRuntimeRunner(lowered.path, threads=None) as runner:
        logits = predict_logits(runner, _encoder(run, task), [p.input for p in held])
    report = _report(stage, task, run, held, logits, np.load(run.reports / "student_logits.npy"))
    report.details = {
        "predicted": True,
        "runtime": "onnxruntime on the host",
        "precision": lowered.precision,
        "lowered_onnx": lowered.path.name,
        **lowered.details,
    }
    report.save(run.report(stage))
    run.finish(
        f"lower-{profile.name}", key, [lowered.path, run.report(stage)], lowered_sha256=sha256_file(lowered.path)
    )
    return report


def check(task: Task, run: RunDir, target: str, *, force: bool = False) -> StageResult:
    from .runtime.backends import open_runner
    from .runtime.infer import predict_logits

    profile = load_profile(target)
    artifact, held, key = _check_inputs(task, run, profile)
    stage = f"check-{profile.name}"
    device_run = artifact.build.get("device_run")
    if not force and run.up_to_date(stage, key, run.report(profile.name)):
        report = AgreementReport.load(run.report(profile.name))
        return StageResult(f"check {profile.name}", True, _check_line(report, task), report)
    texts = [p.input for p in held]
    where: dict[str, Any]
    if device_run:
        logits = _device_logits(run, profile, artifact, texts, device_run)
        where = {k: device_run[k] for k in ("runtime", "providers", "device", "where")}
        where["ran_on"] = f"the device, over SSH ({device_run['device']}): logits computed there at compile time"
    else:
        with open_runner(artifact, profile.threads) as runner:
            logits = predict_logits(runner, _encoder(run, task), texts)
            where = {"ran_on": "this host"}
            if getattr(runner, "providers", None):
                where["providers"] = runner.providers
    reference = np.load(run.reports / "student_logits.npy")
    report = _report(profile.name, task, run, held, logits, reference)
    report.details = {
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
    run.finish(stage, key, [run.report(profile.name)], passed=report.passed)
    line = _check_line(report, task) + (f"; logits computed on {device_run['device']}" if device_run else "")
    return StageResult(f"check {profile.name}", False, line, report)


def _check_inputs(task: Task, run: RunDir, profile: Profile) -> tuple[Any, list[Pair], str]:
    """The finished compiled artifact, the held-out pairs, and the key a check of them is recorded under."""
    from .runtime.artifact import Artifact

    meta = run.compiled(profile.name) / "artifact.json"
    if not meta.is_file():
        raise InputError(f"no compiled artifact for {profile.name}: run `tsd-edge compile --target {profile.name}`")
    again = f"run `tsd-edge compile --target {profile.name}`"
    run.require(f"compile-{profile.name}", f"the compiled artifact in {meta.parent}", again)
    artifact = Artifact.load_meta(meta)
    with PairStore(run.pairs) as store:
        teacher_fp = _teacher(task).fingerprint
        held = _heldout(store, teacher_fp)
        key = fingerprint(sha256_file(artifact.path), store.digest(teacher_fp), task.settings("agreement"))
    device_run = artifact.build.get("device_run")
    if device_run:  # built on a device over SSH: score the logits computed there
        key = fingerprint(key, device_run["logits_sha256"])
    return artifact, held, key


def _device_logits(run: RunDir, profile: Profile, artifact: Any, texts: list[str], device_run: dict) -> np.ndarray:
    path = artifact.path.parent / device_run["logits"]
    again = f"run `tsd-edge compile --target {profile.name} --device {device_run['device']} --force`"
    if not path.is_file() or sha256_file(path) != device_run["logits_sha256"]:
        raise InputError(f"{path}: the logits computed on the device are missing or changed: {again}")
    if _heldout_digest(run, texts) != device_run["heldout_sha256"]:
        raise InputError(f"{profile.name}: the held-out inputs changed since the device ran them: {again}")
    return np.load(path)


def _check_line(report: AgreementReport, task: Task) -> str:
    fid = report.fidelity or {}
    return (
        f"{_agreement_line(report)}; threshold {task.agreement.threshold}; "
        f"matches the fp32 student on {fid.get('prediction_match', float('nan')):.4f}, "
        f"max |Δ logit| {fid.get('max_abs_dlogit', float('nan')):.3f}"
    )


def rule_of(task: Task, run: RunDir) -> Rule:
    """The task's agreement rule, with the fp32 student's agreement that `max_drop` is measured from."""
    spec = task.agreement
    student = run.report("student")
    return Rule(
        threshold=spec.threshold,
        rule=spec.rule,
        min_n=spec.min_n,
        max_drop=spec.max_drop,
        student_agreement=AgreementReport.load(student).agreement if student.is_file() else None,
    )


def verdict(task: Task, run: RunDir, report: AgreementReport) -> str | None:
    """Why the compiled artifact may not ship, or None when it may (the rule the gate re-applies)."""
    return judge(report, rule_of(task, run))


# -- package ---------------------------------------------------------------------------------------


def package(task: Task, run: RunDir, target: str, *, sign: Path | None = None) -> StageResult:
    from .runtime.package import versions, write_package

    profile = load_profile(target)
    stage, out = f"package-{profile.name}", run.dist / f"{task.name}-{profile.name}.tsdpkg"
    run.invalidate(stage)
    if not run.report(profile.name).is_file():
        raise InputError(f"no check for {profile.name}: run `tsd-edge check --target {profile.name}` first")
    artifact, _, check_key = _check_inputs(task, run, profile)
    again = f"run `tsd-edge check --target {profile.name}`"
    run.require(f"check-{profile.name}", f"the check of {profile.name}", again, key=check_key)
    report = AgreementReport.load(run.report(profile.name))
    rule = rule_of(task, run)
    why = judge(report, rule)
    if why:
        stale = _set_aside(out)
        moved = f"; the earlier package was moved aside to {stale}" if stale else ""
        raise RefusedError(f"not packaged: {why}{moved}")
    teacher_fp = _teacher(task).fingerprint
    with PairStore(run.pairs) as store:
        held = _heldout(store, teacher_fp)
    heldout = "".join(json.dumps({"input": p.input, "teacher": p.label, "gold": p.gold}) + "\n" for p in held)
    deferral = _deferral(task, run, artifact, held) if task.deploy else None
    files = {
        artifact.path.name: artifact.path.read_bytes(),
        **{name: (artifact.path.parent / name).read_bytes() for name in artifact.extra_files},
        "artifact.json": (run.compiled(profile.name) / "artifact.json").read_bytes(),
        "tokenizer.json": (run.student / "tokenizer.json").read_bytes(),
        "labels.json": (run.student / "labels.json").read_bytes(),
        "profile.json": json.dumps(profile.model_dump(mode="json"), indent=2).encode(),
        "heldout.jsonl": heldout.encode(),
        "report.json": run.report(profile.name).read_bytes(),
        "MODEL_CARD.md": _model_card(task, profile, report, artifact).encode(),
    }
    if deferral is not None:
        files["deferral.json"] = json.dumps(deferral.to_dict(), indent=2).encode()
    manifest = {
        "task": task.name,
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


def _deferral(task: Task, run: RunDir, artifact: Any, held: list[Pair]) -> Any:
    """Calibrate the hybrid system's threshold on the compiled artifact's own held-out answers, run through
    the runtime that will run it on the device (toolkit/deferral.py); saved as reports/deferral/<target>.json."""
    from .deferral import calibrate
    from .runtime.backends import open_runner
    from .runtime.infer import predict_logits

    assert task.deploy is not None
    labels = _labels(run)
    texts = [p.input for p in held]
    with open_runner(artifact, None) as runner:
        logits = predict_logits(runner, _encoder(run, task), texts)
    spec = task.deploy
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
    path = run.reports / "deferral" / f"{artifact.build.get('profile', artifact.backend)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(deferral.to_dict(), indent=2) + "\n", encoding="utf-8")
    return deferral


def _deferral_line(d: Any) -> str:
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


def _model_card(task: Task, profile: Profile, report: AgreementReport, artifact: Any) -> str:
    lo, hi = report.ci95
    return (
        f"# {task.name} — {profile.name}\n\n"
        f"A task-specific student distilled by tsd-edge {__version__}, compiled with {artifact.backend} "
        f"({artifact.precision}) for {profile.description}.\n\n"
        f"- Labels: {len(task.label_names)}\n"
        f"- Agreement with the teacher on {report.n} held-out inputs: {report.agreement:.4f} "
        f"(95% CI {lo:.3f}–{hi:.3f}); threshold {task.agreement.threshold}\n"
        f"- Re-check with: `tsd-edge gate {task.name}-{profile.name}.tsdpkg`\n"
    )
