"""Look at report.html in a real headless browser: it renders, and its chart is drawn."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Ran

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_report_renders_its_chart_in_chromium(pipeline: tuple[Path, Path, Ran], tmp_path: Path) -> None:
    from PIL import Image

    _, workdir, ran = pipeline
    assert ran.code == 0
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1000,1400",
            f"--screenshot={shot}",
            (workdir / "report.html").resolve().as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    counts = {rgb: n for n, rgb in colours}
    bars = counts.get((0x2E, 0x7D, 0x32), 0) + counts.get((0xC6, 0x28, 0x28), 0)  # passing / failing bars
    threshold_line = counts.get((0x15, 0x65, 0xC0), 0)
    assert bars > 5_000, "the agreement bars were not drawn"
    assert threshold_line > 50, "the threshold line was not drawn"
