"""Progress of long work, reported through a callback the CLI supplies: nothing below the CLI draws.

Library code says `with progress("collect", total=n) as bar: bar.advance(k)`; without a reporter (a library
caller, a test, a DDP rank that is not the main one) that does nothing. The CLI installs one that draws rich
bars on stderr (`set_reporter`, toolkit/cli/app.py); a library caller may install its own.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator, Protocol

# imported by the CLI of every command, the device's too: Python 3.8 (typing's generics, not the builtins')


class Bar(Protocol):
    def advance(self, n: int = 1, rate: str | None = None) -> None:
        """`n` more units done; `rate`, when given, is shown beside the count (e.g. "12.3/s")."""

    def describe(self, text: str) -> None:
        """A new description (e.g. the epoch and its agreement)."""


Reporter = Callable[[str, int], ContextManager[Bar]]  # (description, total) -> a bar while the work runs

_reporter: Reporter | None = None


def set_reporter(reporter: Reporter | None) -> Reporter | None:
    """Install the reporter every later `progress` reports to (None: report nothing); returns the previous one."""
    global _reporter
    previous, _reporter = _reporter, reporter
    return previous


class _Silent:
    def advance(self, n: int = 1, rate: str | None = None) -> None:
        pass

    def describe(self, text: str) -> None:
        pass


@contextmanager
def progress(description: str, total: int) -> Iterator[Bar]:
    """A bar for `total` units of work, reported to the installed reporter (if any)."""
    if _reporter is None:
        yield _Silent()
        return
    with _reporter(description, total) as bar:
        yield bar


SILENT: Bar = _Silent()
