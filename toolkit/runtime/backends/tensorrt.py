"""TensorRT: run a serialized engine. The one place that knows which API each TensorRT version has.

    TensorRT 8.2 (JetPack 4.6)            bindings: set_binding_shape + execute_async_v2(bindings)
    TensorRT 8.5 – 8.6 (JetPack 5)        named tensors: set_input_shape / set_tensor_address + execute_async_v3
    TensorRT 10.x (JetPack 6, x86)        named tensors only (the bindings API is gone)
    TensorRT 10.13+ (JetPack 7, CUDA 13)  as 10.x; the CUDA runtime is libcudart.so.13

Device memory comes from the CUDA runtime library through ctypes, not cuda-python or torch: what runs a
package must not import torch (DESIGN.md), and libcudart is on every machine that has TensorRT, where a
pip-installed cuda-python often is not (JetPack 4/5). The TensorRT 10 calls are checked with mypy against
tensorrt-stubs (tools/typecheck.py); 8.x-only calls go through `Any`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import BuildError, RuntimeMissingError
from ..artifact import Artifact, Batch

# newest first: the library a TensorRT build links against is one of these
CUDART_NAMES = ("libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so.10.2", "libcudart.so")
H2D, D2H = 1, 2  # cudaMemcpyKind


def import_tensorrt() -> Any:
    """TensorRT's Python bindings, or RuntimeMissingError naming what to install."""
    try:
        import tensorrt
    except ImportError:
        raise RuntimeMissingError(
            "running a TensorRT engine (on JetPack: apt install python3-libnvinfer)", "tensorrt"
        ) from None
    if not hasattr(tensorrt, "Runtime"):  # a stubs-only or broken install imports as an empty namespace
        raise RuntimeMissingError("running a TensorRT engine (found only an empty 'tensorrt' namespace)", "tensorrt")
    return tensorrt


def api_path(version: str) -> str:
    """'tensors' (execute_async_v3, TensorRT >= 8.5) or 'bindings' (execute_async_v2, TensorRT 8.2 – 8.4)."""
    major, minor = (int(p) for p in ([*version.split("."), "0"])[:2])
    return "tensors" if (major, minor) >= (8, 5) else "bindings"


class Cuda:
    """The few CUDA runtime calls a run needs: malloc/free, copies, one stream."""

    def __init__(self) -> None:
        self.lib = self._load()
        self.lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        self.lib.cudaFree.argtypes = [ctypes.c_void_p]
        self.lib.cudaMemcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.lib.cudaStreamCreate.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        self.lib.cudaStreamSynchronize.argtypes = [ctypes.c_void_p]
        self.lib.cudaStreamDestroy.argtypes = [ctypes.c_void_p]

    @staticmethod
    def _load() -> Any:
        found = ctypes.util.find_library("cudart")
        for name in [*([found] if found else []), *CUDART_NAMES, "/usr/local/cuda/lib64/libcudart.so"]:
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
        raise RuntimeMissingError(
            "running a TensorRT engine: libcudart (the CUDA runtime) was not found; add /usr/local/cuda/lib64 to "
            "LD_LIBRARY_PATH, or",
            "nvidia-cuda-runtime-cu12",
        )

    def check(self, code: int, what: str) -> None:
        if code != 0:
            raise BuildError(f"{what} failed with CUDA error {code}: check the GPU and its driver (nvidia-smi)")

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self.check(self.lib.cudaMalloc(ctypes.byref(ptr), max(int(nbytes), 1)), "cudaMalloc")
        return int(ptr.value or 0)

    def copy(self, dst: int, src: int, nbytes: int, kind: int) -> None:
        self.check(self.lib.cudaMemcpy(dst, src, nbytes, kind), "cudaMemcpy")

    def stream(self) -> int:
        handle = ctypes.c_void_p()
        self.check(self.lib.cudaStreamCreate(ctypes.byref(handle)), "cudaStreamCreate")
        return int(handle.value or 0)


def device_facts() -> dict[str, str]:
    """Name and compute capability of GPU 0 (what an engine's metadata records), from libcudart."""
    cuda = Cuda()
    major, minor, count = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    cuda.check(cuda.lib.cudaGetDeviceCount(ctypes.byref(count)), "cudaGetDeviceCount")
    # cudaDevAttrComputeCapabilityMajor = 75, ...Minor = 76
    cuda.check(cuda.lib.cudaDeviceGetAttribute(ctypes.byref(major), 75, 0), "cudaDeviceGetAttribute")
    cuda.check(cuda.lib.cudaDeviceGetAttribute(ctypes.byref(minor), 76, 0), "cudaDeviceGetAttribute")
    name = ctypes.create_string_buffer(256)
    nvml_name = ""
    try:  # the name is in cudaDeviceProp, whose layout changes between CUDA versions: ask the driver instead
        driver = ctypes.CDLL("libcuda.so.1")
        dev = ctypes.c_int()
        if driver.cuInit(0) == 0 and driver.cuDeviceGet(ctypes.byref(dev), 0) == 0:
            driver.cuDeviceGetName(name, 256, dev)
            nvml_name = name.value.decode(errors="replace")
    except OSError:
        pass
    return {"device_name": nvml_name or "GPU 0", "compute_capability": f"{major.value}.{minor.value}"}


class TensorRTRunner:
    def __init__(self, path: Path) -> None:
        trt = import_tensorrt()
        self.trt, self.cuda = trt, Cuda()
        self.version = str(trt.__version__)
        self.path = api_path(self.version)
        self.runtime = f"tensorrt {self.version}"
        self.providers = None
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.trt_runtime = trt.Runtime(self.logger)
        self.engine = self.trt_runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BuildError(
                f"TensorRT {self.version} could not load {path.name}: an engine runs only on the GPU model and "
                "TensorRT version that built it; rebuild it on this device with `tsd-edge compile`"
            )
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.stream()
        self.names: list[str]
        if self.path == "tensors":
            self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            self.inputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        else:
            legacy: Any = self.engine  # TensorRT 8.2's bindings API, absent from the TensorRT 10 stubs
            self.names = [legacy.get_binding_name(i) for i in range(legacy.num_bindings)]
            self.inputs = [n for i, n in enumerate(self.names) if legacy.binding_is_input(i)]
        self.outputs = [n for n in self.names if n not in self.inputs]
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def __enter__(self) -> TensorRTRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        for ptr, _ in self.buffers.values():
            self.cuda.lib.cudaFree(ptr)
        self.buffers.clear()

    def _dtype(self, name: str) -> Any:
        if self.path == "tensors":
            return self.trt.nptype(self.engine.get_tensor_dtype(name))
        legacy: Any = self.engine
        return self.trt.nptype(legacy.get_binding_dtype(self.names.index(name)))

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self.buffers.get(name, (0, 0))
        if not ptr or size < nbytes:
            if ptr:
                self.cuda.lib.cudaFree(ptr)
            ptr, size = self.cuda.malloc(nbytes), nbytes
            self.buffers[name] = (ptr, size)
        return ptr

    def _shape(self, name: str) -> tuple[int, ...]:
        if self.path == "tensors":
            dims = self.context.get_tensor_shape(name)
        else:
            legacy: Any = self.context
            dims = legacy.get_binding_shape(self.names.index(name))
        return tuple(int(dims[i]) for i in range(len(dims)))

    def run(self, batch: Batch) -> np.ndarray:
        legacy: Any = self.context
        for name in self.inputs:
            host = np.ascontiguousarray(batch[name], dtype=self._dtype(name))  # TensorRT 8 wants int32 ids
            ptr = self._buffer(name, host.nbytes)
            self.cuda.copy(ptr, host.ctypes.data, host.nbytes, H2D)
            if self.path == "tensors":
                self.context.set_input_shape(name, host.shape)
                self.context.set_tensor_address(name, ptr)
            else:
                legacy.set_binding_shape(self.names.index(name), host.shape)
        results = {}
        for name in self.outputs:
            results[name] = np.empty(self._shape(name), dtype=self._dtype(name))
            ptr = self._buffer(name, results[name].nbytes)
            if self.path == "tensors":
                self.context.set_tensor_address(name, ptr)
        if self.path == "tensors":
            ok = self.context.execute_async_v3(self.stream)
        else:
            ok = legacy.execute_async_v2([self.buffers[n][0] for n in self.names], self.stream)
        if not ok:
            raise BuildError("TensorRT could not run the engine: run with --debug and see TensorRT's log")
        self.cuda.check(self.cuda.lib.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        for name, host in results.items():
            self.cuda.copy(host.ctypes.data, self.buffers[name][0], host.nbytes, D2H)
        return np.asarray(results[self.outputs[0]], dtype=np.float32)


def load(artifact: Artifact, threads: int | None = None) -> TensorRTRunner:
    return TensorRTRunner(artifact.path)
