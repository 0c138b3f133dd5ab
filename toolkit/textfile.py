"""The one reader for every text file tsd-edge reads (task files, labels, inputs, pair files, records).

Whatever is wrong with a file — missing, a folder, unreadable, not UTF-8, binary — becomes one
InputError naming the file, the line where it is known, and the fix; never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import InputError

UTF8_FIX = "save it as UTF-8"


def _check(path: Path, fix: str) -> None:
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a file; {fix}")
    if not path.is_file():
        raise InputError(f"{path}: file not found; {fix}")


def _undecodable(path: Path, data: bytes, start: int, offset_line: int = 1) -> InputError:
    line = offset_line + data.count(b"\n", 0, start)
    return InputError(f"{path}:{line}: not UTF-8 text (byte 0x{data[start]:02x}); {UTF8_FIX}")


def _decode(path: Path, data: bytes, line: int = 1) -> str:
    if line == 1 and data.startswith(b"\xef\xbb\xbf"):  # a byte-order mark, as some editors write
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _undecodable(path, data, exc.start, line) from None
    nul = text.find("\x00")
    if nul >= 0:
        where = line + text.count("\n", 0, nul)
        raise InputError(f"{path}:{where}: a NUL byte: this is a binary file, not text; {UTF8_FIX}")
    return text


def read_bytes(path: Path, fix: str = "fix the path") -> bytes:
    _check(path, fix)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc}); {fix}") from None


def read_text(path: Path, fix: str = "fix the path") -> str:
    """The whole file as text (UTF-8, a byte-order mark allowed)."""
    return _decode(path, read_bytes(path, fix))


def read_lines(path: Path, fix: str = "fix the path") -> Iterator[str]:
    """The file's lines as text (each with its line ending), decoded line by line: a huge file streams and
    an error names its line."""
    _check(path, fix)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc}); {fix}") from None
    with fh:
        for n, raw in enumerate(fh, 1):
            yield _decode(path, raw, n)


def read_json(path: Path, fix: str = "fix the path") -> Any:
    text = read_text(path, fix)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); {fix}") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply; {fix}") from None


def load_json_or_none(path: Path) -> Any:
    """A file tsd-edge wrote itself (a stage record): None when it is missing or not what was written."""
    try:
        return read_json(path)
    except InputError:
        return None
