"""report.html: the stage table, the chart with its threshold line, the evidence behind the figures."""

from __future__ import annotations

from pathlib import Path

from conftest import Ran, tsd
from tsd_edge.agreement import compare
from tsd_edge.report import render


def test_run_writes_the_report(pipeline: tuple[Path, Path, Ran]) -> None:
    task, workdir, ran = pipeline
    assert ran.code == 0
    page = (workdir / "report.html").read_text()
    for needle in ("<svg", "student", "onnx", "cpu-x86", "threshold 0.7", "Per-label agreement"):
        assert needle in page
    again = tsd("report", task, "--workdir", workdir)
    assert again.code == 0 and "report.html" in again.out


def test_render_marks_a_failing_stage_and_escapes_inputs() -> None:
    good = compare("student", ["a", "b"] * 50, ["a", "b"] * 50, threshold=0.9)
    bad = compare("cpu-x86", ["a", "b"] * 50, ["a"] * 100, threshold=0.9, texts=["<script>x</script>"] * 100)
    page = render("demo", [good, bad])
    assert "does not hold" in page and "#c62828" in page  # the failing bar is red
    assert "<script>x" not in page and "&lt;script&gt;" in page


def test_report_before_any_run(tmp_path: Path) -> None:
    from slices import write_slice

    task = write_slice(tmp_path)
    ran = tsd("report", task, "--workdir", tmp_path / "w")
    assert ran.code == 2 and "no reports" in ran.err
