"""Progress bars for long work (rich, on stderr so stdout stays clean for results)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

stderr = Console(stderr=True)


@contextmanager
def progress(description: str, total: int, unit: str = "") -> Iterator[Progress]:
    """A bar with count, rate and ETA; `bar.advance(0, n)` moves it on."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=False,
        disable=not stderr.is_terminal,  # in CI logs and subprocesses the stage summary lines say it all
    ) as bar:
        bar.add_task(description, total=total, rate=unit)
        yield bar
