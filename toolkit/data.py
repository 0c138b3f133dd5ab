"""Reading task inputs (txt, jsonl, csv) into one stream of `TaskInput`s.

Gold labels, where a file has them, are kept only to report accuracy; training uses the teacher's
answers. A gold label outside the task's label set is bad input and names the file and line.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .task import ExamplesSpec, InputSource, Task
from .textfile import read_lines


@dataclass(frozen=True)
class TaskInput:
    text: str
    source: str
    gold: str | None = None

    @property
    def key(self) -> str:
        return input_key(self.text)


def input_key(text: str) -> str:
    """The identity of an input: its SHA-256. The held-out split is a function of it alone."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def heldout(key: str, share: float) -> bool:
    """True when an input belongs to the held-out split; stable however the pool grows."""
    return int(key[:8], 16) / 0x1_0000_0000 < share


def jsonl_rows(lines: Iterable[str], path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-empty line; bad JSON is an InputError naming file and line."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{n}: not valid JSON ({exc.msg}); one JSON object per line") from None
        except RecursionError:
            raise InputError(f"{path}:{n}: JSON nested too deeply; one flat JSON object per line") from None


def _rows(path: Path, fmt: str, text_field: str, label_field: str | None) -> Iterator[tuple[int, str, str | None]]:
    lines = read_lines(path, "fix inputs[].path in the task file")
    if fmt == "txt":
        for n, line in enumerate(lines, 1):
            yield n, line.rstrip("\r\n"), None
    elif fmt == "jsonl":
        for n, obj in jsonl_rows(lines, path):
            if not isinstance(obj, dict) or text_field not in obj:
                raise InputError(f"{path}:{n}: no '{text_field}' field; set text_field in the task file")
            yield (
                n,
                str(obj[text_field]),
                (str(obj[label_field]) if label_field and obj.get(label_field) is not None else None),
            )
    else:
        yield from _csv_rows(path, lines, text_field, label_field)


def _csv_rows(
    path: Path, lines: Iterator[str], text_field: str, label_field: str | None
) -> Iterator[tuple[int, str, str | None]]:
    reader = csv.DictReader(lines)
    try:
        fields = reader.fieldnames or []
        for need in [text_field] + ([label_field] if label_field else []):
            if need not in fields:
                shown = ", ".join(fields) or "none: the file is empty"
                raise InputError(f"{path}: no column '{need}' (columns: {shown}); fix the task file")
        for row in reader:
            text, gold = row.get(text_field), row.get(label_field) if label_field else None
            yield (
                reader.line_num,
                text if isinstance(text, str) else "",
                gold if isinstance(gold, str) and gold else None,
            )
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: not valid CSV ({exc}); fix the file") from None


def read_source(src: InputSource, task: Task) -> list[TaskInput]:
    path = task.path(src.path)
    labels = set(task.label_names)
    out: list[TaskInput] = []
    for n, text, gold in _rows(path, src.resolved_format, src.text_field, src.label_field):
        text = text.strip()
        if not text:
            continue
        if gold is not None and gold not in labels:
            raise InputError(f"{path}:{n}: unknown label '{gold}'; add it to the task's labels or fix the data")
        out.append(TaskInput(text=text, source=src.path.name, gold=gold))
        if src.limit and len(out) >= src.limit:
            break
    if not out:
        raise InputError(
            f"{path}: no inputs in this file (it is empty, only blank lines or only a CSV header); "
            "add inputs or remove it from the task file"
        )
    return out


def read_inputs(task: Task, *, missing_ok: bool = False) -> list[TaskInput]:
    """Every task input once (first occurrence wins), in file order; `missing_ok` leaves out files that are
    not there (a run folder filled by `pairs import` may have none)."""
    seen: set[str] = set()
    out: list[TaskInput] = []
    for src in task.inputs:
        if missing_ok and not task.path(src.path).exists():
            continue
        for item in read_source(src, task):
            if item.key not in seen:
                seen.add(item.key)
                out.append(item)
    return out


def read_examples(spec: ExamplesSpec, task: Task) -> dict[str, list[str]]:
    """The first `per_label` examples of each label; every label must have at least one."""
    path = task.path(spec.path)
    src = InputSource(path=path, text_field=spec.text_field, label_field=spec.label_field)
    by_label: dict[str, list[str]] = {name: [] for name in task.label_names}
    for item in read_source(src, task):
        if item.gold and len(by_label[item.gold]) < spec.per_label:
            by_label[item.gold].append(item.text)
    empty = [name for name, texts in by_label.items() if not texts]
    if empty:
        raise InputError(f"{path}: no examples for label(s) {', '.join(empty[:5])}; add examples or descriptions")
    return by_label
