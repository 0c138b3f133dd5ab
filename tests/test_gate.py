"""The gate on real packages from the end-to-end run: signatures, regression against a baseline, summaries."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import Ran, tsd
from tsd_edge.agreement import AgreementReport, compare, inputs_needed, wilson


@pytest.fixture(scope="module")
def built(pipeline: tuple[Path, Path, Ran], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A private copy of the end-to-end run (task file, run dir), so these tests cannot disturb others."""
    task, workdir, ran = pipeline
    assert ran.code == 0, ran.err[-2000:]
    copy = tmp_path_factory.mktemp("gate") / "run"
    shutil.copytree(workdir, copy)
    return task, copy


def _gate(*args: str | Path, tmp: Path) -> Ran:
    return tsd("gate", *args, "--json", tmp / "g.json", "--junit", tmp / "g.xml")


def test_signed_package_verifies_only_with_its_key(built: tuple[Path, Path], tmp_path: Path) -> None:
    task, run = built
    assert tsd("keygen", tmp_path / "ci").code == 0
    assert tsd("keygen", tmp_path / "other").code == 0
    assert oct((tmp_path / "ci").stat().st_mode & 0o777) == "0o600"
    signed = tsd("package", task, "--workdir", run, "--sign", tmp_path / "ci")
    assert signed.code == 0, signed.err
    pkg = run / "dist" / "bank-slice-cpu-x86.tsdpkg"
    ok = _gate(pkg, "--trust", tmp_path / "ci.pub", tmp=tmp_path)
    assert ok.code == 0 and "signature verified" in ok.out, ok.out + ok.err
    wrong = _gate(pkg, "--trust", tmp_path / "other.pub", tmp=tmp_path)
    assert wrong.code == 1 and "signature does not verify" in wrong.out
    unsigned = tsd("package", task, "--workdir", run)  # rewrite it unsigned
    assert unsigned.code == 0
    refused = _gate(pkg, "--trust", tmp_path / "ci.pub", tmp=tmp_path)
    assert refused.code == 1 and "not signed" in refused.out
    assert tsd("keygen", tmp_path / "ci").code == 2  # never overwrites a key


def test_regression_against_a_baseline(built: tuple[Path, Path], tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    task, run = built
    good = tmp_path / "good.tsdpkg"
    shutil.copy(run / "dist" / "bank-slice-cpu-x86.tsdpkg", good)
    same = _gate(good, "--baseline", good, tmp=tmp_path)
    assert same.code == 0 and "regression" in same.out, same.out

    # a worse artifact: noise on the token embeddings of the compiled model, packaged under a lenient task
    model_path = run / "compiled" / "cpu-x86" / "model.onnx"
    model = onnx.load(str(model_path))
    emb = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)) if t.data_type == 1 else 0)
    arr = numpy_helper.to_array(emb).copy()
    arr += np.random.default_rng(0).normal(scale=3 * arr.std(), size=arr.shape).astype(arr.dtype)
    emb.CopyFrom(numpy_helper.from_array(arr, emb.name))
    onnx.save(model, str(model_path))
    # recorded as a compile that produced this artifact would be (a changed artifact without a record is refused)
    from tsd_edge import RunDir

    runs = RunDir(run)
    key = json.loads(runs.record("compile-cpu-x86").read_text())["key"]
    runs.finish("compile-cpu-x86", key, [model_path.parent / "artifact.json", model_path])
    lenient = task.parent / "lenient.yaml"
    lenient.write_text(
        task.read_text().replace(
            "agreement: {threshold: 0.7, max_drop: 0.05, min_n: 30}",
            "agreement: {threshold: 0.0, max_drop: 1.0, min_n: 30}",
        )
    )
    assert tsd("check", lenient, "--workdir", run).code == 0
    assert tsd("package", lenient, "--workdir", run).code == 0
    worse = run / "dist" / "bank-slice-cpu-x86.tsdpkg"
    failed = _gate(worse, "--baseline", good, tmp=tmp_path)
    assert failed.code == 1, failed.out
    assert "✗ regression" in failed.out and "✓ agreement" in failed.out
    assert 'name="regression"><failure' in (tmp_path / "g.xml").read_text()


def test_markdown_summary_goes_to_github_step_summary(built: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = built
    summary = tmp_path / "summary.md"
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary)}
    import subprocess
    import sys

    pkg = next((run / "dist").glob("*.tsdpkg"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tsd_edge",
            "gate",
            str(pkg),
            "--json",
            str(tmp_path / "g.json"),
            "--junit",
            str(tmp_path / "g.xml"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    # the package in dist/ holds under the rule it was packaged with (the module's earlier tests re-package it
    # only when it holds): the gate passes, and the summary, the JSON and the exit code say the same
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (verdict,) = json.loads((tmp_path / "g.json").read_text())
    assert verdict["passed"] is True
    assert next(c for c in verdict["checks"] if c["name"] == "agreement")["passed"] is True
    text = summary.read_text()
    assert text.startswith("## tsd-edge gate: ✅ all packages hold") and "| agreement | pass |" in text


def test_strict_rule_judges_the_lower_bound() -> None:
    teacher = ["a"] * 60
    predicted = ["a"] * 54 + ["b"] * 6  # 0.90 on n=60: Wilson lower bound ≈ 0.80
    point = compare("x", teacher, predicted, threshold=0.85)
    strict = compare("x", teacher, predicted, threshold=0.85, rule="strict")
    assert point and not strict
    assert strict.judged == pytest.approx(wilson(54, 60)[0])
    need = inputs_needed(0.90, 0.85)
    assert (
        need is not None and wilson(round(0.9 * need), need)[0] >= 0.85 > wilson(round(0.9 * (need - 10)), need - 10)[0]
    )
    assert inputs_needed(0.80, 0.85) is None
    report = AgreementReport(**{**strict.__dict__})
    assert report.rule == "strict" and not report


@pytest.mark.parametrize("holds", [True, False])
def test_gate_without_the_runtime_is_not_verified_unless_accepted(
    pipeline: tuple[Path, Path, Ran], tmp_path: Path, holds: bool
) -> None:
    """A TensorRT package on a runner without TensorRT: not re-run, so the agreement check does not pass
    (JUnit `skipped`, exit 1) whatever the packaged report says; --accept-packaged-report judges that report."""
    import json

    from tsd_edge.runtime.package import write_package

    _, workdir, ran = pipeline
    assert ran.code == 0
    agreement = 0.95 if holds else 0.5
    report = compare("jetson-orin-nano", ["a"] * 100, ["a"] * int(agreement * 100) + ["b"] * int(100 - agreement * 100))
    artifact = {"backend": "tensorrt", "path": "model.engine", "precision": "fp16", "build": {}, "extra_files": []}
    files = {
        "model.engine": b"\x00" * 256,  # never loaded: there is no TensorRT here
        "artifact.json": json.dumps(artifact).encode(),
        "tokenizer.json": (workdir / "student" / "tokenizer.json").read_bytes(),
        "labels.json": b'["a", "b"]',
        "heldout.jsonl": b'{"input": "where is my card", "teacher": "a"}\n',
        "report.json": json.dumps(report.to_dict()).encode(),
    }
    manifest = {"task": "t", "target": "jetson-orin-nano", "max_length": 32, "threshold": 0.9, "rule": "point"}
    pkg = write_package(tmp_path / "engine.tsdpkg", files, manifest)
    gate = _gate(pkg, tmp=tmp_path)
    assert gate.code == 1, gate.out + gate.err
    assert "NOT VERIFIED" in gate.out and "tensorrt" in gate.out and "--accept-packaged-report" in gate.out
    junit = (tmp_path / "g.xml").read_text(encoding="utf-8")
    assert 'skipped="1"' in junit and "<skipped" in junit and 'failures="0"' in junit
    accepted = _gate(pkg, "--accept-packaged-report", tmp=tmp_path)
    assert accepted.code == (0 if holds else 1), accepted.out + accepted.err
    assert "NOT RE-RUN, packaged report accepted" in accepted.out
