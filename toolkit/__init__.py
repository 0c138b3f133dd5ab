"""tsd-edge: distil a teacher into a small task-specific student, compile it, gate it.

The import package is deliberately light: importing ``tsd_edge`` pulls in no torch, transformers,
runtime or numpy. Heavy libraries are imported inside the functions that need them; the public names
below are imported on first use.

    tsd_edge.load("x.tsdpkg") -> Model     a verified package, ready to answer: .predict(texts), .logits(texts)
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Model", "Prediction", "__version__", "load"]

_LAZY = {"load": "runtime.model", "Model": "runtime.model", "Prediction": "runtime.model"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
