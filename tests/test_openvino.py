"""OpenVINO backend on the tiny student: IR FP32 and NNCF INT8, run by its runner against ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_lowering import batches, tiny_onnx  # noqa: F401 (fixtures)
from test_student_export import tiny  # noqa: F401 (fixture)
from tsd_edge.exporters import get_backend
from tsd_edge.runtime.artifact import Artifact
from tsd_edge.runtime.backends import open_runner
from tsd_edge.runtime.backends.onnxruntime import OnnxRuntimeRunner
from tsd_edge.targets import load_profile

pytest.importorskip("openvino", reason="the openvino backend needs `pip install openvino`")


@pytest.mark.parametrize("target", ["openvino-cpu", "openvino-cpu-int8"])
def test_build_save_load_and_run(target: str, tiny_onnx: Path, batches: list, tmp_path: Path) -> None:  # noqa: F811
    profile = load_profile(target)
    backend = get_backend(profile.backend)
    assert backend.available()
    artifact = backend.build(tiny_onnx, profile, batches if profile.precision == "int8" else [], tmp_path)
    assert artifact.path.name == "model.xml" and artifact.extra_files == ["model.bin"]
    assert (tmp_path / "model.bin").is_file()
    assert artifact.build["openvino"] and artifact.build["source_onnx_sha256"]
    artifact.save_meta(tmp_path / "artifact.json")
    again = Artifact.load_meta(tmp_path / "artifact.json")
    assert again.extra_files == ["model.bin"] and again.path == artifact.path

    ort_int8: dict[int, np.ndarray] = {}
    if profile.precision == "int8":  # the yardstick: ONNX Runtime's INT8 build (cpu-x86) on the same calibration
        ort = get_backend("onnxruntime").build(tiny_onnx, load_profile("cpu-x86"), batches, tmp_path / "ort")
        with open_runner(ort, threads=1) as runner:
            ort_int8 = {id(b): runner.run(b) for b in batches}
    with OnnxRuntimeRunner(tiny_onnx, threads=1) as ref, open_runner(again, threads=1) as runner:
        for batch in batches:
            want, got = ref.run(batch), runner.run(batch)
            assert got.dtype == np.float32 and got.shape == want.shape
            if profile.precision == "fp32":
                assert np.abs(want - got).max() < 1e-4
            else:  # INT8: as close to the fp32 model as ONNX Runtime's own INT8 build of it, not merely finite
                assert np.isfinite(got).all()
                assert "NNCF" in artifact.build["quantization"]
                # within a tenth of the logits' spread, or of the order of ONNX Runtime's own INT8 error: NNCF and
                # ORT quantize differently, and a tiny random model's error varies by batch (measured 0.3-5x ORT's)
                ort_error = np.abs(want - ort_int8[id(batch)]).max()
                assert np.abs(want - got).max() <= max(5 * ort_error, 0.1 * want.std())
                assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.9


def test_openvino_refuses_fp16(tiny_onnx: Path, tmp_path: Path) -> None:  # noqa: F811
    from tsd_edge.errors import InputError

    profile = load_profile("openvino-cpu").model_copy(update={"precision": "fp16"})
    with pytest.raises(InputError, match="fp32 or int8"):
        get_backend("openvino").build(tiny_onnx, profile, [], tmp_path)
