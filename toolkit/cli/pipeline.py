"""Pipeline commands: collect, distill, export, compile, check, package, and run for all of them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .app import PIPELINE, Force, Identity, KnownHosts, Target, TaskArg, Workdir, app, console, guard, load, show


@app.command(rich_help_panel=PIPELINE)
def collect(
    task: TaskArg,
    workdir: Workdir = None,
    limit: Annotated[int | None, typer.Option(help="ask for at most N new answers")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only say how many teacher calls would be made")] = False,
) -> None:
    """Feed the teacher every task input it has not answered and store each call-and-response pair."""

    def body() -> None:
        from .. import stages

        t, run = load(task, workdir)
        result = stages.collect(t, run, limit=limit, dry_run=dry_run)
        show(result)
        if not dry_run:
            incomplete(result, limit)

    guard(body)


def incomplete(result: Any, limit: int | None) -> None:
    """Exit 5 (IncompleteError) when inputs are still unanswered, unless `--limit` asked for only some."""
    from ..errors import IncompleteError

    left, why = result.data.get("unanswered", 0), result.data.get("stopped")
    if left and (limit is None or result.data.get("failed") or why):
        cause = f"stopped: {why}" if why else f"{result.data.get('failed', 0)} failed after their retries"
        raise IncompleteError(
            f"{left} of {result.data['inputs']} inputs are still unanswered ({cause}): run `tsd-edge collect` "
            "again to ask for them before distilling"
        )


@app.command(rich_help_panel=PIPELINE)
def distill(task: TaskArg, workdir: Workdir = None, force: Force = False) -> None:
    """Train the student on the relevant pairs and report its held-out agreement with the teacher.
    Several processes or GPUs: `torchrun --nproc_per_node N -m tsd_edge distill TASK` (docs/scale.md)."""

    def body() -> None:
        from .. import stages
        from ..distributed import is_main

        t, run = load(task, workdir)
        result = stages.distill(t, run, force=force)
        if is_main():  # under torchrun every process gets the same result: say it once
            show(result)

    guard(body)


@app.command(rich_help_panel=PIPELINE)
def export(task: TaskArg, workdir: Workdir = None, force: Force = False) -> None:
    """Export the student to ONNX (opset 17, dynamic axes) and validate it against PyTorch."""

    def body() -> None:
        from .. import stages

        t, run = load(task, workdir)
        show(stages.export(t, run, force=force))

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
        from .. import stages

        remote = None
        if device is not None:
            from ..device import SshDevice

            remote = SshDevice.parse(device, identity, known_hosts)
        t, run = load(task, workdir)
        show(stages.compile(t, run, target, force=force, device=remote))

    guard(body)


@app.command(rich_help_panel=PIPELINE)
def check(task: TaskArg, target: Target = "cpu-x86", workdir: Workdir = None, force: Force = False) -> None:
    """Re-check agreement with the teacher on the compiled artifact (exit 1 when it does not hold)."""

    def body() -> int:
        from .. import stages

        t, run = load(task, workdir)
        result = stages.check(t, run, target, force=force)
        show(result)
        return 0 if stages.verdict(t, run, result.report) is None else 1

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
        from .. import stages

        t, run = load(task, workdir)
        show(stages.package(t, run, target, sign=sign))

    guard(body)


@app.command(rich_help_panel=PIPELINE)
def run(
    task: TaskArg,
    workdir: Workdir = None,
    target: Annotated[list[str] | None, typer.Option("--target", "-t", help="targets [default: the task's]")] = None,
) -> None:
    """Collect, distill, export, compile, check and package, skipping stages whose inputs did not change."""

    def body() -> int:
        from .. import stages
        from ..targets import load_profile

        t, run_dir = load(task, workdir)
        for name in target or []:  # the task file's own targets were checked when it was loaded
            load_profile(name)
        start = time.perf_counter()
        collected = stages.collect(t, run_dir)
        show(collected)
        incomplete(collected, None)
        if t.student.ladder is not None:  # the student ladder (toolkit/ladder.py)
            return climb_and_ship(t, run_dir, target or t.targets, start)
        for step in (stages.distill, stages.export):
            show(step(t, run_dir))
        return ship(t, run_dir, target or t.targets, start)

    guard(body)


def ship(t: Any, run_dir: Any, targets: list[str], start: float) -> int:
    """Compile, check and package each target (a refusal is reported and the next target goes on), then the
    stage table, the report and the packages; the exit code (3 when a target was refused)."""
    from .. import stages
    from ..errors import RefusedError
    from ..report import write_report

    code, packages = 0, []
    for name in targets:
        for step in (stages.compile, stages.check):
            show(step(t, run_dir, name))
        try:
            packaged = stages.package(t, run_dir, name)
        except RefusedError as exc:
            console().print(f"[bold red]{'package ' + name:<18} refused[/]  {exc}", soft_wrap=True)
            code = exc.exit_code
            continue
        show(packaged)
        packages.append(packaged.data["path"])
    stage_table(run_dir)
    console().print(f"report: {write_report(t.name, run_dir.reports, run_dir.root / 'report.html')}")
    for p in packages:
        console().print(f"package: [bold]{p}[/]\nnext: tsd-edge gate {p}")
    console().print(f"[dim]{time.perf_counter() - start:.0f} s in all[/]")
    return code


def climb_and_ship(t: Any, run_dir: Any, targets: list[str], start: float) -> int:
    """Train the ladder's rungs from the cheapest up; ship the first that holds (exit 3 when none does)."""
    import shutil

    from rich.table import Table

    from ..errors import RefusedError
    from ..ladder import HEADER, climb, table_rows
    from ..report import write_report
    from ..textfile import read_json

    chosen, _ = climb(t, run_dir, targets, show)
    data = read_json(run_dir.reports / "ladder.json", "run `tsd-edge run` again")
    table = Table(title=f"student ladder: {data['stopped']}", title_justify="left")
    for col in HEADER:
        table.add_column(col, justify="left" if col in ("rung", "target", "holds") else "right")
    for row in table_rows(data):
        table.add_row(*row)
    console().print(table)
    if chosen is None:
        console().print(f"report: {write_report(t.name, run_dir.reports, run_dir.root / 'report.html')}")
        return RefusedError.exit_code
    code = ship(chosen.task, chosen.run, targets, start)
    shutil.copyfile(chosen.run.root / "report.html", run_dir.root / "report.html")
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
