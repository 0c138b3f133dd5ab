"""Static checks over the package, in the suite: mypy (pyproject's [tool.mypy]) and ruff (check and format).

mypy runs through tools/typecheck.py, which gives it the package's import layout (toolkit/ as tsd_edge) and
TensorRT's API (tensorrt-stubs, installed into a cache folder on first use). Its cache stays in that folder: the
first run here took ~100 s of CPU (2 min 17 s on a loaded 2-core machine), later runs ~9 s.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_typechecks() -> None:
    ran = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "typecheck.py")], capture_output=True, text=True, timeout=900
    )
    if ran.returncode != 0 and "mypy" not in ran.stdout and "error" in ran.stderr.lower() and "pip" in ran.stderr:
        pytest.skip(f"could not install tensorrt-stubs: {ran.stderr.strip().splitlines()[-1]}")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    checked = re.search(r"Success: no issues found in (\d+) source files", ran.stdout)
    assert checked, ran.stdout
    modules = [
        p
        for d in ("toolkit", "exporters", "profiles")
        for p in (ROOT / d).rglob("*.py")
        if "__pycache__" not in p.parts
    ]
    assert int(checked[1]) == len(modules)  # every module of the package, none left out


# the Python sources only: ruff 0.17 also formats the code blocks of Markdown files, whose comments the docs align
# by hand for reading
@pytest.mark.parametrize(
    "command", [["check"], ["format", "--check", "--extend-exclude", "*.md"]], ids=["check", "format"]
)
def test_ruff_is_clean(command: list[str]) -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    ran = subprocess.run([ruff, *command, str(ROOT)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert ran.returncode == 0, ran.stdout + ran.stderr
