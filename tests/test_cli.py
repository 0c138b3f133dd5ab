"""The CLI's contract: instant help, one-line errors with exit code 2 for bad input, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Ran, tsd
from slices import write_slice


def _one_line_error(ran: Ran, code: int, *needles: str) -> None:
    assert ran.code == code, ran.out + ran.err
    assert "Traceback" not in ran.err + ran.out
    lines = [ln for ln in ran.err.splitlines() if ln.strip()]
    assert len(lines) == 1, ran.err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\nfrom tsd_edge.cli import main\nsys.argv=['tsd-edge','--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('torch', 'transformers', 'onnxruntime', 'onnx', 'sentence_transformers')\n"
        "heavy = sorted(m for m in heavy if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "collect" in proc.stdout and "gate" in proc.stdout
    assert "HEAVY []" in proc.stdout, proc.stdout


def test_the_public_api_is_declared_and_import_stays_light() -> None:
    """Every name in tsd_edge.__all__ resolves; `import tsd_edge` itself pulls in no numpy, torch or runtime."""
    code = (
        "import sys\nimport tsd_edge\n"
        "light = sorted(m for m in ('numpy', 'torch', 'onnxruntime', 'pydantic') if m in sys.modules)\n"
        "missing = [n for n in tsd_edge.__all__ if getattr(tsd_edge, n, None) is None]\n"
        "print('LIGHT', light, 'MISSING', missing)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "LIGHT [] MISSING []" in proc.stdout, proc.stdout + proc.stderr
    import tsd_edge

    assert {"load", "load_task", "run", "RunContext", "RunDir", "RunResult", "StageResult"} <= set(tsd_edge.__all__)
    assert tsd_edge.run.__module__ == "tsd_edge.pipeline" and tsd_edge.RunContext.__module__ == "tsd_edge.context"


@pytest.mark.parametrize(
    "command", ["collect", "distill", "export", "compile", "check", "package", "run", "gate", "profiles"]
)
def test_every_command_has_help(command: str) -> None:
    ran = tsd(command, "--help")
    assert ran.code == 0 and "Usage" in ran.out


def test_missing_task_file(tmp_path: Path) -> None:
    _one_line_error(tsd("run", tmp_path / "nope.yaml"), 2, "task file not found", "nope.yaml")


def test_malformed_task_names_file_line_and_field(tmp_path: Path) -> None:
    task = write_slice(tmp_path, extra="agreement_threshold: 0.9\n")
    _one_line_error(tsd("collect", task), 2, "task.yaml:12", "agreement_threshold", "unknown field")


def test_task_with_bad_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "task.yaml"
    bad.write_text("name: x\nlabels: [a, b\ninputs: []\n")
    _one_line_error(tsd("distill", bad), 2, "task.yaml", "not valid YAML")


def test_unknown_target_suggests_the_closest(tmp_path: Path) -> None:
    task = write_slice(tmp_path)
    _one_line_error(
        tsd("compile", task, "--target", "cpu-x68", "--workdir", tmp_path / "w"),
        2,
        "unknown target 'cpu-x68'",
        "did you mean 'cpu-x86'",
    )


def test_unknown_label_in_data(tmp_path: Path) -> None:
    task = write_slice(tmp_path)
    test_csv = tmp_path / "data" / "test.csv"
    test_csv.write_text(test_csv.read_text() + "where is my parcel,parcel_tracking\n")
    _one_line_error(
        tsd("collect", task, "--workdir", tmp_path / "w"), 2, "unknown label 'parcel_tracking'", "test.csv:"
    )


def test_stage_before_its_input_exists(tmp_path: Path) -> None:
    task = write_slice(tmp_path)
    _one_line_error(tsd("export", task, "--workdir", tmp_path / "w"), 2, "no student", "tsd-edge distill")


def test_gate_on_missing_or_foreign_file(tmp_path: Path) -> None:
    _one_line_error(tsd("gate", tmp_path / "none.tsdpkg"), 2, "package not found")
    junk = tmp_path / "junk.tsdpkg"
    junk.write_bytes(b"not a tar at all" * 100)
    _one_line_error(tsd("gate", junk), 2, "not a tsd-edge package")


def test_profiles_lists_cpu_x86() -> None:
    ran = tsd("profiles")
    assert ran.code == 0 and "cpu-x86" in ran.out and "onnxruntime" in ran.out


def test_nothing_below_the_cli_draws_progress_it_reports_it() -> None:
    """The library imports no terminal library; its progress goes to the reporter the CLI (or a caller) installs."""
    code = (
        "import sys\nimport tsd_edge.collect, tsd_edge.distill, tsd_edge.relevance, tsd_edge.auto\n"
        "import tsd_edge.stages, tsd_edge.pipeline, tsd_edge.compile_check, tsd_edge.packaging\n"
        "print('DRAWS', sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'typer')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "DRAWS []" in proc.stdout, proc.stdout + proc.stderr

    from contextlib import contextmanager

    from tsd_edge.progress import progress, set_reporter

    seen: list[tuple[str, int, str | None]] = []

    @contextmanager
    def reporter(description: str, total: int):  # type: ignore[no-untyped-def]
        class Bar:
            def advance(self, n: int = 1, rate: str | None = None) -> None:
                seen.append((description, n, rate))

            def describe(self, text: str) -> None:
                seen.append((text, 0, None))

        yield Bar()

    with progress("quiet", 2) as bar:  # no reporter installed: nothing happens
        bar.advance(2)
    previous = set_reporter(reporter)
    try:
        with progress("collect", 3) as bar:
            bar.advance(1, rate="5/s")
            bar.describe("collect (done)")
    finally:
        set_reporter(previous)
    assert seen == [("collect", 1, "5/s"), ("collect (done)", 0, None)]
