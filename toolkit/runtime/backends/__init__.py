"""One loader per backend: `open_runner(artifact, threads)` gives the runner for an artifact, importing only
that backend's runtime (a missing one is RuntimeMissingError naming its package, exit 4).

This is the only code that runs a compiled artifact; the build side (tsd_edge.exporters) makes artifacts
and never runs them itself.
"""

from __future__ import annotations

import importlib

from ...errors import InputError
from ..artifact import Artifact, Runner

LOADERS = {
    "onnxruntime": "tsd_edge.runtime.backends.onnxruntime:load",
    "openvino": "tsd_edge.runtime.backends.openvino:load",
    "tensorrt": "tsd_edge.runtime.backends.tensorrt:load",
}


def open_runner(artifact: Artifact, threads: int | None = None) -> Runner:
    if artifact.backend not in LOADERS:
        raise InputError(
            f"unknown backend '{artifact.backend}' in the artifact: use one of {', '.join(sorted(LOADERS))} "
            "(was it built by a newer tsd-edge?)"
        )
    module, attr = LOADERS[artifact.backend].split(":")
    return getattr(importlib.import_module(module), attr)(artifact, threads)


__all__ = ["LOADERS", "open_runner"]
