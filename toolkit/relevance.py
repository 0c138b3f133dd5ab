"""Relevance: only task-relevant pairs train the student.

Every input is scored against the task with the task's sentence encoder; pairs under the threshold
stay in the store, marked irrelevant, and are left out of training and of the held-out agreement.
The rules (`relevance.method`):

- `knn` (the default when there is a reference): the mean cosine of the input to its k = 5 nearest
  *reference* inputs, texts known to be about the task (by default every row of the embedding
  teacher's examples file). The threshold is calibrated on the reference alone: each reference
  input is scored against the others (leave-one-out) and the threshold is the score that a share
  `keep` = 0.99 of them reach. No off-task data is needed to choose it.
- `max_cosine`: the best cosine to the label prototypes; threshold 0.40 unless set.
- `teacher`: the teacher's own score (the embedding teacher's max cosine) and "none of these".

Measured on Banking77 (all-MiniLM-L6-v2; reference = the 10,003 training queries; scored: the
3,080 test queries and the 997 hotel queries of NLU++, split in two halves by hash, one used to
choose k and `keep`, the other held out): kNN k = 5, keep 0.99 → threshold 0.617; keeps 99.1% of
banking test queries and drops 97.4% of the held-out hotel half (97.9% of all; ROC AUC 0.998).
The max-cosine rule at 0.40 keeps 99.5% and drops 86.9% of the same held-out half; at 0.45 it
keeps 98.8% and drops 91.7%. A reference of only 5 examples per label is too thin for kNN (keep
99.0%, drop 94.0% at best): give `relevance.reference` a few hundred on-task texts.

Scores are recomputed for every stored pair whenever the rule (method, encoder, reference, k,
keep, threshold) changes, from the embeddings the store already holds.

An embed task (`kind: embed`) has no labels, so no prototypes: `auto` is `knn` with `relevance.reference`,
and without one it is `teacher`, which keeps every answered input (an embed teacher has no "none of
these"; the rule says so when it is described). Keeping all rather than refusing: an embed task's inputs
are most often the very corpus the device will embed, and a reference is one line to add when they are
not. `max_cosine` is refused (an InputError naming the fix).

The pairs' `embedding` column is in the encoder's space for classify (the embedding teacher's own vector,
or the one relevance stores there) and for an embed task whose teacher is the embedding teacher (its model
is the encoder). An embed task's other teachers (openai, hf, python) answer in their own space: the column
is their answer, which relevance never reads as the encoder's and never overwrites; it embeds with its
encoder and keeps those vectors in the store's vector cache instead (`encoder_space`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .data import read_source
from .digest import sha256_file
from .errors import InputError
from .store import PairStore
from .task import EmbeddingTeacherSpec, InputSource, Task

DEFAULT_COSINE_THRESHOLD = 0.40
REFERENCE_CHUNK = 512  # reference inputs encoded, then stored, at a time


@dataclass
class SourceRelevance:
    source: str
    total: int
    kept: int

    @property
    def dropped(self) -> int:
        return self.total - self.kept


def summary(store: PairStore, fingerprint: str) -> list[SourceRelevance]:
    """Kept and dropped inputs per input file, so a person can see what the threshold did."""
    return [SourceRelevance(*row) for row in store.kept_by_source(fingerprint)]


@dataclass
class Rule:
    method: str
    threshold: float
    key: str
    reference: int = 0  # reference inputs (knn) or prototypes (max_cosine)
    keeps_all: bool = False  # an embed task without a reference: every answered input is kept

    def describe(self) -> str:
        if self.method == "knn":
            return f"kNN ≥ {self.threshold:.3f}"
        if self.keeps_all:
            return "none: every answered input kept (no relevance.reference)"
        return f"{'max cosine' if self.method == 'max_cosine' else 'teacher score'} ≥ {self.threshold:.2f}"


class Relevance:
    """The task's relevance rule over one teacher's pairs in one store."""

    def __init__(self, task: Task, store: PairStore, teacher: Any) -> None:
        self.task = task
        self.spec = task.relevance
        self.store = store
        self.teacher = teacher
        self.encoder = task.encoder
        self.shared = encoder_space(task)
        self.reference_source = self.spec.reference or _examples_source(task)
        embeds = task.kind == "embed"
        method = self.spec.method
        if method == "auto":
            method = "knn" if self.reference_source is not None else ("teacher" if embeds else "max_cosine")
        if method == "knn" and self.reference_source is None:
            raise InputError("relevance.method knn needs relevance.reference: a file of on-task texts")
        if method == "max_cosine" and embeds:
            raise InputError(
                "relevance.method max_cosine scores inputs against label prototypes and an embed task has no labels:"
                " use knn with relevance.reference (a file of on-task texts), or teacher to keep every input"
            )
        self.method = method
        self.keeps_all = embeds and method == "teacher"

    def preflight(self) -> None:
        """Read the reference file now (an InputError if it is bad), before any teacher call."""
        if self.method == "knn" and self.reference_source is not None:
            read_source(self.reference_source, self.task)

    # -- what the rule depends on --------------------------------------------------------------------

    @cached_property
    def key(self) -> str:
        parts: dict[str, Any] = {"method": self.method, "threshold": self.spec.threshold, "encoder": self.encoder}
        if self.method == "knn":
            src = self.reference_source
            assert src is not None
            parts |= {"k": self.spec.k, "keep": self.spec.keep, "reference": src.model_dump(mode="json")}
            parts["reference_sha256"] = sha256_file(self.task.path(src.path))
        elif self.method == "max_cosine":
            parts["teacher"] = getattr(self.teacher, "fingerprint", None)
            parts["labels"] = [s.model_dump() for s in self.task.label_specs]
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    # -- during collection ---------------------------------------------------------------------------

    def fill(self, texts: list[str], responses: list[Any]) -> None:
        """Before answers are stored: drop the teacher's own score unless the rule is `teacher`.

        Embeddings and scores come later, in `refresh`, in large batches: computing them per commit
        would stall a fast remote teacher behind the encoder.
        """
        if self.method == "teacher":
            return
        for r in responses:
            r.relevance = None

    # -- after collection ----------------------------------------------------------------------------

    def refresh(self, fingerprint: str) -> Rule:
        """Score the pairs that have no score (all of them when the rule changed), store the rule, mark pairs."""
        meta_key = f"relevance/{fingerprint}"
        old = self.store.get_meta(meta_key)
        if self.method == "teacher":
            threshold = self.spec.threshold if self.spec.threshold is not None else 0.40
            rule = Rule("teacher", threshold, self.key, keeps_all=self.keeps_all)
        else:
            rows = self.store.unscored(fingerprint, all_=old is None or old.get("key") != self.key)
            if not rows and old is not None and old.get("key") == self.key:
                rule = Rule(old["method"], old["threshold"], old["key"], old.get("reference", 0))
            else:
                rule = self._score(fingerprint, rows)
        self.store.set_meta(meta_key, rule.__dict__)
        self.store.mark_relevance(fingerprint, rule.threshold)
        return rule

    def _score(self, fingerprint: str, rows: list[tuple[str, str, bytes | None]]) -> Rule:
        keys = [r[0] for r in rows]
        if self.shared:
            emb = {k: np.frombuffer(b, dtype="<f4") for k, _, b in rows if b is not None}
        else:  # the column holds the teacher's answer, in its own space: the encoder's vectors are cached apart
            emb = self.store.vectors(self.encoder, keys)
        missing = [(k, text) for k, text, _ in rows if k not in emb]
        if missing:
            from .progress import progress

            with progress("relevance: embedding", total=len(missing)) as bar:
                for start in range(0, len(missing), 1024):
                    part = missing[start : start + 1024]
                    new = dict(zip([k for k, _ in part], self._embed([t for _, t in part]), strict=True))
                    if not self.shared:
                        self.store.add_vectors(self.encoder, new)
                    emb.update(new)
                    bar.advance(len(part))
        x = np.stack([emb[k] for k in keys]).astype(np.float32) if rows else np.zeros((0, 1), np.float32)
        scores, rule = self.score(fingerprint, keys, x)
        self.store.set_scores(fingerprint, keys, scores, x if self.shared else None)
        return rule

    def score(self, fingerprint: str, keys: list[str], x: np.ndarray) -> tuple[np.ndarray, Rule]:
        """The rule's score of each input (`keys`, their embeddings `x`) and the rule with its threshold: the
        task's, else the one calibrated before under the same rule (stored), else calibrated now."""
        stored = self.store.get_meta(f"relevance/{fingerprint}") or {}
        threshold = self.spec.threshold
        if threshold is None and stored.get("key") == self.key and stored.get("method") == self.method:
            threshold = stored["threshold"]
        if self.method == "knn":
            ref_keys, ref = self.reference_embeddings(fingerprint)
            scores = knn_scores(x, ref, self.spec.k, [ref_keys.get(k) for k in keys])
            if threshold is None:
                threshold = calibrate(ref, self.spec.k, self.spec.keep)
            return scores, Rule("knn", float(threshold), self.key, len(ref))
        protos = self.prototypes()
        scores = (x @ protos.T).max(axis=1) if len(x) else np.zeros(0)
        threshold = threshold if threshold is not None else DEFAULT_COSINE_THRESHOLD
        return scores, Rule("max_cosine", float(threshold), self.key, len(protos))

    def keeps(self, fingerprint: str, keys: list[str], vectors: dict[str, np.ndarray]) -> list[bool]:
        """Whether the rule would keep each input (by its embedding in `vectors`), judged before it is asked
        (the `auto` loop): the same scores and threshold `refresh` marks stored pairs with."""
        if self.method == "teacher" or not keys:
            return [True] * len(keys)
        scores, rule = self.score(fingerprint, keys, np.stack([vectors[k] for k in keys]).astype(np.float32))
        return [bool(s >= rule.threshold) for s in scores]

    # -- reference and prototypes --------------------------------------------------------------------

    def reference_embeddings(self, fingerprint: str) -> tuple[dict[str, int], np.ndarray]:
        """The reference inputs' embeddings ({input hash: row}, matrix), from the store where it has them."""
        src = self.reference_source
        assert src is not None
        texts = {item.key: item.text for item in read_source(src, self.task)}
        known = self.store.vectors(self.encoder, list(texts), fingerprint if self.shared else None)
        todo = [k for k in texts if k not in known]
        # stored chunk by chunk: a killed collection keeps what was encoded
        for start in range(0, len(todo), REFERENCE_CHUNK):
            part = todo[start : start + REFERENCE_CHUNK]
            new = dict(zip(part, self._embed([texts[k] for k in part]), strict=True))
            self.store.add_vectors(self.encoder, new)
            known.update(new)
        order = list(texts)
        return {k: i for i, k in enumerate(order)}, np.stack([known[k] for k in order]).astype(np.float32)

    def prototypes(self) -> np.ndarray:
        from .teachers import can_embed

        if can_embed(self.teacher):  # the teacher's own label vectors
            return np.asarray(self.teacher.prototypes, dtype=np.float32)
        texts = [s.description or s.name.replace("_", " ") for s in self.task.label_specs]
        return self._embed(texts)

    def _embed(self, texts: list[str]) -> np.ndarray:
        from .encoder import embed

        return embed(self.encoder, texts, 64)


def encoder_space(task: Task) -> bool:
    """Whether the pairs' `embedding` column holds the task encoder's vectors (see the module's docstring)."""
    return task.kind != "embed" or isinstance(task.teacher, EmbeddingTeacherSpec)


def _examples_source(task: Task) -> InputSource | None:
    spec = task.teacher
    if isinstance(spec, EmbeddingTeacherSpec) and spec.examples is not None:
        ex = spec.examples
        return InputSource(path=ex.path, text_field=ex.text_field, label_field=ex.label_field)
    return None


def knn_scores(x: np.ndarray, ref: np.ndarray, k: int, self_index: list[int | None] | None = None) -> np.ndarray:
    """Mean cosine of each row of `x` to its k nearest rows of `ref` (a row's own entry, if given, left out)."""
    out = np.zeros(len(x), dtype=np.float32)
    if not len(x) or not len(ref):
        return out
    k = max(1, min(k, len(ref) - (1 if self_index is not None and any(i is not None for i in self_index) else 0)))
    for start in range(0, len(x), 1024):
        sims = x[start : start + 1024] @ ref.T
        if self_index is not None:
            for row, col in enumerate(self_index[start : start + 1024]):
                if col is not None:
                    sims[row, col] = -np.inf
        out[start : start + len(sims)] = np.partition(sims, -k, axis=1)[:, -k:].mean(axis=1)
    return out


def calibrate(ref: np.ndarray, k: int, keep: float) -> float:
    """The score a share `keep` of the reference reaches when each is scored against the others."""
    loo = knn_scores(ref, ref, k, list(range(len(ref))))
    return float(np.quantile(loo, 1.0 - keep))


__all__ = ["Relevance", "Rule", "SourceRelevance", "calibrate", "encoder_space", "knn_scores", "summary"]
