"""Running a compiled artifact over many texts: length-bucketed batches, logits back in input order."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from .artifact import Batch
from .tokenizer import TextEncoder, length_batches


class Runs(Protocol):
    """What predict_logits needs of a runner (artifact.Runner, a student, a timed wrapper): `run`."""

    def run(self, batch: Batch) -> np.ndarray: ...


def predict_logits(runner: Runs, encode: TextEncoder, texts: Sequence[str], batch_size: int = 16) -> np.ndarray:
    """Logits (or an embed artifact's embeddings) for every text. Batches of 16: measured on Banking77's INT8
    package, ONNX Runtime peaks at 134 MiB and runs as fast as with 64 (203 MiB), because its arena grows with
    the largest batch."""
    return run_rows(runner, encode, encode.ids(texts), batch_size)


def run_rows(runner: Runs, encode: TextEncoder, rows: list[list[int]], batch_size: int = 16) -> np.ndarray:
    """The artifact's output for texts already tokenized (`encode.ids`), one row each, in input order."""
    out: np.ndarray | None = None
    for idx in length_batches([len(r) for r in rows], batch_size):
        logits = runner.run(encode.pad([rows[i] for i in idx]))
        if out is None:
            out = np.zeros((len(rows), logits.shape[1]), dtype=np.float32)
        out[idx] = logits
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)
