"""Collection: feed the teacher every task input it has not answered yet, and store each pair.

One path for every teacher. Inputs go in batches; each batch of answers is written in one
transaction as it arrives, so Ctrl-C or a crash loses at most the batch in flight, and the next
run asks only for what is missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .data import TaskInput, heldout, read_inputs
from .progress import progress
from .store import Pair, PairStore
from .task import Task
from .teachers import Response, Teacher, load_teacher


@dataclass
class CollectResult:
    teacher: str
    inputs: int
    already: int
    pending: int
    asked: int
    rejected: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.asked / self.seconds if self.seconds else 0.0


def collect(
    task: Task, store: PairStore, teacher: Teacher | None = None, *, limit: int | None = None, dry_run: bool = False
) -> CollectResult:
    teacher = teacher or load_teacher(task)
    inputs = read_inputs(task)
    store.register_teacher(teacher.fingerprint, task.label_names, teacher.spec)
    done = store.answered(teacher.fingerprint)
    missing = [item for item in inputs if item.key not in done]
    todo = missing if limit is None else missing[:limit]
    result = CollectResult(teacher.fingerprint, len(inputs), len(inputs) - len(missing), len(todo), 0, 0, 0.0)
    if dry_run or not todo:
        store.mark_relevance(teacher.fingerprint, task.relevance.threshold)
        return result
    # A transaction per chunk of several teacher batches: cheap to commit, little to lose.
    chunk = max(task.teacher.batch_size * 8, 64)
    start = time.perf_counter()
    with progress("collect", total=len(todo)) as bar:
        for i in range(0, len(todo), chunk):
            batch = todo[i : i + chunk]
            t0 = time.perf_counter()
            responses = teacher.answer([item.text for item in batch])
            per_pair_ms = (time.perf_counter() - t0) * 1000 / len(batch)
            pairs = [_pair(item, r, task, per_pair_ms) for item, r in zip(batch, responses, strict=True)]
            store.add(teacher.fingerprint, pairs)
            result.asked += len(batch)
            result.rejected += sum(p.status != "ok" for p in pairs)
            bar.advance(0, len(batch))
    result.seconds = time.perf_counter() - start
    store.mark_relevance(teacher.fingerprint, task.relevance.threshold)
    return result


def _pair(item: TaskInput, r: Response, task: Task, latency_ms: float) -> Pair:
    relevant = r.relevance is None or r.relevance >= task.relevance.threshold
    return Pair(
        input_hash=item.key,
        input=item.text,
        source=item.source,
        gold=item.gold,
        split="heldout" if heldout(item.key, task.split.heldout) else "train",
        status=r.status,
        label=r.label,
        probs=r.probs,
        embedding=r.embedding,
        relevance=r.relevance,
        relevant=relevant,
        reason=r.reason,
        raw=r.raw,
        latency_ms=latency_ms,
    )
