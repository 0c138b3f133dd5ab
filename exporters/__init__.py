"""Export and compile backends. A backend turns an ONNX file into an artifact for a target profile
and loads that artifact into a runner; the registry maps names to "module:attr", imported on use,
so a missing runtime makes only its own backend unavailable.

Backends know nothing of teachers, pair stores or training: an ONNX file, a profile and
calibration inputs in; an artifact and a runner out.
"""

from __future__ import annotations

import importlib

from ..errors import InputError
from .base import Artifact, Backend, Runner

REGISTRY: dict[str, str] = {
    "onnxruntime": "tsd_edge.exporters.onnxruntime:OnnxRuntimeBackend",
    "openvino": "tsd_edge.exporters.openvino:OpenVinoBackend",
    "tensorrt": "tsd_edge.exporters.tensorrt:TensorRTBackend",
}


def get_backend(name: str) -> Backend:
    if name not in REGISTRY:
        raise InputError(f"unknown backend '{name}': use one of {', '.join(sorted(REGISTRY))}")
    module, attr = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), attr)()


__all__ = ["REGISTRY", "Artifact", "Backend", "Runner", "get_backend"]
