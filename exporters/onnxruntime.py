"""ONNX Runtime backend: graph-optimised FP32, or INT8 with static Q/DQ calibrated on the task's inputs.

INT8 quantizes the MatMul weights per channel and their activations with ranges measured on
calibration batches of the task's own inputs (`onnxruntime.quantization.quantize_static`, QDQ
format). LayerNorm, Softmax, GELU and the attention-mask arithmetic stay in FP32. ONNX Runtime
turns the Q/DQ pairs into integer kernels when it loads the model.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..digest import sha256_file
from ..errors import RuntimeMissingError
from .base import Artifact, Batch

if TYPE_CHECKING:  # pydantic is not needed to run an artifact
    from ..targets import Profile

INPUTS = ("input_ids", "attention_mask")


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


class OnnxRuntimeRunner:
    """An ONNX Runtime session. `providers` after loading: the execution providers the session registered,
    in priority order (those of the requested ones that are installed)."""

    def __init__(self, path: Path, threads: int | None, providers: Sequence[str] | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        chosen = choose_providers(providers, ort.get_available_providers())
        self.session = ort.InferenceSession(str(path), options, providers=chosen)
        self.providers: list[str] = list(self.session.get_providers())
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __enter__(self) -> OnnxRuntimeRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        del self.session

    def run(self, batch: Batch) -> np.ndarray:
        return self.session.run(None, {k: batch[k] for k in self.inputs})[0]


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def available(self) -> bool:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False
        return True

    def build(self, onnx_path: Path, profile: Profile, calibration: Sequence[Batch], workdir: Path) -> Artifact:
        if not self.available():
            raise RuntimeMissingError("the onnxruntime backend", "onnxruntime")
        import onnxruntime as ort

        workdir.mkdir(parents=True, exist_ok=True)
        out = workdir / "model.onnx"
        build = {"onnxruntime": ort.__version__, "source_onnx_sha256": sha256_file(onnx_path)}
        if profile.precision == "int8":
            build.update(quantize_static(onnx_path, out, calibration, profile.calibration.method))
        elif profile.precision == "fp16":
            from .lowering import to_fp16

            build.update(to_fp16(onnx_path, out))
        else:
            shutil.copyfile(onnx_path, out)
        if profile.providers:
            build["providers"] = list(profile.providers)  # what the runner asks for wherever it loads the artifact
        return Artifact(backend=self.name, path=out, precision=profile.precision, build=build)

    def load(self, artifact: Artifact, threads: int | None = None) -> OnnxRuntimeRunner:
        return OnnxRuntimeRunner(artifact.path, threads, artifact.build.get("providers"))


def quantize_static(
    src: Path,
    out: Path,
    calibration: Sequence[Batch],
    method: str = "minmax",
    *,
    symmetric_activations: bool = False,
    exclude: Sequence[str] = (),
) -> dict:
    """Static Q/DQ around every MatMul, calibrated on `calibration`. Symmetric int8 activations are
    what TensorRT needs (it accepts zero point 0 only); ORT on CPU runs uint8 activations faster."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it: Iterator[Batch] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.it, None)
            return None if batch is None else {k: batch[k] for k in INPUTS}

    calibrate_method = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[method]
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=list(exclude),
            per_channel=True,
            # uint8 activations: with int8 ones this CPU build of ORT falls back to kernels ~10x slower
            # than fp32 (measured on Banking77's student); agreement is the same either way
            activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calibrate_method,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": symmetric_activations},
        )
    hasher = hashlib.sha256()
    for batch in calibration:
        hasher.update(np.ascontiguousarray(batch["input_ids"]).tobytes())
    return {
        "quantization": "static QDQ, MatMul, per-channel int8 weights, "
        + ("symmetric int8 activations" if symmetric_activations else "uint8 activations"),
        "calibration_method": method,
        "not_quantized": len(exclude),
        "calibration_batches": len(calibration),
        "calibration_sha256": hasher.hexdigest(),
    }
