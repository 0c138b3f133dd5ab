"""Compile for real targets through the CLI on the session's Banking77-slice run: OpenVINO end to end,
and a Jetson target refused on this host after its lowered ONNX was checked here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Ran, tsd


def test_openvino_compile_check_package_gate(pipeline: tuple[Path, Path, Ran], tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="needs `pip install openvino`")
    task, workdir, ran = pipeline
    assert ran.code == 0, ran.err
    for command in ("compile", "check", "package"):
        step = tsd(command, task, "--workdir", workdir, "--target", "openvino-cpu")
        assert step.code == 0, f"{command}: {step.out}{step.err}"
    packed = next((workdir / "dist").glob("*-openvino-cpu.tsdpkg"))
    gate = tsd("gate", packed, "--json", tmp_path / "g.json", "--junit", tmp_path / "g.xml")
    assert gate.code == 0, gate.out + gate.err
    assert "PASS" in gate.out
    report = json.loads((workdir / "reports" / "openvino-cpu.json").read_text())
    assert report["fidelity"]["prediction_match"] > 0.99


def test_jetson_is_lowered_and_predicted_here_then_refused(pipeline: tuple[Path, Path, Ran]) -> None:
    task, workdir, _ = pipeline
    ran = tsd("compile", task, "--workdir", workdir, "--target", "jetson")
    assert ran.code == 2, ran.out + ran.err
    message = ran.err.strip()
    assert len(message.splitlines()) == 1
    assert "jetson-orin-nano" in message and "build on the device" in message
    assert "GPU model and TensorRT version that built it" in message
    out = workdir / "compiled" / "jetson-orin-nano"
    assert (out / "model.fp16.onnx").is_file() and (out / "trtexec.txt").is_file()
    assert not (out / "artifact.json").exists()
    predicted = json.loads((workdir / "reports" / "jetson-orin-nano-predicted.json").read_text())
    assert predicted["details"]["predicted"] is True and predicted["details"]["precision"] == "fp16"
    assert f"{predicted['agreement']:.4f}" in message
    assert predicted["fidelity"]["prediction_match"] > 0.95
    # check has nothing to check on this host, and says how to get there
    check = tsd("check", task, "--workdir", workdir, "--target", "jetson-orin-nano")
    assert check.code == 2 and "compile" in check.err
