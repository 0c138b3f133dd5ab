"""Teachers: anything that answers a batch of task inputs.

A teacher has a `fingerprint` (changes whenever its answers could change) and
`answer(batch) -> list[Response]`. The registry maps a `teacher.kind` to "module:attr",
imported only when used, so a teacher's dependencies are needed only by those who use it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from ..task import Task


@dataclass
class Response:
    """One answer. `probs` is over the task's labels in order; a rejected answer has a `reason`."""

    label: str | None
    probs: np.ndarray | None = None
    embedding: np.ndarray | None = None
    relevance: float | None = None
    status: str = "ok"
    reason: str | None = None
    raw: str | None = None


class Teacher(Protocol):
    fingerprint: str
    spec: dict

    def answer(self, batch: list[str]) -> list[Response]: ...


REGISTRY: dict[str, str] = {
    "embedding": "tsd_edge.teachers.embedding:EmbeddingTeacher",
}


def load_teacher(task: Task) -> Teacher:
    kind = task.teacher.kind
    if kind not in REGISTRY:
        raise InputError(f"unknown teacher kind '{kind}': use one of {', '.join(sorted(REGISTRY))}")
    module, attr = REGISTRY[kind].split(":")
    cls = getattr(importlib.import_module(module), attr)
    return cls(task)


__all__ = ["REGISTRY", "Response", "Teacher", "load_teacher"]
