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
from .base import Artifact, Backend, Batch

if TYPE_CHECKING:  # pydantic is not needed to run an artifact
    from ..targets import Profile

INPUTS = ("input_ids", "attention_mask")


class OnnxRuntimeBackend(Backend):
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
        ops = _ops_to_quantize(prepared)
        quantize_static(
            str(prepared),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=ops,
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


def _ops_to_quantize(onnx_path: Path) -> list[str]:
    """MatMul for the transformer students. A graph without one is the static student (toolkit/static.py):
    Gather (its embedding table: ORT then gathers int8 rows and dequantizes only those) and Gemm (its head)."""
    import onnx

    ops = {node.op_type for node in onnx.load(str(onnx_path), load_external_data=False).graph.node}
    return ["MatMul"] if "MatMul" in ops or "Gather" not in ops else ["Gather", "Gemm"]
