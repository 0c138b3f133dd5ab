"""Type-check every module that calls TensorRT against NVIDIA TensorRT's API without TensorRT installed.

The modules (MODULES): the runtime's TensorRT runner and its engine builder (the one of each, run on the
host and, shipped in the zipapp, on the device), the device side that drives them, and exporters/tensorrt.
TensorRT cannot be installed on machines without NVIDIA's package index, so they are checked
statically with mypy against `tensorrt-stubs` (generated from TensorRT 10.13's bindings). The stubs
are installed with --no-deps into a cache folder, never into the venv: installed there, their
`tensorrt/` folder would make `import tensorrt` succeed as an empty namespace package. Two
generated mistakes make mypy refuse them; they are fixed in the cached copy (not vendored):

- parameters named `in` (a Python keyword) in the IPluginV2/V3 methods: renamed `in_`;
- `INetworkDefinition.add_scale_nd` puts `channel_axis` without a default after defaulted parameters.

Usage: python tools/typecheck_tensorrt.py [--stubs-dir DIR] [MODULE ...]   (exit status is mypy's)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

STUBS = "tensorrt-stubs==10.13.0.35.1"
MODULES = (
    "tsd_edge.runtime.backends.tensorrt",
    "tsd_edge.runtime.backends.tensorrt_build",
    "tsd_edge.runtime.device",
    "tsd_edge.exporters.tensorrt",
    "tsd_edge.exporters.tensorrt.loader",
)
ROOT = Path(__file__).resolve().parent.parent
MYPY_CONFIG = """\
[mypy]
python_version = 3.11
follow_imports = silent
warn_unused_ignores = True
disallow_untyped_defs = True
check_untyped_defs = True

[mypy-cuda.*,tensorrt_libs]
ignore_missing_imports = True

[mypy-tensorrt.*,tensorrt_bindings.*]
ignore_errors = True
"""


def install(stubs_dir: Path) -> Path:
    pyi = stubs_dir / "tensorrt_bindings" / "tensorrt.pyi"
    if not pyi.is_file():
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(stubs_dir), STUBS]
        subprocess.run(cmd, check=True)
    return pyi


def fix(pyi: Path) -> int:
    text = pyi.read_text(encoding="utf-8")
    fixed, keywords = re.subn(r"(?<=[(,] )in(?=: )", "in_", text)
    fixed, defaults = re.subn(r"(power: Weights = None, channel_axis: int)\)", r"\1 = ...)", fixed)
    if fixed != text:
        pyi.write_text(fixed, encoding="utf-8")
    return keywords + defaults


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tsd-edge" / "tensorrt-stubs"
    parser.add_argument("--stubs-dir", type=Path, default=cache)
    parser.add_argument("modules", nargs="*", default=list(MODULES), help=f"default: {' '.join(MODULES)}")
    args = parser.parse_args()
    pyi = install(args.stubs_dir)
    fix(pyi)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mypy.ini"
        config.write_text(MYPY_CONFIG, encoding="utf-8")
        package = package_tree(Path(tmp) / "src")
        env = {**os.environ, "MYPYPATH": os.pathsep.join([str(package), str(args.stubs_dir)])}
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(config)]
        for module in args.modules:
            cmd += ["-m", module]
        return subprocess.run(cmd, env=env, cwd=tmp).returncode


def package_tree(src: Path) -> Path:
    """The import layout pyproject's package-dir gives (toolkit/ as tsd_edge, exporters/ as tsd_edge.exporters),
    made of symlinks, so mypy resolves `tsd_edge.*` imports the way Python does."""
    pkg = src / "tsd_edge"
    pkg.mkdir(parents=True)
    for item in (ROOT / "toolkit").iterdir():
        if item.name != "__pycache__":
            (pkg / item.name).symlink_to(item)
    (pkg / "exporters").symlink_to(ROOT / "exporters")
    (pkg / "profiles").symlink_to(ROOT / "profiles")
    return src


if __name__ == "__main__":
    sys.exit(main())
