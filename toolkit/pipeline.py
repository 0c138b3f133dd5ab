"""The whole run as a library call: `run(task)` collects, distills, exports, then `ship`s each target (compile,
check, package) and writes the report. It returns what happened; it prints nothing (the CLI does, through
`on_stage`, called with each StageResult as it is done).

A target that cannot be built on this machine (a Jetson engine on a host: NotBuildableHere; a runtime that is
not installed: RuntimeMissingError) or whose agreement does not hold (RefusedError) is reported in its
TargetResult, and the next target goes on. Any other error stops the run, as it stops a single stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .compile_check import check, compile
from .context import RunContext
from .errors import IncompleteError, NotBuildableHere, RefusedError, RuntimeMissingError, TsdEdgeError
from .packaging import package
from .stages import StageResult, collect, distill, export
from .task import Task

OnStage = Callable[[StageResult], None]
OnTarget = Callable[["TargetResult"], None]

# what each per-target error means for the run
OUTCOMES: dict[type[TsdEdgeError], str] = {
    RefusedError: "refused",
    NotBuildableHere: "not built here",
    RuntimeMissingError: "runtime missing",
}


@dataclass
class TargetResult:
    target: str
    stages: list[StageResult] = field(default_factory=list)
    package: Path | None = None
    outcome: str = "packaged"  # or one of OUTCOMES' values
    error: TsdEdgeError | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.error is None else self.error.exit_code


@dataclass
class RunResult:
    stages: list[StageResult] = field(default_factory=list)  # collect, distill, export (those that ran)
    targets: list[TargetResult] = field(default_factory=list)
    report: Path | None = None
    seconds: float = 0.0

    @property
    def packages(self) -> list[Path]:
        return [t.package for t in self.targets if t.package is not None]

    @property
    def exit_code(self) -> int:
        """0 when every target was packaged; 3 when one was refused; else the first unbuilt target's code."""
        codes = [t.exit_code for t in self.targets if t.exit_code]
        return 3 if 3 in codes else (codes[0] if codes else 0)


def require_complete(result: StageResult, limit: int | None = None) -> None:
    """IncompleteError (exit 5) when collect left inputs unanswered, unless `limit` asked for only some."""
    left, why = result.data.get("unanswered", 0), result.data.get("stopped")
    if left and (limit is None or result.data.get("failed") or why):
        cause = f"stopped: {why}" if why else f"{result.data.get('failed', 0)} failed after their retries"
        raise IncompleteError(
            f"{left} of {result.data['inputs']} inputs are still unanswered ({cause}): run `tsd-edge collect` "
            "again to ask for them before distilling"
        )


def run(
    task: Task | RunContext,
    workdir: Path | None = None,
    *,
    targets: Sequence[str] | None = None,
    on_stage: OnStage | None = None,
    on_target: OnTarget | None = None,
) -> RunResult:
    """Collect, distill, export, then compile, check and package each target (default: the task's), skipping
    stages whose inputs did not change; write the report. Raises what a stage raises before the targets."""
    from .targets import load_profile

    ctx = task if isinstance(task, RunContext) else RunContext.open(task, workdir)
    for name in targets or []:  # the task file's own targets were checked when it was loaded
        load_profile(name)
    start, say = time.perf_counter(), on_stage or (lambda _: None)
    done: list[StageResult] = []
    for step in (collect, distill, export):
        done.append(step(ctx))
        say(done[-1])
        if step is collect:
            require_complete(done[-1])
    result = ship(ctx, targets or ctx.task.targets, on_stage=on_stage, on_target=on_target)
    result.stages = done + result.stages
    result.seconds = time.perf_counter() - start
    return result


def ship(
    ctx: RunContext,
    targets: Sequence[str],
    *,
    on_stage: OnStage | None = None,
    on_target: OnTarget | None = None,
) -> RunResult:
    """Compile, check and package each target (one that cannot be built here or is refused is reported and the
    next goes on), then write the report. Used by `run` and by `auto` once its threshold holds."""
    from .report import write_report

    start, say = time.perf_counter(), on_stage or (lambda _: None)
    result = RunResult()
    for name in targets:
        target = TargetResult(name)
        result.targets.append(target)
        try:
            for step in (compile, check):
                target.stages.append(step(ctx, name))
                say(target.stages[-1])
            packaged = package(ctx, name)
            target.stages.append(packaged)
            say(packaged)
            target.package = Path(packaged.data["path"])
        except tuple(OUTCOMES) as exc:
            target.outcome = next(what for kind, what in OUTCOMES.items() if isinstance(exc, kind))
            target.error = exc
        if on_target is not None:
            on_target(target)
    result.report = write_report(ctx.task.name, ctx.run.reports, ctx.run.root / "report.html")
    result.seconds = time.perf_counter() - start
    return result
