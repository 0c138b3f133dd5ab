"""This CPU's matmul peak on a fixed number of threads: fp32 (numpy's BLAS and ONNX Runtime's MatMul) and
int8 (ONNX Runtime's MatMulInteger, uint8 × int8 → int32, what its quantized kernels use).

Square N×N matrices, N in SIZES; each figure is the best of REPEATS runs (a peak is a best case).
Run in a fresh process (`python -m benchmarks.roofline THREADS`) so the BLAS thread count is set before
numpy loads; it writes one JSON object to stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time

SIZES = (512, 1024, 2048)
REPEATS = 5


def _best(fn, flops: float) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up: first call allocates and packs
    best = min(_timed(fn) for _ in range(REPEATS))
    return flops / best / 1e9


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _ort_matmul(n: int, threads: int, integer: bool):  # type: ignore[no-untyped-def]
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if integer:
        b = rng.integers(-127, 128, size=(n, n), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
        a_type, y_type, a = TensorProto.UINT8, TensorProto.INT32, rng.integers(0, 256, (n, n), dtype=np.uint8)
    else:
        b = rng.standard_normal((n, n), dtype=np.float32)
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        a_type, y_type, a = TensorProto.FLOAT, TensorProto.FLOAT, rng.standard_normal((n, n), dtype=np.float32)
    graph = helper.make_graph(
        [node],
        "matmul",
        [helper.make_tensor_value_info("a", a_type, [n, n])],
        [helper.make_tensor_value_info("y", y_type, [n, n])],
        [numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"a": a})


def measure(threads: int) -> dict:
    import numpy as np

    out: dict = {"threads": threads, "sizes": list(SIZES), "repeats": REPEATS, "gflops": {}}
    for n in SIZES:
        flops = 2.0 * n**3
        x = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        y = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
        out["gflops"][f"numpy_fp32_{n}"] = _best(lambda x=x, y=y: x @ y, flops)
        out["gflops"][f"ort_fp32_{n}"] = _best(_ort_matmul(n, threads, integer=False), flops)
        out["gflops"][f"ort_int8_{n}"] = _best(_ort_matmul(n, threads, integer=True), flops)
    g = out["gflops"]
    out["fp32_peak_gflops"] = max(v for k, v in g.items() if "fp32" in k)
    out["int8_peak_gops"] = max(v for k, v in g.items() if "int8" in k)
    out["blas"] = _blas()
    return out


def _blas() -> str:
    import numpy as np

    try:
        config = np.show_config(mode="dicts")  # numpy >= 1.25
        return str(config.get("Build Dependencies", {}).get("blas", {}).get("name", "unknown"))
    except TypeError:
        return "unknown"


if __name__ == "__main__":
    n_threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n_threads)  # before numpy is imported (it is imported inside measure)
    sys.stdout.write(json.dumps(measure(n_threads)) + "\n")
