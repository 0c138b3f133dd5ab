"""`tsd-edge serve PKG...`: packages behind HTTP (JSON classify, KServe v2, Prometheus metrics)."""

import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import typer

from .app import SHIP, Annotated, HybridWorkdir, StoreAnswers, TeacherTask, app, guard

# typer evaluates these annotations at run time and this module runs on Python 3.8: Optional/List, no
# `from __future__ import annotations`

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def parse_packages(specs: List[str]) -> List[Tuple[Optional[str], Path]]:
    """`PATH` or `NAME=PATH` for each argument (a path that exists as given is a path, '=' or not)."""
    out: List[Tuple[Optional[str], Path]] = []
    for spec in specs:
        name, sep, rest = spec.partition("=")
        if sep and _NAME.fullmatch(name) and not Path(spec).exists():
            out.append((name, Path(rest)))
        else:
            out.append((None, Path(spec)))
    return out


def load_models(specs: List[str], trust: Optional[Path], threads: Optional[int]) -> Dict[str, Any]:
    """Each package opened and verified, by name; refuses (InputError, exit 2) on any that fails."""
    from ..errors import InputError
    from ..runtime import PackageIntegrityError, load

    models: Dict[str, Any] = {}
    try:
        for name, path in parse_packages(specs):
            if not path.is_file():
                raise InputError(f"no package at {path}: give the path of a .tsdpkg (or NAME=PATH)")
            try:
                model = load(path, trust=trust, threads=threads)
            except PackageIntegrityError as exc:
                raise InputError(f"refusing to serve {path}: {exc}") from None
            key = name or model.name
            if key in models:
                model.close()
                raise InputError(f"two packages are named {key!r}: give one a name with NAME={path}")
            models[key] = model
    except BaseException:
        for model in models.values():
            model.close()
        raise
    return models


def with_teacher(models: Dict[str, Any], task_file: Path, workdir: Optional[Path], store: bool) -> Dict[str, Any]:
    """The served package of the task in `task_file` put in front of that task's teacher (toolkit/hybrid.py)."""
    from ..errors import InputError
    from .predict import hybrid, require_training_side

    require_training_side("--teacher")
    names = {str(getattr(m, "name", None)) for m in models.values()}
    matched = {key: m for key, m in models.items() if getattr(m, "name", None) == _task_name(task_file)}
    if not matched:
        raise InputError(f"--teacher {task_file}: no served package is of that task (served: {sorted(names)})")
    return {key: hybrid(m, task_file, workdir, store) if key in matched else m for key, m in models.items()}


def _task_name(task_file: Path) -> str:
    from ..task import load_task

    return load_task(task_file).name


@app.command(rich_help_panel=SHIP)
def serve(
    packages: Annotated[List[str], typer.Argument(help="the .tsdpkg files to serve, as PATH or NAME=PATH")],
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0 for every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (0: any free port, printed at start)")] = 8000,
    api_key_env: Annotated[
        Optional[str],
        typer.Option(help="name of the environment variable holding the bearer key clients must send"),
    ] = None,
    trust: Annotated[Optional[Path], typer.Option(help="ed25519 public key every package must be signed with")] = None,
    threads: Annotated[Optional[int], typer.Option(help="inference threads per model [default: the runtime's]")] = None,
    max_batch: Annotated[int, typer.Option(help="texts per model call when batching requests (1: no batching)")] = 32,
    max_delay_ms: Annotated[
        float, typer.Option(help="how long a batch may wait for more requests, when more are arriving")
    ] = 2.0,
    no_batching: Annotated[bool, typer.Option("--no-batching", help="one model call per request")] = False,
    max_body_bytes: Annotated[int, typer.Option(help="largest request body accepted (413 beyond)")] = 1 << 20,
    max_texts: Annotated[int, typer.Option(help="most texts in one request (413 beyond)")] = 256,
    max_chars: Annotated[int, typer.Option(help="most characters in one text (422 beyond)")] = 10_000,
    max_connections: Annotated[
        Optional[int], typer.Option(help="concurrent connections before answering 503 [default: no limit]")
    ] = None,
    grace: Annotated[float, typer.Option(help="seconds in-flight requests get to finish after SIGTERM")] = 30.0,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level")] = "warning",
    teacher: TeacherTask = None,
    workdir: HybridWorkdir = None,
    store: StoreAnswers = True,
) -> None:
    """Serve packages over HTTP on HOST:PORT: /health, /ready, POST /v1/classify, the KServe v2 protocol
    (/v2/models/NAME/infer) and Prometheus /metrics, batching concurrent requests. Stops on SIGTERM/Ctrl-C
    after in-flight requests finish. The model's name is its package's task name, or NAME from NAME=PATH."""

    def body() -> None:
        from .. import __version__
        from ..errors import InputError
        from ..serve import Batching, Limits, bind, build_app, url_of
        from ..serve import serve as run_server

        api_key = None
        if api_key_env:
            api_key = os.environ.get(api_key_env, "")
            if not api_key.strip():
                raise InputError(f"--api-key-env {api_key_env}: that environment variable is not set or is empty")
        for flag, value in (("--max-batch", max_batch), ("--max-texts", max_texts), ("--max-chars", max_chars)):
            if value < 1:
                raise InputError(f"{flag} must be at least 1, not {value}")
        if max_body_bytes < 64:
            raise InputError(f"--max-body-bytes must be at least 64, not {max_body_bytes}")
        if max_delay_ms < 0:
            raise InputError(f"--max-delay-ms cannot be negative ({max_delay_ms})")
        if trust is not None and not trust.is_file():
            raise InputError(f"--trust {trust}: no such key file")

        def stop_while_loading(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)  # unwinds, so the models loaded so far are closed

        signal.signal(signal.SIGTERM, stop_while_loading)  # uvicorn takes SIGTERM over while it serves
        models = load_models(packages, trust, threads)
        try:
            if teacher is not None:
                models = with_teacher(models, teacher, workdir, store)
            asgi = build_app(
                models,
                api_key=api_key,
                limits=Limits(max_body_bytes=max_body_bytes, max_texts=max_texts, max_chars=max_chars),
                batching=Batching(max_batch=1 if no_batching else max_batch, max_delay_ms=max_delay_ms),
                version=__version__,
            )
            try:
                sock = bind(host, port)
            except OSError as exc:
                raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
            url = url_of(sock)

            def announce() -> None:
                names = ", ".join(f"{n} ({getattr(m, 'target', '?')})" for n, m in models.items())
                batching = "off" if no_batching or max_batch == 1 else f"up to {max_batch} texts / {max_delay_ms:g} ms"
                key = f"; bearer key from ${api_key_env}" if api_key else ""
                sys.stderr.write(f"tsd-edge serve: {names} on {url} (batching {batching}{key})\n")
                sys.stderr.flush()

            run_server(
                asgi, sock, grace=grace, max_connections=max_connections, log_level=log_level, on_started=announce
            )
            sock.close()
        finally:
            for model in models.values():
                model.close()

    guard(body)
