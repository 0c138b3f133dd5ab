"""The edge runtime: everything that runs a packaged artifact, and nothing else.

    load(path) -> Model          verify a .tsdpkg, open its tokenizer and its artifact's runner
    Model.predict(texts)         labels and scores; Model.logits(texts) the raw outputs
    backends.open_runner(a)      the one runner per backend (onnxruntime, openvino, tensorrt)

Python 3.8+, numpy, `tokenizers` and the backend's runtime only: no torch, transformers, pydantic,
teacher or trainer, so it installs on JetPack 5 (Python 3.8) and 6 (3.10) and on any CI runner. The
gate, `bench`, `predict`, `serve` and the device side of `--device ssh://` all run artifacts through it.
"""

from __future__ import annotations

from .artifact import Artifact, Batch, Runner
from .model import Model, Prediction, load
from .package import Package, PackageIntegrityError, read_package

__all__ = [
    "Artifact",
    "Batch",
    "Model",
    "Package",
    "PackageIntegrityError",
    "Prediction",
    "Runner",
    "load",
    "read_package",
]
