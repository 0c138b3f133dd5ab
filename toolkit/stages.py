"""The pipeline's first stages over a run directory, each skipped when its inputs have not changed:
collect (pairs.sqlite), distill (student/), export (onnx/model.onnx and the fp32 student's reference logits).
Compile and check are in compile_check.py, package in packaging.py, the whole run in pipeline.py.

Each stage takes the command's RunContext (context.py), keeps issue 13's atomic-stage rule through RunDir
(rundir.py), returns a StageResult and raises TsdEdgeError subclasses; it never prints or exits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .agreement import AgreementReport, compare
from .context import RunContext
from .digest import sha256_file
from .errors import InputError
from .rundir import fingerprint, npy_bytes, write_atomic
from .store import PairStore


@dataclass
class StageResult:
    stage: str
    skipped: bool
    summary: str
    report: AgreementReport | None = None
    data: dict[str, Any] = field(default_factory=dict)


def agreement_line(report: AgreementReport) -> str:
    if report.metric != "label":  # an embed task: its gated metric, then the other figures
        from .embedding_agreement import describe

        return describe(report)
    lo, hi = report.ci95
    gold = f", gold accuracy {report.gold_accuracy:.3f}" if report.gold_accuracy is not None else ""
    return f"agreement {report.agreement:.4f} (95% CI {lo:.3f}–{hi:.3f}, n={report.n}){gold}"


# -- collect ---------------------------------------------------------------------------------------


def collect(ctx: RunContext, *, limit: int | None = None, dry_run: bool = False) -> StageResult:
    from .collect import collect as collect_pairs
    from .relevance import summary

    task, run, teacher = ctx.task, ctx.run, ctx.teacher
    with PairStore(run.pairs) as store:
        res = collect_pairs(task, store, teacher, limit=limit, dry_run=dry_run)
        ctx.refresh()  # new answers, new relevance
        relevance = summary(store, teacher.fingerprint)
        held, report = ctx.heldout, None
        if not dry_run and task.kind == "classify":  # the teacher against the data's gold labels
            gold = [p for p in held if p.gold]
            report = (
                compare(
                    "teacher",
                    [p.label for p in held],
                    [p.label or "" for p in held],  # itself (compare refuses a missing label in the first list)
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


def distill(ctx: RunContext, *, force: bool = False) -> StageResult:
    # under torchrun / accelerate every process runs this; only rank 0 writes (docs/scale.md)
    from .distributed import barrier, broadcast, is_main

    task, run, teacher = ctx.task, ctx.run, ctx.teacher
    with PairStore(run.pairs) as store:
        if not store.answered(teacher.fingerprint):
            raise InputError(f"no teacher answers in {run.pairs}: run `tsd-edge collect` first")
        if store.collect_record(teacher.fingerprint) is None:
            raise InputError(
                f"{run.pairs}: the last collection stopped before it finished (relevance is not scored): "
                "run `tsd-edge collect` again"
            )
        if is_main():
            if store.unscored(teacher.fingerprint):
                # answers stored since the last collection (the hybrid's deferred pairs, toolkit/hybrid.py) are
                # scored by the task's rule first: relevance applies to them as to collected ones
                from .relevance import Relevance

                Relevance(task, store, teacher).refresh(teacher.fingerprint)
            else:
                store.mark_relevance(teacher.fingerprint, task.relevance.threshold)
        barrier()
        ctx.refresh()  # relevance marked again: the held-out pairs may differ
        # the threshold is not part of the key: changing it re-judges the student, it does not retrain it
        key = fingerprint(task.settings("student", "training", "teacher", "split"), store.digest(teacher.fingerprint))
        fresh = run.up_to_date("distill", key, run.student / "model.safetensors", run.report("student"))
        if not force and broadcast(fresh):
            report = broadcast(AgreementReport.load(run.report("student")) if is_main() else None)
            report.threshold, report.rule = task.agreement.threshold, task.agreement.rule
            if is_main():
                report.save(run.report("student"))
            return StageResult("distill", True, agreement_line(report), report)
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
    ctx.refresh()  # a new student: new tokenizer and labels
    summary = (
        f"{agreement_line(result.report)}; {result.parameters / 1e6:.2f}M parameters, "
        f"best epoch {result.best_epoch}/{result.epochs_run}, {result.seconds:.0f} s"
    )
    return StageResult("distill", False, summary, result.report, {"parameters": result.parameters})


# -- export ---------------------------------------------------------------------------------------


def export(ctx: RunContext, *, force: bool = False) -> StageResult:
    task, run = ctx.task, ctx.run
    if not (run.student / "model.safetensors").is_file():
        raise InputError(f"no student in {run.student}: run `tsd-edge distill` first")
    run.require("distill", f"the student in {run.student}", "run `tsd-edge distill`")
    key = fingerprint(sha256_file(run.student / "model.safetensors"), sha256_file(run.student / "tokenizer.json"))
    if not force and run.up_to_date("export", key, run.onnx, run.report("onnx")):
        report = AgreementReport.load(run.report("onnx"))
        report.threshold, report.rule = task.agreement.threshold, task.agreement.rule
        report.save(run.report("onnx"))
        return StageResult("export", True, agreement_line(report), report)
    from .exporters.onnx import export_onnx
    from .runtime.backends.onnxruntime import OnnxRuntimeRunner
    from .runtime.infer import predict_logits
    from .student import StudentRunner

    run.invalidate("export")
    texts, encode = ctx.eval_texts, ctx.encoder
    samples = [encode(texts[:1]), encode(texts[1:9]), encode(texts[9:73])]
    with run.staged(run.onnx.parent) as folder:
        onnx = folder / run.onnx.name
        validation = export_onnx(run.student, onnx, [s for s in samples if len(s["input_ids"])])
        # the fp32 student's logits: the reference every compiled artifact is held to
        reference = predict_logits(StudentRunner.load(run.student), encode, texts)
        with OnnxRuntimeRunner(onnx, threads=None) as runner:
            logits = predict_logits(runner, encode, texts)
        size = onnx.stat().st_size
    write_atomic(run.student_logits, npy_bytes(reference))
    report = ctx.report("onnx", logits, reference)
    report.details |= {"validation": validation.to_dict(), "opset": 17, "artifact_bytes": size}
    report.save(run.report("onnx"))
    outputs = [run.onnx.parent, run.student_logits]  # onnx.json: re-judged when skipped
    run.finish("export", key, outputs, onnx_sha256=sha256_file(run.onnx))
    return StageResult(
        "export", False, f"{agreement_line(report)}; matches PyTorch to {validation.max_abs_diff:.1e}", report
    )
