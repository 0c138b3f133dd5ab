"""What a student is trained toward and judged on while it trains, one objective per task kind.

distill.py owns the loop (batches, optimizer, early stopping, saving); an objective owns the rest:
- `train_on(pairs)` then `loss(output, embedding, rows)`: the per-example loss of one batch (`rows`: indices
  into the training pairs);
- `eval_texts`: what a student or artifact is run on to be judged (the held-out inputs; for embed also the
  corpus their neighbours are searched in), and `report(outputs, stage, reference)`: its agreement report in
  the schema of every stage (RunContext.report uses it for export, compile and check); `score(outputs)`: the
  figure early stopping follows.

classify: cross-entropy on the teacher's label, KL to its soft labels at a temperature, 1 − cosine to its
sentence embedding (the teacher's geometry is what its labels come from).
embed: 1 − cosine to the teacher's embedding, and KL between the student's and the teacher's in-batch
neighbour distributions (each student query against the teacher's embeddings of the batch, at τ = 0.05): the
cosine term puts each vector in place, the neighbour term keeps the order of neighbours that retrieval reads,
against the teacher-built index (the asymmetric case).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .agreement import AgreementReport, compare
from .task import Task

if TYPE_CHECKING:
    import torch

    from .store import Pair

NEIGHBOUR_TEMPERATURE = 0.05


def corpus_of(train: list[Pair], size: int) -> list[Pair]:
    """The training pairs an embed task's neighbours are searched in: the first `size` with the teacher's
    embedding, in input-hash order (a fixed sample, which grows only when the pool does)."""
    return [p for p in train if p.embedding is not None][:size]


def embeddings(pairs: list[Pair]) -> np.ndarray:
    """The teacher's embeddings of `pairs`, one row each (every pair an embed task trains on or judges by has one)."""
    rows = [p.embedding for p in pairs]
    if any(r is None for r in rows):
        raise ValueError("a pair without the teacher's embedding")
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)  # type: ignore[arg-type]


class Classify:
    def __init__(self, task: Task, held: list[Pair], labels: list[str] | None = None) -> None:
        self.task, self.held = task, held
        self.labels = labels if labels is not None else task.label_names  # the student's, in its logits' order
        self.eval_texts = [p.input for p in held]

    def train_on(self, train: list[Pair]) -> None:
        import torch

        index = {name: i for i, name in enumerate(self.labels)}
        self.hard = torch.tensor([index[p.label] for p in train])  # type: ignore[index]
        probs = [p.probs for p in train]
        self.soft = torch.from_numpy(np.stack(probs)) if all(p is not None for p in probs) else None  # type: ignore[arg-type]
        embs = [p.embedding for p in train]
        usable = self.task.training.loss.embedding > 0 and all(e is not None for e in embs)
        self.emb = torch.from_numpy(np.stack(embs)) if usable else None  # type: ignore[arg-type]

    def loss(self, output: torch.Tensor, embedding: torch.Tensor, rows: list[int]) -> torch.Tensor:
        import torch.nn.functional as F

        cfg, device = self.task.training, output.device
        per = cfg.loss.hard * F.cross_entropy(output, self.hard[rows].to(device), reduction="none")
        if self.soft is not None and cfg.loss.soft > 0:
            T = cfg.soft_temperature
            target = self.soft[rows].to(device)
            if T != 1.0:
                target = F.softmax(target.clamp_min(1e-12).log() / T, dim=-1)
            kl = F.kl_div(F.log_softmax(output / T, dim=-1), target, reduction="none").sum(-1)
            per = per + cfg.loss.soft * (T * T) * kl
        if self.emb is not None:
            per = per + cfg.loss.embedding * (1 - F.cosine_similarity(embedding, self.emb[rows].to(device)))
        return per

    def _predicted(self, outputs: np.ndarray) -> list[str]:
        return [self.labels[i] for i in outputs.argmax(1)]

    def score(self, outputs: np.ndarray) -> float:
        return compare("student", [p.label for p in self.held], self._predicted(outputs)).agreement

    def report(
        self, outputs: np.ndarray, stage: str = "student", reference: np.ndarray | None = None
    ) -> AgreementReport:
        spec = self.task.agreement
        return compare(
            stage,
            [p.label for p in self.held],
            self._predicted(outputs),
            threshold=spec.threshold,
            rule=spec.rule,
            texts=self.eval_texts,
            gold=[p.gold for p in self.held],
            logits=outputs if reference is not None else None,
            reference_logits=reference,
        )


class Embed:
    def __init__(self, task: Task, held: list[Pair], corpus: list[Pair]) -> None:
        self.task, self.held, self.corpus = task, held, corpus
        self.eval_texts = [p.input for p in held] + [p.input for p in corpus]
        self.held_teacher, self.corpus_teacher = embeddings(held), embeddings(corpus)

    def train_on(self, train: list[Pair]) -> None:
        import torch

        self.target = torch.from_numpy(embeddings(train))

    def loss(self, output: torch.Tensor, embedding: torch.Tensor, rows: list[int]) -> torch.Tensor:
        import torch.nn.functional as F

        w = self.task.training.loss
        target = self.target[rows].to(embedding.device)
        per = w.embedding * (1 - F.cosine_similarity(embedding, target))
        if w.neighbours > 0 and len(rows) > 1:
            student = F.normalize(embedding, dim=-1) @ target.T / NEIGHBOUR_TEMPERATURE
            teacher = target @ target.T / NEIGHBOUR_TEMPERATURE
            kl = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="none")
            per = per + w.neighbours * kl.sum(-1)
        return per

    def report(
        self, outputs: np.ndarray, stage: str = "student", reference: np.ndarray | None = None
    ) -> AgreementReport:
        from .embedding_agreement import compare_outputs

        spec, n = self.task.agreement, len(self.held)
        return compare_outputs(
            stage,
            outputs,
            self.held_teacher,
            self.corpus_teacher,
            metric=self.task.metric,
            k=spec.k,
            floor=spec.floor,
            threshold=spec.threshold,
            rule=spec.rule,
            texts=self.eval_texts[:n],
            reference=reference,
        )

    def score(self, outputs: np.ndarray) -> float:
        return self.report(outputs).agreement


Objective = Classify | Embed


def objective_of(task: Task, held: list[Pair], train: list[Pair], labels: list[str] | None = None) -> Objective:
    """The task kind's objective over `held`; `train`: the relevant training pairs (an embed task's corpus)."""
    if task.kind == "embed":
        return Embed(task, held, corpus_of(train, task.agreement.corpus))
    return Classify(task, held, labels)
