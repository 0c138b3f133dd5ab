"""Looking at a run: the HTML report and the teacher-vs-student benchmark."""

from __future__ import annotations

from typing import Annotated

import typer

from .app import MEASURE, Identity, KnownHosts, TaskArg, Workdir, app, console, guard, load
from .pipeline import stage_table


@app.command(rich_help_panel=MEASURE)
def report(
    task: TaskArg,
    workdir: Workdir = None,
    open_: Annotated[bool, typer.Option("--open", help="open the page in a browser")] = False,
) -> None:
    """Show the stage table and write runs/<task>/report.html (chart, per-label agreement, disagreements)."""

    def body() -> None:
        from ..errors import InputError
        from ..report import write_report

        t, run_dir = load(task, workdir)
        if not run_dir.reports.is_dir():
            raise InputError(f"no reports in {run_dir.reports}: run `tsd-edge run {task}` first")
        stage_table(run_dir)
        page = write_report(t.name, run_dir.reports, run_dir.root / "report.html")
        console().print(f"report: {page}")
        if open_:
            import webbrowser

            webbrowser.open(page.resolve().as_uri())

    guard(body)


@app.command(rich_help_panel=MEASURE)
def bench(
    task: TaskArg,
    workdir: Workdir = None,
    target: Annotated[list[str] | None, typer.Option("--target", "-t", help="compiled targets [default: all]")] = None,
    threads: Annotated[int, typer.Option(help="threads per system")] = 1,
    repeats: Annotated[int, typer.Option(help="round-robin repeats (figures are medians)")] = 5,
    queries: Annotated[int, typer.Option(help="batch-1 queries per system per repeat")] = 32,
    batches: Annotated[int, typer.Option(help="batches per system per repeat")] = 4,
    batch_size: Annotated[int, typer.Option(help="batch size for throughput")] = 32,
    bucket: Annotated[
        int,
        typer.Option(
            help="student and artifacts answer a batch sorted by length, in sub-batches of N (length bucketing; "
            "0: the batch whole, padded to its longest)"
        ),
    ] = 8,
    price_kwh: Annotated[float, typer.Option(help="electricity, USD per kWh")] = 0.15,
    price_hour: Annotated[float, typer.Option(help="the whole machine, USD per hour")] = 0.10,
    price_input_mtok: Annotated[float, typer.Option(help="HTTP teacher: USD per 1M prompt tokens")] = 0.15,
    price_output_mtok: Annotated[float, typer.Option(help="HTTP teacher: USD per 1M completion tokens")] = 0.60,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            help="also measure the compiled artifacts on ssh://user@host[:port] (those built there: only there); "
            "teacher and student stay here; the device needs python3, numpy and the runtime",
        ),
    ] = None,
    identity: Identity = None,
    known_hosts: KnownHosts = None,
) -> None:
    """Teacher vs student vs each compiled artifact: latency, throughput, memory, size, energy, cost."""

    def body() -> None:
        from ..bench import bench as measure
        from ..bench import table

        remote = None
        if device is not None:
            from ..device import SshDevice

            remote = SshDevice.parse(device, identity, known_hosts)
        t, run_dir = load(task, workdir)
        err = console(stderr=True)
        say = lambda msg: err.print(f"[dim]{msg}[/]")  # noqa: E731
        result = measure(
            t,
            run_dir,
            targets=target,
            threads=threads,
            repeats=repeats,
            queries=queries,
            batches=batches,
            batch_size=batch_size,
            bucket=bucket,
            price_kwh=price_kwh,
            price_hour=price_hour,
            price_input_mtok=price_input_mtok,
            price_output_mtok=price_output_mtok,
            progress=say,
            device=remote,
        )
        console().print(table(result))
        for name, r in result.ratios.items():
            console().print(f"{name}: " + ", ".join(f"{k} {v:.1f}×" for k, v in r.items()), soft_wrap=True)
        console().print(f"json: {run_dir.root / 'bench.json'}\nchart: {run_dir.root / 'bench.svg'}")

    guard(body)
