"""The Typer app every command module registers on, and what they share: option types, the error guard.

Exit codes: 0 success; 1 a check did not hold; 2 bad input; 3 refused to package; 4 missing runtime;
5 collect left task inputs unanswered; 6 the backend failed to build or run the artifact here.
"""

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Tuple

import typer

# This module runs on Python 3.8 (the device side's CLI), and typer evaluates these annotations at run time:
# typing.Optional, not `X | None`; Annotated from typing_extensions before 3.9.
if sys.version_info >= (3, 9):
    from typing import Annotated
else:  # pragma: no cover - exercised by tests/test_old_pythons.py
    from typing_extensions import Annotated

app = typer.Typer(
    name="tsd-edge",
    help="Distil a teacher into a small task-specific student, compile it for edge targets, and gate it "
    "on agreement with the teacher.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

TaskArg = Annotated[Path, typer.Argument(help="the task file (task.yaml)")]
Workdir = Annotated[Optional[Path], typer.Option("--workdir", "-w", help="run directory [default: runs/<task>]")]
Target = Annotated[str, typer.Option("--target", "-t", help="target profile name or YAML file (see `profiles`)")]
Force = Annotated[bool, typer.Option("--force", help="redo the stage even if its inputs did not change")]
Identity = Annotated[
    Optional[Path], typer.Option(help="--device: the SSH private key (default: ssh-agent and ~/.ssh keys)")
]
KnownHosts = Annotated[
    Optional[Path],
    typer.Option(help="--device: known_hosts file with the device's host key (default: ~/.ssh/known_hosts)"),
]

# the hybrid system's options, shared by predict and serve (toolkit/hybrid.py)
TeacherTask = Annotated[
    Optional[Path],
    typer.Option(
        "--teacher",
        help="the hybrid system: this task file's teacher answers what the package's student defers (the package "
        "needs a deploy: rule); its answers are stored for the next distill (Python 3.11)",
    ),
]
HybridWorkdir = Annotated[
    Optional[Path], typer.Option("--workdir", "-w", help="with --teacher: the run directory whose store keeps them")
]
StoreAnswers = Annotated[bool, typer.Option("--store/--no-store", help="with --teacher: store the teacher's answers")]

# help panels, so `tsd-edge --help` groups commands by what a user is doing
PIPELINE, DATA, SHIP, MEASURE = "Pipeline", "Pairs", "Package and gate", "Measure and inspect"

_debug = False


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks for expected errors")] = False) -> None:
    global _debug
    _debug = debug
    from ..progress import set_reporter

    set_reporter(rich_bar)  # the library reports progress; the CLI draws it


@contextmanager
def rich_bar(description: str, total: int) -> Iterator[Any]:
    """A rich progress bar on stderr (stdout stays clean for results): count, rate and ETA; drawn only on a
    terminal (in CI logs and subprocesses the stage summary lines say it all)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    err = console(stderr=True)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn())
    more = (TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, *more, console=err, transient=False, disable=not err.is_terminal) as bars:
        task = bars.add_task(description, total=total, rate="")

        class Bar:
            def advance(self, n: int = 1, rate: Optional[str] = None) -> None:
                if rate is None:
                    bars.update(task, advance=n)
                else:
                    bars.update(task, advance=n, rate=rate)

            def describe(self, text: str) -> None:
                bars.update(task, description=text)

        yield Bar()


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def guard(fn: Callable[[], Optional[int]]) -> None:
    """Run a command body; turn tsd-edge errors into one line on stderr and their exit code."""
    from rich.markup import escape

    from ..errors import TsdEdgeError

    err = console(stderr=True)
    try:
        code = fn() or 0
    except TsdEdgeError as exc:
        if _debug:
            raise
        message = " ".join(str(exc).split())  # one line, whatever a library put in the message
        err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
        code = exc.exit_code
    except OSError as exc:  # the file system said no (a file where a folder should be, permissions, a full disk)
        if _debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        err.print(
            f"[bold red]error:[/] {escape(where + (exc.strerror or str(exc)))}; check that path "
            "(the run directory, --workdir, the task file's paths) and try again",
            soft_wrap=True,
        )
        code = 2
    except KeyboardInterrupt:
        err.print("interrupted: what was finished is kept; run the command again to continue")
        code = 130
    raise typer.Exit(code)


def load(task_path: Path, workdir: Optional[Path]) -> Tuple[Any, Any]:
    """The task and its run directory."""
    from ..rundir import RunDir
    from ..task import load_task

    task = load_task(task_path)
    return task, RunDir.for_task(task, workdir)


def context(task_path: Path, workdir: Optional[Path]) -> Any:
    """The command's RunContext (tsd_edge.context): the task, its run directory, its teacher, built once."""
    from ..context import RunContext
    from ..task import load_task

    return RunContext.open(load_task(task_path), workdir)


def show(result: Any) -> None:
    """One line for a stage's result."""
    mark = "[dim]skipped (up to date)[/]" if result.skipped else "[green]done[/]"
    console().print(f"[bold]{result.stage:<18}[/] {mark}  {result.summary}", soft_wrap=True)
