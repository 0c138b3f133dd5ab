"""Checking an embed teacher's vectors: one answer per input, a flat list of finite numbers, one dimension.

Every embed teacher (kind: embed) answers an input with a unit-length float32 vector. A vector that
cannot be one (missing, not numbers, non-finite, all zeros, or of another dimension than the teacher's
others) is stored as rejected with the reason, never trained on. The teacher's dimension is the one it
was told (`teacher.dimensions`), else the most common one of its first answer batch; it holds from then on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import Response, rejected


class VectorCheck:
    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim

    def settle(self, values: Sequence[Any]) -> None:
        """Fix the dimension from a batch of answers when none is known yet (the most common length)."""
        if self.dim is not None:
            return
        lengths = Counter(_length(v) for v in values)
        lengths.pop(None, None)
        lengths.pop(0, None)
        if lengths:
            self.dim = lengths.most_common(1)[0][0]

    def vector(self, value: Any) -> tuple[np.ndarray | None, str | None]:
        """The unit vector, or why `value` is not one."""
        if value is None:
            return None, "no vector for this input"
        if isinstance(value, str | bytes):
            return None, "the vector is a string, not numbers (base64? ask for encoding_format float)"
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError):  # ragged nesting
            return None, "the vector is not a flat list of numbers"
        if arr.dtype.kind not in "fiu":  # strings ("1.5" is not a number here), None, bools, objects
            return None, "the vector is not a list of numbers"
        if arr.ndim != 1 or arr.size == 0:
            return None, f"the vector is not a flat list of numbers (shape {list(arr.shape)})"
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            return None, "the vector has non-finite values (NaN or inf)"
        if self.dim is not None and arr.size != self.dim:
            return None, f"the vector has {arr.size} values, not the teacher's {self.dim}"
        norm = float(np.linalg.norm(arr))
        if norm == 0.0:
            return None, "the vector is all zeros (it has no direction)"
        return (arr / norm).astype(np.float32), None

    def response(self, value: Any, **meta: Any) -> Response:
        vec, reason = self.vector(value)
        if vec is None:
            return rejected(reason or "not a vector", _raw(value), **meta)
        return Response(label=None, embedding=vec, **meta)

    def responses(self, values: Sequence[Any]) -> list[Response]:
        self.settle(values)
        return [self.response(v) for v in values]


def _length(value: Any) -> int | None:
    if value is None or isinstance(value, str | bytes):
        return None
    try:
        return len(value)
    except TypeError:
        return None


def _raw(value: Any) -> str | None:
    if value is None:
        return None
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= 500 else text[:497] + "..."
