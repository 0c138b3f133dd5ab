from __future__ import annotations

import os
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
