"""TensorRT backend: what can be checked without TensorRT (settings, the trtexec line, refusals, a missing
runtime) runs everywhere; building and running a real engine is marked `tensorrt` and skips without it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from test_lowering import batches, tiny_onnx  # noqa: F401 (fixtures)
from test_student_export import tiny  # noqa: F401 (fixture)
from tsd_edge.errors import InputError, RuntimeMissingError
from tsd_edge.exporters import get_backend
from tsd_edge.exporters.tensorrt import TensorRTBackend
from tsd_edge.exporters.tensorrt.loader import TRTEXEC, BuildSettings, import_tensorrt, trtexec_command
from tsd_edge.runtime.backends import open_runner
from tsd_edge.targets import load_profile

HAS_TRT = importlib.util.find_spec("tensorrt") is not None and hasattr(importlib.import_module("tensorrt"), "Builder")


def _argv(target: str) -> list[str]:
    settings = BuildSettings.from_profile(load_profile(target))
    return trtexec_command(Path("model.onnx"), Path("model.engine"), settings, Path("timing.cache"))


def test_trtexec_for_trt10_is_strongly_typed_with_one_profile() -> None:
    argv = _argv("jetson-orin-nano")
    assert argv[0] == TRTEXEC
    assert "--onnx=model.onnx" in argv and "--saveEngine=model.engine" in argv
    assert "--minShapes=input_ids:1x1,attention_mask:1x1" in argv
    assert "--optShapes=input_ids:1x32,attention_mask:1x32" in argv
    assert "--maxShapes=input_ids:16x128,attention_mask:16x128" in argv
    assert "--stronglyTyped" in argv and "--memPoolSize=workspace:1024M" in argv
    assert not {"--fp16", "--int8"} & set(argv)  # precision comes from the lowered ONNX
    assert "--timingCacheFile=timing.cache" in argv
    assert not any(a.startswith("--useDLACore") for a in argv)


def test_trtexec_for_trt8_uses_builder_flags_and_workspace() -> None:
    argv = _argv("jetson-nano")
    assert "--fp16" in argv and "--stronglyTyped" not in argv
    assert "--workspace=1024" in argv  # TensorRT 8.2 predates --memPoolSize
    assert "--maxShapes=input_ids:8x64,attention_mask:8x64" in argv


def test_trtexec_for_dla_has_gpu_fallback() -> None:
    argv = _argv("jetson-xavier-nx")
    assert "--useDLACore=0" in argv and "--allowGPUFallback" in argv and "--fp16" in argv


def test_int8_flags_without_strong_typing() -> None:
    s = BuildSettings.from_profile(load_profile("jetson-agx-orin"), trt_major=8)
    assert not s.strongly_typed and s.precision_flags == ["FP16", "INT8"]
    assert BuildSettings.from_profile(load_profile("jetson-agx-orin")).precision_flags == []


def test_one_engine_builder_for_the_host_and_the_device() -> None:
    """exporters/tensorrt builds with the runtime's builder (the one the device runs from the zipapp), and its
    settings go to the device as JSON and come back equal."""
    from tsd_edge.exporters.tensorrt import loader
    from tsd_edge.runtime.backends import tensorrt_build

    assert loader.build_engine is tensorrt_build.build_engine and loader.BuildSettings is tensorrt_build.BuildSettings
    for target in ("jetson-orin-nano", "jetson-nano", "jetson-xavier-nx"):
        s = BuildSettings.from_profile(load_profile(target))
        assert BuildSettings.from_dict(s.to_dict()) == s


def test_settings_need_a_tensorrt_range() -> None:
    profile = load_profile("cpu-x86")
    with pytest.raises(InputError, match="tensorrt"):
        BuildSettings.from_profile(profile)


def test_refusal_for_device_targets_on_this_host() -> None:
    backend = TensorRTBackend()
    why = backend.refusal(load_profile("jetson-orin-nano"))
    assert why is not None and "GPU model and TensorRT version that built it" in why and "sm_87" in why
    assert backend.refusal(load_profile("gpu-x86")) is None  # built where it runs


def test_lower_writes_the_lowered_onnx_and_the_trtexec_line(tiny_onnx: Path, tmp_path: Path) -> None:  # noqa: F811
    lowered = TensorRTBackend().lower(tiny_onnx, load_profile("jetson-orin-nano"), [], tmp_path)
    assert lowered.path == tmp_path / "model.fp16.onnx"
    line = (tmp_path / "trtexec.txt").read_text()
    assert "--onnx=model.fp16.onnx" in line and "--stronglyTyped" in line
    assert (tmp_path / "lowered.json").is_file()


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_missing_tensorrt_is_exit_4_naming_the_package(tiny_onnx: Path, tmp_path: Path) -> None:  # noqa: F811
    backend = get_backend("tensorrt")
    assert not backend.available()
    with pytest.raises(RuntimeMissingError) as info:
        backend.build(tiny_onnx, load_profile("gpu-x86"), [], tmp_path)
    assert info.value.exit_code == 4 and info.value.package == "tensorrt"
    with pytest.raises(RuntimeMissingError):
        import_tensorrt()


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT and an NVIDIA GPU (pip install tensorrt cuda-python)")
def test_engine_builds_and_matches_onnx_runtime(tiny_onnx: Path, batches: list, tmp_path: Path) -> None:  # noqa: F811
    from tsd_edge.runtime.backends.onnxruntime import OnnxRuntimeRunner

    backend = TensorRTBackend()
    artifact = backend.build(tiny_onnx, load_profile("gpu-x86"), [], tmp_path)
    assert artifact.path.name == "model.engine" and (tmp_path / "timing.cache").is_file()
    for key in ("tensorrt", "device_name", "compute_capability", "onnx_sha256", "profile"):
        assert artifact.build[key]
    with OnnxRuntimeRunner(tiny_onnx, None) as ref, open_runner(artifact) as runner:
        for batch in batches:
            want, got = ref.run(batch), runner.run(batch)
            assert np.abs(want - got).max() < 2e-2 and (want.argmax(1) == got.argmax(1)).all()


def test_backend_typechecks_against_tensorrt_stubs() -> None:
    """mypy over every module that calls TensorRT — the runtime's runner and its one engine builder (host and
    device), the device entry, exporters/tensorrt — against tensorrt-stubs 10.13 (installed --no-deps into a
    cache, fixed there). tests/test_static_checks.py checks the whole package the same way."""
    import subprocess
    import sys

    tool = Path(__file__).resolve().parent.parent / "tools" / "typecheck.py"
    ran = subprocess.run([sys.executable, str(tool), "--tensorrt"], capture_output=True, text=True, timeout=300)
    if ran.returncode != 0 and "mypy" not in ran.stdout and "error" in ran.stderr.lower() and "pip" in ran.stderr:
        pytest.skip(f"could not install tensorrt-stubs: {ran.stderr.strip().splitlines()[-1]}")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Success: no issues found in 5 source files" in ran.stdout
