"""Running the app under uvicorn on a socket bound here (so `--port 0` works and the real port is known).

On SIGTERM or SIGINT uvicorn stops accepting connections, lets in-flight requests finish (up to `grace`
seconds), then the app's lifespan drains each batcher, and `serve` returns.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from typing import Any, Callable, Iterator


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv4 or IPv6, as the host resolves)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, except that a SIGTERM/SIGINT that stopped it gracefully is not raised again
        afterwards (uvicorn >= 0.29 re-raises it, killing the process before models are closed and their
        temporary folders removed): `serve` returns and the command exits 0."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def serve(
    app: Any,
    sock: socket.socket,
    *,
    grace: float | None = 30.0,
    max_connections: int | None = None,
    log_level: str = "warning",
    on_started: Callable[[], None] | None = None,
) -> None:
    """Serve `app` on `sock` until SIGTERM/SIGINT; returns after the graceful shutdown."""
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=grace,  # type: ignore[arg-type]  # typed int; a float works (asyncio.wait_for)
        limit_concurrency=max_connections,
        server_header=False,
    )
    server = _server_class()(config)
    if on_started is not None:
        startup = server.startup

        async def announce(sockets: Any = None) -> None:
            await startup(sockets=sockets)
            if server.started:
                on_started()

        server.startup = announce
    server.run(sockets=[sock])
