"""ONNX Runtime: a session with the execution providers the artifact asks for, in its order, that are installed."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import RuntimeMissingError
from ..artifact import Artifact, Batch

# the pip package that brings each execution provider, for the error when none of a profile's is installed
PROVIDER_PACKAGES = {
    "TensorrtExecutionProvider": "onnxruntime-gpu",
    "CUDAExecutionProvider": "onnxruntime-gpu",
    "OpenVINOExecutionProvider": "onnxruntime-openvino",
    "DmlExecutionProvider": "onnxruntime-directml",
    "QNNExecutionProvider": "onnxruntime-qnn",
}


def choose_providers(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """The requested execution providers that this onnxruntime has, in the requested order (CPU when none
    is requested); RuntimeMissingError when it has none of them."""
    wanted = list(requested or ["CPUExecutionProvider"])
    chosen = [p for p in wanted if p in available]
    if not chosen:
        raise RuntimeMissingError(
            f"the profile's execution providers ({', '.join(wanted)}; this onnxruntime has {', '.join(available)}; "
            "list CPUExecutionProvider last in `providers:` to fall back to the CPU)",
            PROVIDER_PACKAGES.get(wanted[0], "onnxruntime-gpu"),
        )
    return chosen


def _ort():  # type: ignore[no-untyped-def]
    try:
        import onnxruntime
    except ImportError:
        raise RuntimeMissingError("running an onnxruntime artifact", "onnxruntime") from None
    return onnxruntime


class OnnxRuntimeRunner:
    """An ONNX Runtime session. `providers` after loading: the execution providers the session registered,
    in priority order (those of the requested ones that are installed)."""

    def __init__(self, path: Path, threads: int | None, providers: Sequence[str] | None = None) -> None:
        ort = _ort()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        chosen = choose_providers(providers, ort.get_available_providers())
        self.session = ort.InferenceSession(str(path), options, providers=chosen)
        self.providers: list[str] = list(self.session.get_providers())
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.runtime = f"onnxruntime {ort.__version__}"

    def __enter__(self) -> OnnxRuntimeRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        pass  # the session is freed with the runner; deleting it here would break a runner used twice

    def run(self, batch: Batch) -> np.ndarray:
        return np.asarray(self.session.run(None, {k: batch[k] for k in self.inputs})[0], dtype=np.float32)


def load(artifact: Artifact, threads: int | None = None) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(artifact.path, threads, artifact.build.get("providers"))
