"""The server's outer layer (pure ASGI middleware): the bearer key, the body-size bound, request metrics, and JSON
for every error it answers itself."""

from __future__ import annotations

import hmac
import time
from typing import Any

from .http import OPEN_PATHS, error_response
from .metrics import Metrics


class Guard:
    """Pure ASGI middleware: bearer key, body-size bound, request metrics, JSON for every error."""

    def __init__(self, app: Any, metrics: Metrics, api_key: str | None, max_body: int) -> None:
        self.app = app
        self.metrics = metrics
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.max_body = max_body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.observe_request(
                scope.get("path", ""), scope.get("method", ""), status[0], time.perf_counter() - started
            )

    def _refusal(self, scope: dict[str, Any]) -> Any:
        headers = dict(scope.get("headers") or [])
        path = str(scope.get("path", ""))
        if self.api_key is not None and path not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.api_key):
                return error_response(
                    401,
                    "missing or wrong API key: send 'Authorization: Bearer <key>'",
                    {"WWW-Authenticate": "Bearer"},
                    path=path,
                )
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return error_response(400, "Content-Length is not a number", path=path)
            if size > self.max_body:
                return error_response(413, f"the body has {size} bytes, over the limit of {self.max_body}", path=path)
        return None
