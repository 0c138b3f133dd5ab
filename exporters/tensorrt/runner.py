"""Run a TensorRT engine: `execute_async_v3` with tensor addresses, buffers from cuda-python.

cuda-python rather than torch CUDA tensors for the device buffers: whatever runs a packaged
artifact (the gate, a device) must not import torch (DESIGN.md), and cuda-python is a small
binding to the CUDA runtime that JetPack and x86 hosts both install with pip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import RuntimeMissingError, TsdEdgeError
from .loader import import_tensorrt


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6 spells it this way
        except ImportError:
            raise RuntimeMissingError("the tensorrt runner", "cuda-python") from None
    return cudart


def _check(result: Any) -> Any:
    """cuda-python returns (error, value...) tuples; raise on an error, give back the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise TsdEdgeError(f"CUDA call failed with error {int(err)} ({err}): check the GPU and its driver")
    return values[0] if len(values) == 1 else values


def device_facts() -> dict[str, str]:
    """Name and compute capability of GPU 0, as the engine metadata records them."""
    cudart = _cudart()
    props = _check(cudart.cudaGetDeviceProperties(0))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"device_name": name.rstrip("\x00"), "compute_capability": f"{props.major}.{props.minor}"}


class TensorRTRunner:
    def __init__(self, path: Path) -> None:
        import_tensorrt()
        import tensorrt as trt

        self.cudart = _cudart()
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise TsdEdgeError(
                f"TensorRT could not load {path.name}: an engine runs only on the GPU model and TensorRT version "
                "that built it; rebuild it on this device with `tsd-edge compile`"
            )
        self.context = self.engine.create_execution_context()
        self.stream = _check(self.cudart.cudaStreamCreate())
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def __enter__(self) -> TensorRTRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        for ptr, _ in self.buffers.values():
            self.cudart.cudaFree(ptr)
        self.buffers.clear()
        self.cudart.cudaStreamDestroy(self.stream)

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self.cudart.cudaFree(ptr))
            ptr, size = _check(self.cudart.cudaMalloc(nbytes)), nbytes
            self.buffers[name] = (ptr, size)
        return ptr

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        h2d = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self.inputs:
            # TensorRT 8 takes int32 ids, 10 int64: give each engine the type it declares
            host = np.ascontiguousarray(batch[name], dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
            self.context.set_input_shape(name, host.shape)
            ptr = self._buffer(name, host.nbytes)
            _check(self.cudart.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, h2d, self.stream))
            self.context.set_tensor_address(name, ptr)
        results = {}
        for name in self.outputs:
            dims = self.context.get_tensor_shape(name)
            shape = tuple(dims[i] for i in range(len(dims)))
            results[name] = np.empty(shape, dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
            self.context.set_tensor_address(name, self._buffer(name, results[name].nbytes))
        if not self.context.execute_async_v3(self.stream):
            raise TsdEdgeError("TensorRT execute_async_v3 failed: run with --debug and see TensorRT's log")
        for name, host in results.items():
            ptr = self.buffers[name][0]
            _check(self.cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, d2h, self.stream))
        _check(self.cudart.cudaStreamSynchronize(self.stream))
        return results[self.outputs[0]].astype(np.float32)
