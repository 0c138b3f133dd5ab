"""The `python` teacher: `module:function` for any teacher tsd-edge has no adapter for.

The contract (docs/teachers/python.md):

    def teach(texts: list[str], *, labels: list[str], **options) -> list[Answer]

`labels` is passed only if the function has a parameter of that name; `options` are the task
file's `teacher.options`. It returns one answer per text, in order; an answer is
- a label name (`str`): a hard label;
- `(label, probs)`: a label and its probabilities over `labels`, in that order;
- a mapping `{label: probability}`: soft labels (labels left out are 0); the label is the most likely;
- `None`: "none of these" (stored, never trained on).
Anything else, a label outside the task's, or probabilities that are not a distribution, is stored
as rejected with the reason. An exception stops the collection (answers so far are kept).

For an embed task (`kind: embed`) the function answers with one vector per text: a list of lists of
numbers, or a 2-D array (`labels` is not passed). Each is made unit length; a vector that is missing
(None), not finite numbers, all zeros or of another length than the others is stored as rejected with
the reason (teachers/vectors.py).

The module is imported from `teacher.path` (default: the task file's folder) first. The fingerprint
covers the function's name, `options`, the labels and the SHA-256 of the module's source file: edit
the file and its answers are collected again. (Changes elsewhere, e.g. in a model the function
loads, are not seen: put a `version` in `options` and bump it.)
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..digest import sha256_file
from ..errors import InputError
from ..task import PythonTeacherSpec, Task
from . import Response, rejected
from .vectors import VectorCheck


class PythonTeacher:
    def __init__(self, task: Task) -> None:
        spec = task.teacher
        assert isinstance(spec, PythonTeacherSpec)
        self.labels = task.label_names
        self.embeds = task.kind == "embed"
        self.vectors = VectorCheck()
        self.options = spec.options
        folder = task.path(spec.path or Path(".")).resolve()
        module_name, attr = spec.function.split(":")
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise InputError(
                f"teacher.function: cannot import '{module_name}' ({exc}); put it in {folder} or set teacher.path"
            ) from None
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise InputError(f"teacher.function: '{module_name}' has no function '{attr}'; fix teacher.function")
        self.fn: Callable[..., Any] = fn
        params = inspect.signature(self.fn).parameters
        self.wants_labels = not self.embeds and (
            "labels" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
        )
        source = inspect.getsourcefile(module)
        self.spec = {
            "kind": "python",
            "function": spec.function,
            "source_sha256": sha256_file(Path(source)) if source else None,
            "options": self.options,
            "labels": self.labels,
        }
        if self.embeds:
            self.spec["task"] = "embed"
        self.fingerprint = hashlib.sha256(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()[:16]

    def answer(self, batch: list[str]) -> list[Response]:
        kwargs = dict(self.options)
        if self.wants_labels:
            kwargs["labels"] = list(self.labels)
        try:
            out = self.fn(list(batch), **kwargs)
        except Exception as exc:
            name = self.spec["function"]
            raise InputError(f"teacher {name} raised {type(exc).__name__}: {exc}; fix the function") from None
        if self.embeds and isinstance(out, np.ndarray) and out.ndim == 2:
            out = list(out)
        if not isinstance(out, Sequence) or isinstance(out, str) or len(out) != len(batch):
            got = len(out) if isinstance(out, Sequence) and not isinstance(out, str) else type(out).__name__
            raise InputError(f"teacher {self.spec['function']} returned {got} for {len(batch)} texts: one answer each")
        if self.embeds:
            return self.vectors.responses(out)
        return [self.convert(a) for a in out]

    def convert(self, answer: Any) -> Response:
        if answer is None:
            return Response(label=None, reason="teacher answered none of the labels")
        if isinstance(answer, str):
            return Response(label=answer) if answer in self.labels else _outside(answer)
        if isinstance(answer, Mapping):
            unknown = [k for k in answer if k not in self.labels]
            if unknown:
                return _outside(str(unknown[0]), repr(dict(answer))[:500])
            probs = np.array([float(answer.get(name, 0.0)) for name in self.labels], dtype=np.float32)
            why = _not_a_distribution(probs)
            return rejected(why, repr(dict(answer))[:500]) if why else Response(self.labels[int(probs.argmax())], probs)
        if isinstance(answer, tuple) and len(answer) == 2 and isinstance(answer[0], str):
            label, raw_probs = answer
            if label not in self.labels:
                return _outside(label)
            try:
                probs = np.asarray(raw_probs, dtype=np.float32).reshape(-1)
            except (TypeError, ValueError):
                return rejected("probs is not a sequence of numbers", repr(answer)[:500])
            if probs.shape != (len(self.labels),):
                return rejected(f"probs has {probs.size} values for {len(self.labels)} labels", repr(answer)[:500])
            why = _not_a_distribution(probs)
            return rejected(why, repr(answer)[:500]) if why else Response(label, probs)
        return rejected(f"a {type(answer).__name__} is not an answer (use a label, (label, probs) or a dict)")


def _outside(label: str, raw: str | None = None) -> Response:
    return rejected(f"answer {label[:80]!r} is not one of the task's labels", raw or label[:500])


def _not_a_distribution(probs: np.ndarray) -> str | None:
    if not np.all(np.isfinite(probs)) or (probs < 0).any():
        return "probs has negative or non-finite values"
    if abs(float(probs.sum()) - 1.0) > 1e-3:
        return f"probs sums to {float(probs.sum()):.4f}, not 1"
    return None
