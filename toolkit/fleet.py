"""A fleet of local teachers: replicas on a Ray cluster answer, this process stores (docs/scale.md).

With `fleet:` in the task file, `collect` sends the inputs through Ray Data: `map_batches` over an
actor pool, each actor one replica of the task's teacher (one GPU each when the cluster has GPUs,
else a CPU share). The actors only answer; every answer comes back to this process (the driver),
which writes it into the pair store exactly as a single-process collection does: the same rows,
the same relevance scoring, the same resume-where-it-stopped, one SQLite writer.

Each replica builds the teacher from the task itself, so the teacher's files (few-shot examples, a
local model folder) must be at the same path on every node; a replica whose teacher comes out with
another fingerprint refuses to answer. Ray is optional: `pip install 'tsd-edge[ray]'`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import numpy as np

from .errors import InputError, RuntimeMissingError, TsdEdgeError
from .task import FleetSpec, Task
from .teachers import Response, Teacher

# columns an actor returns per input, besides `index` (Ray Data moves columns of plain values best)
# what travels as plain columns: every field of a Response but its arrays (sent as float arrays below)
FIELDS = tuple(f.name for f in fields(Response) if f.name not in ("probs", "embedding"))


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise RuntimeMissingError("a teacher fleet (task file `fleet:`)", "tsd-edge[ray]") from None
    return ray


class Replica:
    """One teacher in one Ray actor: built once, then answers batch after batch."""

    def __init__(self, task: Task, fingerprint: str) -> None:
        from .teachers import load_teacher

        self.teacher = load_teacher(task)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        if self.teacher.fingerprint != fingerprint:
            raise InputError(
                f"a fleet replica built teacher {self.teacher.fingerprint}, not {fingerprint}: the task's"
                " teacher files (examples, model) differ on this node; put them at the same path everywhere"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        start = time.perf_counter()
        answers = self.teacher.answer(texts)
        if len(answers) != len(texts):
            raise InputError(f"the teacher gave {len(answers)} answers to {len(texts)} inputs: one answer per input")
        per_pair_ms = (time.perf_counter() - start) * 1000 / max(len(texts), 1)
        out: dict[str, np.ndarray] = {
            "index": np.asarray(batch["index"], dtype=np.int64),
            "replica": np.array([self.name] * len(texts), dtype=object),
        }
        for name in FIELDS:
            out[name] = np.array([getattr(r, name) for r in answers], dtype=object)
        out["latency_ms"] = np.array([r.latency_ms if r.latency_ms is not None else per_pair_ms for r in answers])
        # arrays of floats, or empty ones for "none" (an object column of arrays and Nones travels badly)
        for name in ("probs", "embedding"):
            out[name] = np.array(
                [np.zeros(0, np.float32) if getattr(r, name) is None else getattr(r, name) for r in answers] + [None],
                dtype=object,
            )[:-1]
        return out


class FleetTeacher:
    """The task's teacher, answered by its replicas on a Ray cluster. Same fingerprint, spec and answers."""

    def __init__(self, task: Task, teacher: Teacher, spec: FleetSpec) -> None:
        if task.teacher.kind == "openai":
            raise InputError(
                "fleet: is for local teachers (embedding, hf, python); an openai teacher spreads its requests"
                " over several servers with a list in teacher.base_url"
            )
        self.task, self.inner, self.cfg = task, teacher, spec
        self.fingerprint = teacher.fingerprint
        self.spec = teacher.spec
        self.replicas_used: int | None = None
        self.answered_by: Counter[str] = Counter()  # answers per replica ("host:pid")

    def __getattr__(self, name: str) -> Any:
        # anything else (the embedding teacher's prototypes, for relevance) is the teacher's own
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _resources(self, ray: Any) -> tuple[int, float, float]:
        cfg = self.cfg
        if not ray.is_initialized():
            try:
                ray.init(address=cfg.ray, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise InputError(
                    f"fleet: cannot reach the Ray cluster at {cfg.ray or '(RAY_ADDRESS or this machine)'}: "
                    f"{str(exc).splitlines()[0]}; start it with `ray start --head` or fix fleet.ray"
                ) from None
        total = ray.cluster_resources()
        gpus = cfg.gpus if cfg.gpus is not None else (1.0 if total.get("GPU", 0) >= 1 else 0.0)
        if cfg.replicas is not None:
            replicas = cfg.replicas
        elif gpus:
            replicas = int(total.get("GPU", 0) // gpus)
        else:
            replicas = int(total.get("CPU", 1) // cfg.cpus)
        return max(1, replicas), gpus, cfg.cpus

    def stream(self, texts: list[str]) -> Iterator[tuple[int, Response]]:
        """(index, response) as the replicas' batches come back, in no particular order."""
        ray = _ray()
        replicas, gpus, cpus = self._resources(ray)
        self.replicas_used = replicas
        # several batches per replica, so the pool stays busy to the end; at most the collection's chunk,
        # at least 16 (collection's smoke round of 16 inputs starts one replica, not a pool)
        size = max(min(16, len(texts)), min(self.task.teacher.batch_size * 32, -(-len(texts) // (replicas * 4))))
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # collection draws its own bar
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        items = [{"index": i, "text": t} for i, t in enumerate(texts)]
        ds = ray.data.from_items(items, override_num_blocks=max(1, -(-len(texts) // size)))
        ds = ds.map_batches(
            Replica,
            fn_constructor_args=(self.task, self.fingerprint),
            batch_size=size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(replicas, -(-len(texts) // size))),
            num_gpus=gpus,
            num_cpus=cpus,
        )
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                self.answered_by.update(str(r) for r in batch["replica"])
                for k, index in enumerate(batch["index"]):
                    yield int(index), _response(batch, k)
        except TsdEdgeError:
            raise
        except Exception as exc:  # a replica's error comes back wrapped by Ray: keep its message
            cause = exc
            while getattr(cause, "cause", None) is not None:
                cause = cause.cause  # type: ignore[attr-defined]
            if isinstance(cause, TsdEdgeError):
                raise type(cause)(str(cause)) from None
            raise

    def answer(self, batch: list[str]) -> list[Response]:
        got = dict(self.stream(batch))
        return [got[i] for i in range(len(batch))]


def _response(batch: dict[str, np.ndarray], k: int) -> Response:
    def value(name: str) -> Any:
        v = batch[name][k]
        return None if v is None or (isinstance(v, float | np.floating) and np.isnan(v)) else v

    def array(name: str) -> np.ndarray | None:
        v = batch[name][k]
        return None if v is None or len(v) == 0 else np.asarray(v, dtype=np.float32)

    def number(name: str, kind: type) -> Any:
        v = value(name)
        return None if v is None else kind(v)

    return Response(
        label=value("label"),
        probs=array("probs"),
        embedding=array("embedding"),
        relevance=number("relevance", float),
        status=str(value("status")),
        reason=value("reason"),
        raw=value("raw"),
        latency_ms=number("latency_ms", float),
        tokens_in=number("tokens_in", int),
        tokens_out=number("tokens_out", int),
        attempts=number("attempts", int),
    )


def with_fleet(task: Task, teacher: Teacher) -> Teacher:
    """The teacher itself, or its fleet when the task file asks for one."""
    if task.fleet is None or isinstance(teacher, FleetTeacher):
        return teacher
    return FleetTeacher(task, teacher, task.fleet)
