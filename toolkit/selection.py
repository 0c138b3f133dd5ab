"""Choosing which pool inputs to ask the teacher next, from what the student says about them.

Pure numpy: the loop (toolkit/auto.py) hands over the student's logits for the candidates, the task
encoder's sentence embeddings of the candidates and of the inputs already asked (the ones relevance
computes anyway: fixed across rounds, free after the first), and the held-out agreement per label.

Strategies (`auto.strategy` in the task file; docs/auto.md has the measurements behind the default):

- `random`: a uniform sample of the candidates (the baseline);
- `margin`: the candidates with the smallest gap between the student's two most likely labels;
- `diverse`: greedy, each pick the candidate with the highest uncertainty × distance to the nearest
  input already asked or picked, so one cluster of confusing inputs cannot eat the batch;
- `mix` (default): `diverse`, with uncertainty replaced by the student's disagreement with a cheap
  proxy × the proxy's confidence (+ a tenth of the uncertainty), weighted by the held-out disagreement
  rate of the label the proxy gives the candidate. The proxy is a nearest-neighbour vote of the
  teacher's answers to the inputs already asked, in the task encoder's space: no teacher calls, and an
  estimate of the label the teacher would give, which is the label held-out agreement is counted by.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

STRATEGIES = ("mix", "diverse", "margin", "random")
# a label the student never gets wrong on the held-out set still gets this much error, so its
# uncertain inputs are not ignored altogether (its held-out estimate comes from ~30 inputs)
ERROR_FLOOR = 0.02
MIX_UNCERTAINTY = 0.1  # the student's uncertainty's share of `mix`'s score (docs/auto.md: how it was chosen)


@dataclass
class Pool:
    """What selection sees: one row per candidate, plus the inputs already asked."""

    keys: list[str]
    logits: np.ndarray  # [n, labels]
    embeddings: np.ndarray  # [n, dim], unit length
    asked: np.ndarray  # [m, dim], unit length: training inputs already answered
    asked_labels: np.ndarray | None = None  # [m]: the teacher's label index of each asked input


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def margin(logits: np.ndarray) -> np.ndarray:
    """Probability of the most likely label minus that of the second: small = uncertain."""
    if logits.shape[1] < 2:
        return np.ones(len(logits))
    top = np.sort(softmax(logits), axis=1)[:, -2:]
    return top[:, 1] - top[:, 0]


def entropy(logits: np.ndarray) -> np.ndarray:
    """Entropy of the student's distribution over labels, scaled to 0..1."""
    p = softmax(logits)
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1) / np.log(max(logits.shape[1], 2))


def label_weights(per_label: Mapping[str, float], labels: list[str]) -> np.ndarray:
    """Per label: its held-out disagreement rate relative to the mean over labels (1 = average).

    `per_label` maps a label to its held-out agreement; a label with no held-out inputs is average."""
    errors = np.array([1.0 - per_label[name] if name in per_label else np.nan for name in labels])
    known = errors[~np.isnan(errors)]
    mean = float(known.mean()) if len(known) else 0.0
    errors = np.where(np.isnan(errors), mean, errors)
    errors = np.maximum(errors, ERROR_FLOOR)
    return errors / max(float(errors.mean()), 1e-12)


def _min_distance(x: np.ndarray, others: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Cosine distance from each row of x to its nearest row of `others` (2 when there are none)."""
    out = np.full(len(x), 2.0, dtype=np.float32)
    for start in range(0, len(others), chunk):
        sims = x @ others[start : start + chunk].T
        out = np.minimum(out, 1.0 - sims.max(axis=1))
    return np.maximum(out, 0.0)


def greedy_diverse(embeddings: np.ndarray, scores: np.ndarray, asked: np.ndarray, k: int) -> list[int]:
    """Pick k rows one at a time, each maximising score × distance to the nearest asked or picked row."""
    x = np.asarray(embeddings, dtype=np.float32)
    distance = _min_distance(x, np.asarray(asked, dtype=np.float32))
    scores = np.asarray(scores, dtype=np.float64)
    picked: list[int] = []
    taken = np.zeros(len(x), dtype=bool)
    for _ in range(min(k, len(x))):
        value = np.where(taken, -np.inf, scores * distance)
        i = int(value.argmax())
        picked.append(i)
        taken[i] = True
        distance = np.minimum(distance, np.maximum(1.0 - x @ x[i], 0.0))
    return picked


def proxy_probs(pool: Pool, n_labels: int, k: int = 10, temperature: float = 0.05) -> np.ndarray:
    """The proxy's label distribution for each candidate: a vote of its k nearest asked inputs'
    teacher labels, weighted by softmax(cosine / temperature). Uniform with nothing asked. [n, labels]"""
    out = np.full((len(pool.keys), n_labels), 1.0 / n_labels)
    if pool.asked_labels is None or len(pool.asked_labels) == 0:
        return out
    asked = np.asarray(pool.asked, dtype=np.float32)
    x = np.asarray(pool.embeddings, dtype=np.float32)
    k = min(k, len(asked))
    for start in range(0, len(x), 1024):
        sims = x[start : start + 1024] @ asked.T
        near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        near_sims = np.take_along_axis(sims, near, axis=1)
        weight = np.exp((near_sims - near_sims.max(axis=1, keepdims=True)) / temperature)
        votes = np.zeros((len(near), n_labels))
        np.add.at(votes, (np.repeat(np.arange(len(near)), k), pool.asked_labels[near].ravel()), weight.ravel())
        out[start : start + 1024] = votes / votes.sum(axis=1, keepdims=True)
    return out


def select(
    pool: Pool,
    k: int,
    strategy: str,
    *,
    labels: list[str],
    per_label: Mapping[str, float] | None = None,
    seed: int = 0,
) -> list[str]:
    """The keys of the k candidates to ask next, in the order they were picked."""
    n = len(pool.keys)
    if k <= 0 or n == 0:
        return []
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(n)[:k]
        return [pool.keys[i] for i in order]
    uncertainty = 1.0 - margin(pool.logits)
    if strategy == "margin":
        order = np.argsort(-uncertainty, kind="stable")[:k]
        return [pool.keys[i] for i in order]
    if strategy == "mix":
        proxy = proxy_probs(pool, pool.logits.shape[1])
        disagreement = 1.0 - proxy[np.arange(n), pool.logits.argmax(axis=1)]
        # a confident proxy that disagrees is a correction the student can learn; where the teacher's
        # answers nearby are split, the input sits on the teacher's own boundary, and a student at its
        # capacity learns little from it. Uncertainty breaks the ties where the proxy agrees.
        confident_disagreement = disagreement * proxy.max(axis=1)
        weights = label_weights(per_label or {}, labels)
        score = (confident_disagreement + MIX_UNCERTAINTY * uncertainty) * weights[proxy.argmax(axis=1)]
    elif strategy == "diverse":
        score = uncertainty
    else:
        raise ValueError(f"unknown selection strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    return [pool.keys[i] for i in greedy_diverse(pool.embeddings, score, pool.asked, k)]
