"""How sure the student is of each answer: what the hybrid system's deferral threshold is compared with.

The runtime applies a package's threshold (toolkit/deferral.py chooses it at package time); both use this.
"""

from __future__ import annotations

import numpy as np

MEASURES = ("probability", "margin")


def confidences(logits: np.ndarray, measure: str) -> np.ndarray:
    """Per-row confidence of the argmax: its softmax probability, or its margin over the runner-up."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return from_probabilities(p, measure)


def from_probabilities(p: np.ndarray, measure: str) -> np.ndarray:
    """The same from probabilities already computed (the runtime has them: no second softmax per query)."""
    if measure == "probability":
        return p.max(axis=1)
    if measure == "margin":
        if p.shape[1] < 2:
            return p[:, 0]
        top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]  # the two largest, in either order
        return np.abs(top2[:, 1] - top2[:, 0])
    raise ValueError(f"unknown confidence measure {measure!r}: use one of {', '.join(MEASURES)}")
