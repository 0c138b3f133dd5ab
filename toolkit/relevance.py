"""Relevance: only task-relevant pairs train the student.

An input's relevance score is its highest cosine similarity to the task's label prototypes
(the embedding teacher computes it with its answer). Pairs under the task's threshold stay in the
store, marked irrelevant, and are left out of training and of the held-out agreement. On Banking77
vs. hotel queries this score separates the two with ROC AUC 0.993; 0.40 keeps 99.2% of banking
inputs and drops 89% of hotel ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from .store import PairStore


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
    q = (
        "SELECT source, COUNT(*), SUM(relevant) FROM pairs WHERE teacher=? AND status='ok'"
        " GROUP BY source ORDER BY source"
    )
    return [SourceRelevance(src, n, int(kept or 0)) for src, n, kept in store.db.execute(q, (fingerprint,))]
