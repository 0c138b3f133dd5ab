from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))


@dataclass
class Ran:
    code: int
    out: str
    err: str


def tsd(*args: str | Path, cwd: Path | None = None, timeout: float = 900) -> Ran:
    """Run the real `tsd-edge` CLI in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-m", "tsd_edge", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )
    return Ran(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Ran]:
    """The real pipeline, once per test session, on a Banking77 slice: (task file, run dir, result)."""
    from slices import write_slice

    folder = tmp_path_factory.mktemp("bank-slice")
    task = write_slice(folder)
    workdir = folder / "run"
    return task, workdir, tsd("run", task, "--workdir", workdir)


@pytest.fixture(scope="session")
def hybrid_package(pipeline: tuple[Path, Path, Ran], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The end-to-end run's package again, with a `deploy:` rule (package is the only stage it changes)."""
    task, workdir, ran = pipeline
    assert ran.code == 0, ran.err[-2000:]
    folder = tmp_path_factory.mktemp("hybrid")
    shutil.copytree(task.parent / "data", folder / "data")
    shutil.copytree(workdir, folder / "run")
    hybrid_task = folder / "task.yaml"
    text = task.read_text(encoding="utf-8") + "deploy: {answered_agreement: 0.8, confidence: 0.8, min_coverage: 0.3}\n"
    hybrid_task.write_text(text, encoding="utf-8")
    packaged = tsd("package", hybrid_task, "--workdir", folder / "run")
    assert packaged.code == 0, packaged.out + packaged.err
    assert "deferral: answers when" in packaged.out
    return hybrid_task, folder / "run" / "dist" / "bank-slice-cpu-x86.tsdpkg"


@pytest.fixture(scope="session")
def embed_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `kind: embed` package (tests/embed_package.py): tiny encoder, ONNX Runtime fp32, 384-d output."""
    from embed_package import build_embed_package

    return build_embed_package(tmp_path_factory.mktemp("embed-package"))
