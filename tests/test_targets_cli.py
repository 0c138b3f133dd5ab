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


def test_run_reports_a_target_it_cannot_build_here_and_goes_on(
    pipeline: tuple[Path, Path, Ran], tmp_path: Path
) -> None:
    """The library's run(): the Jetson target is reported as not built here, cpu-x86 after it is still packaged
    and the report is written; the CLI says the same and exits 2 (a target asked for was not built)."""
    import shutil

    import tsd_edge
    from tsd_edge import NotBuildableHere, RunContext, load_task

    task, workdir, ran = pipeline
    assert ran.code == 0, ran.err
    work = tmp_path / "run"
    shutil.copytree(workdir, work)
    seen: list[str] = []
    result = tsd_edge.run(
        RunContext.open(load_task(task), work),
        targets=["jetson-orin-nano", "cpu-x86"],
        on_stage=lambda r: seen.append(r.stage),
    )
    jetson, cpu = result.targets
    assert jetson.outcome == "not built here" and isinstance(jetson.error, NotBuildableHere)
    assert jetson.package is None and "build on the device" in str(jetson.error)
    assert cpu.outcome == "packaged" and cpu.package == work / "dist" / f"{load_task(task).name}-cpu-x86.tsdpkg"
    assert result.packages == [cpu.package] and cpu.package.is_file()
    assert result.report is not None and result.report.is_file()
    assert result.exit_code == 2
    assert seen[:3] == ["collect", "distill", "export"] and "package cpu-x86" in seen

    cli = tsd("run", task, "--workdir", work, "--target", "jetson-orin-nano", "--target", "cpu-x86")
    assert cli.code == 2, cli.out + cli.err
    assert "not built here" in cli.out and "package: " in cli.out and "report: " in cli.out
