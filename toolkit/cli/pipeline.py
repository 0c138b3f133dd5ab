"""Pipeline commands: collect, distill, export, compile, check, package, and run for all of them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .app import PIPELINE, Force, Identity, KnownHosts, Target, TaskArg, Workdir, app, console, context, guard, show


@app.command(rich_help_panel=PIPELINE)
def collect(
    task: TaskArg,
    workdir: Workdir = None,
    limit: Annotated[int | None, typer.Option(help="ask for at most N new answers")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only say how many teacher calls would be made")] = False,
) -> None:
    """Feed the teacher every task input it has not answered and store each call-and-response pair."""

    def body() -> None:
        from ..pipeline import require_complete
        from ..stages import collect as collect_stage

        result = collect_stage(context(task, workdir), limit=limit, dry_run=dry_run)
        show(result)
        if not dry_run:
            require_complete(result, limit)

    guard(body)


@app.command(rich_help_panel=PIPELINE)
def distill(task: TaskArg, workdir: Workdir = None, force: Force = False) -> None:
    """Train the student on the relevant pairs and report its held-out agreement with the teacher.
    Several processes or GPUs: `torchrun --nproc_per_node N -m tsd_edge distill TASK` (docs/scale.md)."""

    def body() -> None:
        from ..distributed import is_main
        from ..stages import distill as distill_stage

        result = distill_stage(context(task, workdir), force=force)
        if is_main():  # under torchrun every process gets the same result: say it once
            show(result)

    guard(body)


@app.command(rich_help_panel=PIPELINE)
def export(task: TaskArg, workdir: Workdir = None, force: Force = False) -> None:
    """Export the student to ONNX (opset 17, dynamic axes) and validate it against PyTorch."""

    def body() -> None:
        from ..stages import export as export_stage

        show(export_stage(context(task, workdir), force=force))

    guard(body)


@app.command("compile", rich_help_panel=PIPELINE)
def compile_(
    task: TaskArg,
    target: Target = "cpu-x86",
    workdir: Workdir = None,
    force: Force = False,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            metavar="ssh://user@host[:port]",
            help="build and run the held-out inputs on this machine over SSH (needs python3, numpy and the "
            "runtime there; pip install 'tsd-edge\\[device]' here)",
        ),
    ] = None,
    identity: Identity = None,
    known_hosts: KnownHosts = None,
) -> None:
    """Build the artifact for a target (ONNX Runtime, OpenVINO, TensorRT). For a Jetson the ONNX is lowered and
    its agreement predicted here; the engine itself is built on the device (exit 2 on a host, saying why):
    `--device ssh://user@host` builds it there and runs the held-out inputs on it."""

    def body() -> None:
        from ..compile_check import compile as compile_stage

        remote = None
        if device is not None:
            from ..device import SshDevice

            remote = SshDevice.parse(device, identity, known_hosts)
        show(compile_stage(context(task, workdir), target, force=force, device=remote))

    guard(body)


@app.command(rich_help_panel=PIPELINE)
def check(task: TaskArg, target: Target = "cpu-x86", workdir: Workdir = None, force: Force = False) -> None:
    """Re-check agreement with the teacher on the compiled artifact (exit 1 when it does not hold)."""

    def body() -> int:
        from ..compile_check import check as check_stage
        from ..compile_check import verdict

        ctx = context(task, workdir)
        result = check_stage(ctx, target, force=force)
        show(result)
        return 0 if result.report is not None and verdict(ctx, result.report) is None else 1

    guard(body)


@app.command(rich_help_panel=PIPELINE)
def package(
    task: TaskArg,
    target: Target = "cpu-x86",
    workdir: Workdir = None,
    sign: Annotated[Path | None, typer.Option(help="sign the manifest with this ed25519 private key")] = None,
) -> None:
    """Write dist/<task>-<target>.tsdpkg, only if the compiled agreement holds (else exit 3)."""

    def body() -> None:
        from ..packaging import package as package_stage

        show(package_stage(context(task, workdir), target, sign=sign))

    guard(body)


@app.command(rich_help_panel=PIPELINE)
def run(
    task: TaskArg,
    workdir: Workdir = None,
    target: Annotated[list[str] | None, typer.Option("--target", "-t", help="targets [default: the task's]")] = None,
) -> None:
    """Collect, distill, export, compile, check and package, skipping stages whose inputs did not change."""

    def body() -> int:
        from ..pipeline import run as run_all

        ctx = context(task, workdir)
        if ctx.task.student.ladder is not None:  # the student ladder (toolkit/ladder.py)
            from .. import stages
            from ..pipeline import require_complete
            from ..targets import load_profile

            for name in target or []:
                load_profile(name)
            collected = stages.collect(ctx)
            show(collected)
            require_complete(collected)
            return climb_and_ship(ctx, list(target or ctx.task.targets))
        return finish(run_all(ctx, targets=target, on_stage=show, on_target=show_target), ctx.run)

    guard(body)


def show_target(result: Any) -> None:
    """A target that was not packaged: why, in one line (its stages were shown as they finished)."""
    from rich.markup import escape

    if result.error is not None:
        message = escape(" ".join(str(result.error).split()))
        console().print(f"[bold red]{result.target:<18} {result.outcome}[/]  {message}", soft_wrap=True)


def finish(result: Any, run_dir: Any) -> int:
    """The stage table, the report and the packages of a run; its exit code (pipeline.RunResult.exit_code)."""
    stage_table(run_dir)
    console().print(f"report: {result.report}")
    for p in result.packages:
        console().print(f"package: [bold]{p}[/]\nnext: tsd-edge gate {p}")
    console().print(f"[dim]{result.seconds:.0f} s in all[/]")
    return int(result.exit_code)


def climb_and_ship(ctx: Any, targets: list[str]) -> int:
    """Train the ladder's rungs from the cheapest up; ship the first that holds (exit 3 when none does)."""
    import shutil

    from rich.table import Table

    from ..context import RunContext
    from ..errors import RefusedError
    from ..ladder import HEADER, climb, table_rows
    from ..pipeline import ship
    from ..report import write_report
    from ..textfile import read_json

    chosen, _ = climb(ctx.task, ctx.run, targets, show)
    data = read_json(ctx.run.reports / "ladder.json", "run `tsd-edge run` again")
    table = Table(title=f"student ladder: {data['stopped']}", title_justify="left")
    for col in HEADER:
        table.add_column(col, justify="left" if col in ("rung", "target", "holds") else "right")
    for row in table_rows(data):
        table.add_row(*row)
    console().print(table)
    if chosen is None:
        console().print(f"report: {write_report(ctx.task.name, ctx.run.reports, ctx.run.root / 'report.html')}")
        return RefusedError.exit_code
    rung = RunContext(task=chosen.task, run=chosen.run)
    code = finish(ship(rung, targets, on_stage=show, on_target=show_target), chosen.run)
    shutil.copyfile(chosen.run.root / "report.html", ctx.run.root / "report.html")
    return code


def stage_table(run_dir: Any) -> None:
    from rich.table import Table

    from ..report import load_reports

    table = Table(title="agreement with the teacher, held-out inputs", title_justify="left")
    for col in ("stage", "n", "agreement", "95% CI", "gold acc.", "vs fp32 student", "holds"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for r in load_reports(run_dir.reports):
        fid = r.fidelity["prediction_match"] if r.fidelity else None
        itself = r.stage == "teacher"  # the teacher's row is there for its accuracy on the gold labels
        table.add_row(
            r.stage,
            str(r.n),
            "—" if itself else f"{r.agreement:.4f}",
            "" if itself else f"{r.ci95[0]:.3f}–{r.ci95[1]:.3f}",
            "" if r.gold_accuracy is None else f"{r.gold_accuracy:.3f}",
            "" if fid is None else f"{fid:.4f}",
            "" if r.threshold is None else ("yes" if r.passed else "[red]no[/]"),
        )
    console().print(table)
