"""The runtime as one file for a device: `tsd-runtime.pyz`, a stdlib zipapp of the installed tsd_edge modules
that run an artifact (tsd_edge/__init__.py, errors.py, digest.py and runtime/**), run there with
`python3 tsd-runtime.pyz <command> request.json` (tsd_edge.runtime.device).

A device reached over SSH need not have tsd-edge installed: the host uploads this file with each request,
so what runs there is the same code that runs the gate, `predict` and `serve` here. It holds no pydantic,
typer, torch or trainer module (tests/test_device_ssh.py checks every import in it). Built once per content:
cached as <cache>/tsd-edge/runtime/tsd-runtime-<sha256 of its sources, 16 hex>.pyz.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipapp
from pathlib import Path

import tsd_edge

from ..runtime.device import ZIPAPP

# what the device needs, relative to the tsd_edge package folder; runtime/ is taken whole
FILES = ("__init__.py", "errors.py", "digest.py")
FOLDERS = ("runtime",)
# the entry point (zipapp's own `main=` would drop main()'s exit status)
MAIN = "import sys\n\nfrom tsd_edge.runtime.device import main\n\nsys.exit(main())\n"


def sources(root: Path | None = None) -> list[Path]:
    """The modules that go into the zipapp, relative to the installed tsd_edge folder, sorted."""
    root = root or Path(tsd_edge.__file__).parent
    names = [Path(n) for n in FILES]
    for folder in FOLDERS:
        names += sorted(p.relative_to(root) for p in (root / folder).rglob("*.py") if "__pycache__" not in p.parts)
    return sorted(names)


def digest(root: Path | None = None) -> str:
    """SHA-256 over every source's name and bytes (and the entry point): the zipapp's identity."""
    root = root or Path(tsd_edge.__file__).parent
    h = hashlib.sha256(MAIN.encode())
    for name in sources(root):
        h.update(b"\0" + name.as_posix().encode() + b"\0")
        h.update((root / name).read_bytes())
    return h.hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tsd-edge" / "runtime"


def build(cache: Path | None = None) -> Path:
    """The zipapp of the installed runtime, built into the cache unless one with the same content is there."""
    root = Path(tsd_edge.__file__).parent
    cache = cache or cache_dir()
    out = cache / f"{Path(ZIPAPP).stem}-{digest(root)[:16]}.pyz"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tsd-zipapp-", dir=cache) as tmp:
        stage = Path(tmp) / "src"
        for name in sources(root):
            (stage / "tsd_edge" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / name, stage / "tsd_edge" / name)
        (stage / "__main__.py").write_text(MAIN, encoding="utf-8")
        partial = Path(tmp) / "out.pyz"
        zipapp.create_archive(stage, partial, interpreter="/usr/bin/env python3", compressed=True)
        os.replace(partial, out)  # atomic: a concurrent build writes the same content
    return out


__all__ = ["FILES", "FOLDERS", "build", "digest", "sources"]
