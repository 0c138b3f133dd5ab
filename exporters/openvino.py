"""OpenVINO backend: IR (model.xml + model.bin) for Intel CPUs, FP32 or INT8 through NNCF.

INT8 is NNCF's post-training quantization (`nncf.quantize`, transformer model type so LayerNorm,
Softmax and the mask arithmetic stay in floating point), calibrated on the task's own inputs.
The runner pins FP32 inference precision: on CPUs with AMX or AVX-512 BF16 OpenVINO would
otherwise run an FP32 IR in BF16 and the check would not measure what the profile says.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..digest import sha256_file
from ..errors import InputError, RuntimeMissingError
from ..runtime.backends.openvino import import_openvino
from .base import Artifact, Backend, Batch

if TYPE_CHECKING:  # pydantic is not needed to run an artifact
    from ..targets import Profile

INPUTS = ("input_ids", "attention_mask")


class OpenVinoBackend(Backend):
    name = "openvino"

    def available(self) -> bool:
        try:
            import_openvino()
        except RuntimeMissingError:
            return False
        return True

    def build(self, onnx_path: Path, profile: Profile, calibration: Sequence[Batch], workdir: Path) -> Artifact:
        ov = import_openvino()
        workdir.mkdir(parents=True, exist_ok=True)
        out = workdir / "model.xml"
        if profile.precision not in ("fp32", "int8"):
            raise InputError(
                f"profile {profile.name}: the openvino backend builds fp32 or int8, not {profile.precision}"
            )
        # read_model, not convert_model: convert_model probes every framework loaded in the process (with
        # transformers loaded that probe imported BERT's modeling code: 8 s per build); ONNX needs no probe
        model = ov.Core().read_model(str(onnx_path))
        build: dict[str, Any] = {"openvino": ov.__version__, "source_onnx_sha256": sha256_file(onnx_path)}
        if profile.precision == "int8":
            model, details = _quantize(model, calibration, profile)
            build.update(details)
        # compress_to_fp16=False: the IR keeps FP32 weights, so it is the model that was checked
        ov.save_model(model, str(out), compress_to_fp16=False)
        return Artifact(
            backend=self.name, path=out, precision=profile.precision, build=build, extra_files=["model.bin"]
        )


def _quantize(model: Any, calibration: Sequence[Batch], profile: Profile) -> tuple[Any, dict[str, Any]]:
    try:
        import nncf
    except ImportError:
        raise RuntimeMissingError("OpenVINO INT8", "nncf") from None
    if not calibration:
        raise InputError("OpenVINO INT8 needs calibration inputs: the task has no relevant training inputs")
    dataset = nncf.Dataset(list(calibration), lambda batch: {k: batch[k] for k in INPUTS})
    quantized = nncf.quantize(
        model,
        dataset,
        model_type=nncf.ModelType.TRANSFORMER,
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(calibration),  # NNCF counts dataset items: our items are batches
    )
    return quantized, {
        "quantization": "NNCF post-training, transformer model type, mixed preset",
        "nncf": nncf.__version__,
        "calibration_batches": len(calibration),
    }
