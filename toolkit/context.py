"""What every stage of one command reads, derived once per command and passed down (`RunContext`).

The task's teacher is loaded once (a python teacher is imported once, an hf teacher's weights hashed once);
the held-out pairs, the student's text encoder and labels are read once and forgotten (`refresh`) only by the
stages that change them (collect and distill). The files themselves are named by the run directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .rundir import RunDir

if TYPE_CHECKING:
    import numpy as np

    from .agreement import AgreementReport
    from .objectives import Objective
    from .runtime.tokenizer import TextEncoder
    from .store import Pair
    from .task import Task
    from .teachers import Teacher


@dataclass
class RunContext:
    """The task, its run directory and what they imply: built once by a command (`RunContext.open`)."""

    task: Task
    run: RunDir
    _teacher: Teacher | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, task: Task, workdir: Path | None = None) -> RunContext:
        """The context of `task`, working in `workdir` (default runs/<task name>/), checked before any work."""
        return cls(task, RunDir.for_task(task, workdir))

    @property
    def teacher(self) -> Teacher:
        """The task's teacher, loaded on first use."""
        if self._teacher is None:
            from .teachers import load_teacher

            self._teacher = load_teacher(self.task)
        return self._teacher

    @property
    def teacher_fingerprint(self) -> str:
        return self.teacher.fingerprint

    def _once(self, name: str, make: Any) -> Any:
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    def refresh(self) -> None:
        """Forget what was read from the pair store and the student: a stage just changed them."""
        self._cache.clear()

    @property
    def heldout(self) -> list[Pair]:
        """The relevant held-out pairs of the task's teacher: what every agreement is measured on."""
        from .store import PairStore

        def read() -> list[Pair]:
            with PairStore(self.run.pairs) as store:
                return list(store.pairs(self.teacher_fingerprint, split="heldout", relevant=True))

        return self._once("heldout", read)

    @property
    def heldout_texts(self) -> list[str]:
        return [p.input for p in self.heldout]

    @property
    def objective(self) -> Objective:
        """The task kind's objective (toolkit/objectives.py): what a student or artifact is run on to be judged
        (`eval_texts`) and how its outputs are scored (`report`)."""
        from .objectives import objective_of
        from .store import PairStore

        def make() -> Objective:
            train: list[Pair] = []
            if self.task.kind == "embed":  # the corpus neighbours are searched in
                with PairStore(self.run.pairs) as store:
                    train = list(store.pairs(self.teacher_fingerprint, split="train", relevant=True))
            labels = self.labels if self.task.kind == "classify" else []
            return objective_of(self.task, self.heldout, train, labels)

        return self._once("objective", make)

    @property
    def eval_texts(self) -> list[str]:
        """The inputs every stage runs its student or artifact on: the held-out inputs (embed: and its corpus)."""
        return self.objective.eval_texts

    @property
    def encoder(self) -> TextEncoder:
        """The student's tokenizer, as every runner of the student or its artifacts is fed."""
        from .runtime.tokenizer import TextEncoder

        make = lambda: TextEncoder(self.run.student / "tokenizer.json", self.task.student.max_length)  # noqa: E731
        return self._once("encoder", make)

    @property
    def labels(self) -> list[str]:
        """The student's label names, in the order of its logits."""
        read = lambda: json.loads((self.run.student / "labels.json").read_text(encoding="utf-8"))  # noqa: E731
        return self._once("labels", read)

    def reference_logits(self) -> np.ndarray:
        """The fp32 student's outputs on `eval_texts`, written by export (RunDir.student_logits)."""
        import numpy as np

        return np.load(self.run.student_logits)

    def report(self, stage: str, outputs: np.ndarray, reference: np.ndarray | None) -> AgreementReport:
        """The agreement of `outputs` (one row per `eval_texts` input) with the teacher, and with `reference`."""
        return self.objective.report(outputs, stage, reference)
