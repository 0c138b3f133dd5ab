"""Teachers: anything that answers a batch of task inputs.

A teacher has a `fingerprint` (changes whenever its answers could change), a JSON-able `spec`
(what it was; stored with its answers) and `answer(batch) -> list[Response]`, one per input in order.
A teacher that answers out of order (a remote endpoint with many requests in flight) may also have
`stream(texts) -> Iterator[tuple[int, Response]]`, yielding each answer as it arrives; collection
then stores answers as they come instead of a batch at a time.

Response statuses:
- `ok`: an answer in the task's output space. Classify: a `label` (None when the teacher said "none of
  these": stored, never trained on). Embed (`kind: embed`): `label` None and `embedding` the input's
  unit-length float32 sentence embedding, in the teacher's own space and dimension;
- `rejected`: an answer that could not be parsed into the output space; stored with `raw` and
  `reason`, never trained on, never asked again;
- `failed`: no answer (retries exhausted, budget spent); not stored, asked again by the next run.

The registry maps a `teacher.kind` to "module:attr", imported only when used, so a teacher's
dependencies are needed only by those who use it; `EMBED_REGISTRY` overrides it for an embed task where
the kind answers embed tasks with another class. An embed teacher's `spec` says `"task": "embed"`, so it
never shares a fingerprint (and pairs) with a classify teacher over the same model.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, runtime_checkable

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
    latency_ms: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    attempts: int | None = None


def rejected(reason: str, raw: str | None = None, **kw: object) -> Response:
    return Response(label=None, status="rejected", reason=reason, raw=raw, **kw)  # type: ignore[arg-type]


def failed(reason: str, **kw: object) -> Response:
    return Response(label=None, status="failed", reason=reason, **kw)  # type: ignore[arg-type]


class Teacher(Protocol):
    fingerprint: str
    spec: dict

    def answer(self, batch: list[str]) -> list[Response]: ...


@runtime_checkable
class Embeds(Protocol):
    """A capability: a teacher that answers by embedding (its answers carry sentence embeddings). It has one
    unit vector per task label (`prototypes`, in the task's label order) and the temperature its scores are
    softened with. Shared code asks `can_embed(teacher)`, never the teacher's kind.

    The name says less than it means: `can_embed` is "answers by label prototypes". An embed task's teacher
    returns sentence embeddings but has no labels, hence no prototypes, and is not `Embeds`."""

    prototypes: np.ndarray
    temperature: float


def can_embed(teacher: Any) -> TypeGuard[Embeds]:
    return isinstance(teacher, Embeds)


class StreamingTeacher(Teacher, Protocol):
    def stream(self, texts: list[str]) -> Iterator[tuple[int, Response]]: ...


REGISTRY: dict[str, str] = {
    "embedding": "tsd_edge.teachers.embedding:EmbeddingTeacher",
    "openai": "tsd_edge.teachers.openai:OpenAITeacher",
    "python": "tsd_edge.teachers.python:PythonTeacher",
    "hf": "tsd_edge.teachers.hf:HFTeacher",
}
# kind: embed, where the answer is another class's job (hf and python answer both kinds themselves)
EMBED_REGISTRY: dict[str, str] = {
    "embedding": "tsd_edge.teachers.embedding:EncoderTeacher",
    "openai": "tsd_edge.teachers.openai_embed:OpenAIEmbedTeacher",
}


def load_teacher(task: Task) -> Teacher:
    kind = task.teacher.kind
    if kind not in REGISTRY:
        raise InputError(f"unknown teacher kind '{kind}': use one of {', '.join(sorted(REGISTRY))}")
    where = EMBED_REGISTRY.get(kind, REGISTRY[kind]) if task.kind == "embed" else REGISTRY[kind]
    module, attr = where.split(":")
    cls = getattr(importlib.import_module(module), attr)
    return cls(task)


__all__ = [
    "EMBED_REGISTRY",
    "REGISTRY",
    "Embeds",
    "Response",
    "StreamingTeacher",
    "Teacher",
    "can_embed",
    "failed",
    "load_teacher",
    "rejected",
]
