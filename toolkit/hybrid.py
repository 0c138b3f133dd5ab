"""The hybrid system at run time: the package's student answers when it is sure, the task's teacher answers
the rest, and every answer the teacher gives is stored as a pair for the next distillation.

    hybrid = Hybrid(tsd_edge.load(pkg), task, store=Path("runs/<task>/pairs.sqlite"))
    hybrid.predict(["...", ...])      # each Prediction says who answered: student, teacher, or deferred

The teacher is the task's own (`load_teacher`: an OpenAI-compatible endpoint with its key from the environment,
retries and timeouts as in collect, or any other kind), so it is the training side's code: Python 3.11. When the
teacher fails (down, timed out, an answer outside the labels) the student's answer is returned, marked
`deferred` with the reason, and nothing is stored for that input. Stored pairs are ordinary pairs of the task's
teacher (source `deferred`, split by input hash as in collect), so the next `tsd-edge distill` trains on them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from .collect import pair_of
from .data import TaskInput, input_key
from .relevance import Relevance
from .runtime.model import Model, Prediction
from .store import PairStore
from .task import Task

SOURCE = "deferred"  # the pairs' source in the store: answers the teacher gave for inputs the student deferred


class Hybrid:
    """`wait`: seconds a call waits for the teacher before answering with the student's (flagged); `pending`: teacher
    calls allowed in flight at once — past that, unsure inputs are answered by the student at once, so a slow
    teacher cannot hold a server (its late answers are still stored when they come)."""

    def __init__(
        self,
        model: Model,
        task: Task,
        *,
        store: Path | None = None,
        teacher: Any = None,
        wait: float = 30.0,
        pending: int = 4,
    ) -> None:
        if model.kind != "classify":
            from .errors import InputError

            raise InputError(f"{model.name} is an {model.kind} package: the teacher answers only classify packages")
        if model.deferral is None:
            from .errors import InputError

            raise InputError(
                f"{model.name}-{model.target} has no deferral rule: add `deploy: {{answered_agreement: ...}}` to "
                "the task file and run `tsd-edge package` again"
            )
        if teacher is None:
            from .teachers import load_teacher

            teacher = load_teacher(task)
        self.model, self.task, self.teacher = model, task, teacher
        self.name, self.target, self.labels = model.name, model.target, model.labels
        self.store_path = store
        self._lock = threading.Lock()  # one SQLite writer per process; WAL lets collect or distill read meanwhile
        self.wait = wait
        self._slots = threading.BoundedSemaphore(pending)
        self._pool = ThreadPoolExecutor(max_workers=pending, thread_name_prefix="tsd-teacher")
        self.stats = {"student": 0, "teacher": 0, "deferred": 0, "teacher_errors": 0, "stored": 0, "busy": 0}

    def describe(self) -> dict[str, Any]:
        return {**self.model.describe(), "hybrid": True, "teacher": self.task.teacher.kind}

    def predict(self, texts: list[str], top_k: int = 1) -> list[Prediction]:
        preds = self.model.predict(texts, top_k=top_k)
        unsure = [i for i, p in enumerate(preds) if p.deferred]
        self.stats["student"] += len(preds) - len(unsure)
        if not unsure:
            return preds
        asked = [texts[i] for i in unsure]
        if not self._slots.acquire(blocking=False):  # the teacher is busy with earlier calls: do not queue behind
            self.stats["busy"] += 1
            return self._degrade(preds, unsure, "teacher busy: too many calls in flight")
        student = [(preds[i].label, preds[i].confidence) for i in unsure]
        future = self._pool.submit(self._ask, asked, student)
        try:
            answers = future.result(timeout=self.wait)
        except FutureTimeout:
            return self._degrade(preds, unsure, f"teacher did not answer within {self.wait:g} s")
        except Exception as exc:  # the teacher is down: degrade to the student's answer, and say why
            self.stats["teacher_errors"] += 1
            return self._degrade(preds, unsure, f"teacher unavailable: {type(exc).__name__}: {_line(exc)}")
        for i, r in zip(unsure, answers, strict=True):
            if r.status == "ok" and r.label is not None:
                score = float(r.probs[self.labels.index(r.label)]) if r.probs is not None else 1.0
                preds[i] = Prediction(r.label, score, source="teacher", confidence=preds[i].confidence)
                self.stats["teacher"] += 1
            else:
                preds[i].error = f"teacher: {r.status}: {r.reason}"
                self.stats["deferred"] += 1
        return preds

    def _degrade(self, preds: list[Prediction], unsure: list[int], reason: str) -> list[Prediction]:
        for i in unsure:
            preds[i].error = reason
        self.stats["deferred"] += len(unsure)
        return preds

    def _ask(self, texts: list[str], student: list[tuple[str, float | None]]) -> list[Any]:
        """One teacher call, in the pool; its answers are stored even when the caller stopped waiting."""
        try:
            answers: list[Any] = self.teacher.answer(texts)
            self._store(texts, answers, student)
            return answers
        finally:
            self._slots.release()

    def _store(self, texts: list[str], answers: list[Any], student: list[tuple[str, float | None]]) -> None:
        """Every answer the teacher gave (rejected ones too, as collect stores them: never trained on)."""
        if self.store_path is None:
            return
        answered = [(text, r) for text, r in zip(texts, answers, strict=True) if r.status != "failed"]
        if not answered:
            return  # a failed call is not an answer: it will be asked again when the input comes back
        with self._lock, PairStore(self.store_path) as store:
            # as collect stores them: the teacher's own relevance score is dropped unless the task's rule is
            # `teacher`, so the task's rule (kNN, max cosine) scores these pairs when the next collect, run or
            # `pairs import` refreshes relevance — a score on another scale would be judged by its threshold
            Relevance(self.task, store, self.teacher).fill([t for t, _ in answered], [r for _, r in answered])
            pairs = [pair_of(TaskInput(text, SOURCE), r, self.task) for text, r in answered]
            # the teacher's labels (the order of its soft labels) and spec, as collect registers them: a serving
            # host's own store can then be exported and imported into the training run (`tsd-edge pairs`)
            store.register_teacher(self.teacher.fingerprint, self.task.label_names, self.teacher.spec)
            self.stats["stored"] += store.add(self.teacher.fingerprint, pairs)
            # provenance beside the store, one JSON line per answer, appended after the pairs are committed
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            with self.store_path.with_name("deferred.jsonl").open("a", encoding="utf-8") as log:
                for text, r, (label, confidence) in zip(texts, answers, student, strict=True):
                    row = {
                        "time": now,
                        "package": f"{self.name}-{self.target}",
                        "input_hash": input_key(text),
                        "student": label,
                        "confidence": confidence,
                        "teacher": r.label,
                        "status": r.status,
                    }
                    log.write(json.dumps(row) + "\n")
                log.flush()
                os.fsync(log.fileno())

    def close(self) -> None:
        self._pool.shutdown(wait=True)  # answers on their way are still stored
        self.model.close()


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]
