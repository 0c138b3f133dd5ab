"""Collection: feed the teacher every task input it has not answered yet, and store each pair.

One path for every teacher. A teacher that streams (a remote endpoint with many requests in flight)
has each answer stored as it arrives, committed every `teacher.batch_size` answers or quarter
second; the others answer a chunk of inputs at a time, committed per chunk. Either way a crash,
Ctrl-C or SIGKILL loses at most the answers not yet committed, and the next run asks only for what
is missing: the store's primary key (input, teacher) makes a second answer to one input impossible.

Before the first real collection a smoke test asks a few inputs: when most of those answers are
rejected, a misconfigured prompt or constraint costs seconds, not a night of GPU time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from .data import TaskInput, heldout, read_inputs
from .errors import InputError
from .progress import progress
from .relevance import Relevance, Rule
from .store import Pair, PairStore
from .task import Task
from .teachers import Response, Teacher, load_teacher
from .teachers.vectors import VectorCheck

SMOKE_N = 16
FLUSH_SECONDS = 0.25


@dataclass
class CollectResult:
    teacher: str
    inputs: int
    already: int
    pending: int
    asked: int
    rejected: int
    seconds: float
    failed: int = 0
    stopped: str | None = None  # why collection ended before every pending input was asked
    failures: list[str] = field(default_factory=list)  # a few reasons, for the summary
    rule: Rule | None = None  # the relevance rule the pairs were marked with

    @property
    def rate(self) -> float:
        return self.asked / self.seconds if self.seconds else 0.0


def collect(
    task: Task,
    store: PairStore,
    teacher: Teacher | None = None,
    *,
    limit: int | None = None,
    dry_run: bool = False,
    only: Collection[str] | None = None,
) -> CollectResult:
    """Ask the teacher for every unanswered task input (or only those whose `TaskInput.key` is in `only`)."""
    teacher = teacher or load_teacher(task)
    if task.fleet is not None:  # replicas on a Ray cluster answer; this process alone writes the store
        from .fleet import with_fleet

        teacher = with_fleet(task, teacher)
    inputs = read_inputs(task)
    if only is not None:
        wanted = set(only)
        inputs = [item for item in inputs if item.key in wanted]
    store.register_teacher(teacher.fingerprint, task.label_names, teacher.spec)
    check = getattr(teacher, "vectors", None)  # an embed teacher's VectorCheck: one dimension across runs too
    if task.kind == "embed" and isinstance(check, VectorCheck) and check.dim is None:
        check.dim = store.embedding_dim(teacher.fingerprint)
    done = store.answered(teacher.fingerprint)
    missing = [item for item in inputs if item.key not in done]
    todo = missing if limit is None else missing[:limit]
    result = CollectResult(teacher.fingerprint, len(inputs), len(inputs) - len(missing), len(todo), 0, 0, 0.0)
    relevance = Relevance(task, store, teacher)
    relevance.preflight()  # a bad reference file is said now, not after the teacher answered everything
    if dry_run:
        return result
    if not todo:
        result.rule = relevance.refresh(teacher.fingerprint)
        store.finish_collect(teacher.fingerprint, unanswered=0)
        return result
    store.begin_collect(teacher.fingerprint)
    score = relevance.fill
    # a smoke round first while this teacher has few good answers stored (re-running a broken setup stops again)
    good = sum(n for key, n in store.counts(teacher.fingerprint).items() if key.startswith("ok/"))
    rounds = [todo[:SMOKE_N], todo[SMOKE_N:]] if good < SMOKE_N and len(todo) > 2 * SMOKE_N else [todo]
    start = time.perf_counter()
    with progress("collect", total=len(todo)) as bar:
        for n, items in enumerate(rounds):
            before = result.asked, result.rejected, result.failed
            _collect(task, store, teacher, items, score, result, lambda k: _advance(bar, k, result, start))
            if n == 0 and len(rounds) > 1:
                _smoke_check(store, teacher.fingerprint, result, before)
            if result.stopped:
                break
    result.seconds = time.perf_counter() - start
    result.rule = relevance.refresh(teacher.fingerprint)
    store.finish_collect(teacher.fingerprint, unanswered=len(todo) - result.asked)
    return result


def _advance(bar: Any, n: int, result: CollectResult, start: float) -> None:
    seconds = time.perf_counter() - start
    bar.advance(n, rate=f"{result.asked / seconds:.1f}/s" if seconds > 0 else "")


def _collect(
    task: Task,
    store: PairStore,
    teacher: Teacher,
    items: list[TaskInput],
    score: Callable[[list[str], list[Response]], None],
    result: CollectResult,
    advance: Callable[[int], None],
) -> None:
    buffer: list[tuple[TaskInput, Response]] = []
    last = time.monotonic()

    def flush() -> None:
        nonlocal last
        keep = [(item, r) for item, r in buffer if r.status != "failed"]
        for _, r in buffer:
            if r.status == "failed":
                result.failed += 1
                if len(result.failures) < 3:
                    result.failures.append(r.reason or "no answer")
        if keep:
            score([item.text for item, _ in keep], [r for _, r in keep])
        store.add(teacher.fingerprint, [pair_of(item, r, task) for item, r in keep])
        result.asked += len(keep)
        result.rejected += sum(r.status == "rejected" for _, r in keep)
        advance(len(buffer))
        buffer.clear()
        last = time.monotonic()

    try:
        for item, response in _answers(teacher, items, task.teacher.batch_size):
            buffer.append((item, response))
            if len(buffer) >= task.teacher.batch_size or time.monotonic() - last > FLUSH_SECONDS:
                flush()
    finally:
        # whatever arrived is kept, also on Ctrl-C or when the server refused us mid-way
        if buffer:
            flush()
        result.stopped = result.stopped or getattr(teacher, "stopped", None)


def _answers(teacher: Teacher, items: list[TaskInput], batch_size: int) -> Iterator[tuple[TaskInput, Response]]:
    stream = getattr(teacher, "stream", None)
    if stream is not None:
        for i, response in stream([item.text for item in items]):
            yield items[i], response
        return
    # 32 batches a call: the encoder sorts a call's texts by length, so bigger calls pad less
    # (benchmarks/teacher_local.py: 8 batches a call ran at 79% of bare encoding, 32 at 95%)
    chunk = max(batch_size * 32, 256)
    for i in range(0, len(items), chunk):
        batch = items[i : i + chunk]
        t0 = time.perf_counter()
        responses = teacher.answer([item.text for item in batch])
        if len(responses) != len(batch):
            raise InputError(f"the teacher gave {len(responses)} answers to {len(batch)} inputs: one answer per input")
        per_pair_ms = (time.perf_counter() - t0) * 1000 / len(batch)
        for item, r in zip(batch, responses, strict=True):
            if r.latency_ms is None:
                r.latency_ms = per_pair_ms
            yield item, r


def _smoke_check(store: PairStore, fingerprint: str, result: CollectResult, before: tuple[int, int, int]) -> None:
    now = (result.asked, result.rejected, result.failed)
    asked, rejected, failed = (a - b for a, b in zip(now, before, strict=True))
    bad, total = rejected + failed, asked + failed
    if not total or bad * 2 <= total:
        return
    latest = store.rejected(fingerprint, 1, latest=True)
    if latest:
        _, reason, raw = latest[0]
        example = reason + (f" (raw: {raw[:80]!r})" if raw else "")
    else:
        example = result.failures[0] if result.failures else "no answer"
    raise InputError(
        f"smoke test: {bad} of the first {total} answers were rejected or failed, e.g. {example}; "
        "fix the teacher settings (prompt, constrain, model) before a full collection"
    )


def pair_of(item: TaskInput, r: Response, task: Task) -> Pair:
    """The stored pair for a teacher's answer to an input (collect's, and the hybrid's at run time)."""
    # marked for real by Relevance.refresh once the batch is scored; until then only "none of these" is out
    # (an embed answer has no label: its embedding is the answer)
    relevant = r.status == "ok" and (r.label is not None or (task.kind == "embed" and r.embedding is not None))
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
        latency_ms=r.latency_ms,
        tokens_in=r.tokens_in,
        tokens_out=r.tokens_out,
        attempts=r.attempts,
    )
