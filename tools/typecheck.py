"""Type-check the tsd_edge package with mypy and pyproject's [tool.mypy], TensorRT's API included.

What it checks: the whole package by default (toolkit/ imported as tsd_edge, exporters/ as tsd_edge.exporters),
or the MODULEs named (then the modules they import are read for their types but not reported on).
tests/test_static_checks.py runs it over the package; tests/test_tensorrt.py and tests/test_device_ssh.py over
the modules that call TensorRT.

Two things mypy cannot do alone:
- pyproject's package-dir maps folders onto the package, which mypy cannot see from the folders: the import
  layout is rebuilt from symlinks in a cache folder that stays in one place (per checkout), so that mypy's own
  cache there stays valid and a second run takes seconds;
- TensorRT cannot be installed on machines without NVIDIA's package index, so its modules are checked against
  `tensorrt-stubs` (generated from TensorRT 10.13's bindings), installed with --no-deps into the cache folder,
  never into the venv: installed there, their `tensorrt/` folder would make `import tensorrt` succeed as an
  empty namespace package. Two generated mistakes make mypy refuse them; they are fixed in the cached copy
  (not vendored):
  - parameters named `in` (a Python keyword) in the IPluginV2/V3 methods: renamed `in_`;
  - `INetworkDefinition.add_scale_nd` puts `channel_axis` without a default after defaulted parameters.

Usage: python tools/typecheck.py [--cache-dir DIR] [--tensorrt] [MODULE ...]   (exit status is mypy's)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

STUBS = "tensorrt-stubs==10.13.0.35.1"
TENSORRT_MODULES = (
    "tsd_edge.runtime.backends.tensorrt",
    "tsd_edge.runtime.backends.tensorrt_build",
    "tsd_edge.runtime.device",
    "tsd_edge.exporters.tensorrt",
    "tsd_edge.exporters.tensorrt.loader",
)
ROOT = Path(__file__).resolve().parent.parent


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


def package_tree(src: Path) -> Path:
    """The import layout pyproject's package-dir gives (toolkit/ as tsd_edge, exporters/ as tsd_edge.exporters),
    made of symlinks, so mypy resolves `tsd_edge.*` imports the way Python does. Made again on every run (a
    module added or removed), in place, so that the paths mypy's cache knows stay the same."""
    pkg = src / "tsd_edge"
    pkg.mkdir(parents=True, exist_ok=True)
    want = {p.name: p for p in (ROOT / "toolkit").iterdir() if p.name != "__pycache__"}
    want.update(exporters=ROOT / "exporters", profiles=ROOT / "profiles")
    for link in pkg.iterdir():
        if link.name not in want or not link.is_symlink() or link.resolve() != want[link.name].resolve():
            link.unlink()
    for name, target in want.items():
        if not (pkg / name).is_symlink():
            (pkg / name).symlink_to(target)
    return src


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tsd-edge"
    checkout = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    parser.add_argument("--cache-dir", type=Path, default=home / "typecheck" / checkout)
    parser.add_argument("--stubs-dir", type=Path, default=home / "tensorrt-stubs")
    parser.add_argument("--tensorrt", action="store_true", help=f"the modules that call TensorRT: {TENSORRT_MODULES}")
    parser.add_argument("modules", nargs="*", help="default: the whole package (-p tsd_edge)")
    args = parser.parse_args()
    modules = [*args.modules, *(TENSORRT_MODULES if args.tensorrt else ())]
    fix(install(args.stubs_dir))
    package = package_tree(args.cache_dir / "src")
    env = {**os.environ, "MYPYPATH": os.pathsep.join([str(package), str(args.stubs_dir)])}
    # a cache for each way of running: the options differ (follow-imports), and mypy's cache is only valid for
    # the options it was written with, so one cache for both would be rewritten at every switch
    cache = args.cache_dir / ("mypy_cache-modules" if modules else "mypy_cache")
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(cache)]
    if modules:
        cmd.append("--follow-imports=silent")
        for module in modules:
            cmd += ["-m", module]
    else:
        cmd += ["-p", "tsd_edge"]
    return subprocess.run(cmd, env=env, cwd=args.cache_dir).returncode


if __name__ == "__main__":
    sys.exit(main())
