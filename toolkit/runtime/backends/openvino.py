"""OpenVINO: an IR (model.xml + model.bin) compiled for the CPU at FP32 inference precision.

FP32 is pinned: on CPUs with AMX or AVX-512 BF16 OpenVINO would otherwise run an FP32 IR in BF16, and
what runs would not be what was checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import RuntimeMissingError
from ..artifact import Artifact, Batch


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise RuntimeMissingError("running an openvino artifact", "openvino") from None
    return openvino


class OpenVinoRunner:
    def __init__(self, path: Path, threads: int | None, device: str = "CPU") -> None:
        ov = import_openvino()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(str(path), device, config)
        self.request = self.compiled.create_infer_request()
        self.inputs = [port.get_any_name() for port in self.compiled.inputs]
        self.providers = None
        self.runtime = f"openvino {ov.__version__}"

    def __enter__(self) -> OpenVinoRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def run(self, batch: Batch) -> np.ndarray:
        result = self.request.infer({name: batch[name] for name in self.inputs})
        return np.asarray(result[self.compiled.outputs[0]], dtype=np.float32)


def load(artifact: Artifact, threads: int | None = None) -> OpenVinoRunner:
    return OpenVinoRunner(artifact.path, threads)
