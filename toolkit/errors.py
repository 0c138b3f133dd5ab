"""Errors raised by tsd-edge stages. The CLI turns each into one line and an exit code.

    TsdEdgeError                 exit 1  (base; a check did not hold)
    ├── InputError               exit 2  bad task file, profile, argument, data or package
    ├── RefusedError             exit 3  agreement did not hold, nothing was packaged
    └── RuntimeMissingError      exit 4  an optional runtime is not installed

Every message says what is wrong and how to fix it, in one line.
"""

from __future__ import annotations


class TsdEdgeError(Exception):
    exit_code = 1


class InputError(TsdEdgeError):
    exit_code = 2


class RefusedError(TsdEdgeError):
    exit_code = 3


class RuntimeMissingError(TsdEdgeError):
    exit_code = 4

    def __init__(self, what: str, package: str) -> None:
        super().__init__(f"{what} needs the '{package}' package: pip install {package}")
        self.package = package
