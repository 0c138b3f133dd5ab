"""The HTTP application: health, readiness, a JSON classify endpoint, KServe v2, Prometheus metrics.

`build_app(models)` takes a name -> model mapping, where a model is anything with `predict(texts, top_k)`,
`describe()` and `name` (the runtime's `Model`, or a teacher behind an adapter), and returns a Starlette
(ASGI) app. Every error is a JSON object `{"error": reason}` (the KServe v2 form) with a 4xx status for a
bad request; the model never runs on the event loop.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping

from . import kserve
from .batching import Arrivals, Batcher, Closing
from .metrics import Metrics

# probes need no key (an orchestrator's liveness check has none); everything else does when a key is set
OPEN_PATHS = frozenset({"/health", "/ready", "/v2/health/live", "/v2/health/ready"})


@dataclass
class Limits:
    max_body_bytes: int = 1 << 20  # 1 MiB
    max_texts: int = 256  # per request
    max_chars: int = 10_000  # per text; the model reads only its first max_length tokens anyway
    max_top_k: int = 100


@dataclass
class Batching:
    max_batch: int = 32  # texts per model call; 1 turns batching off
    max_delay_ms: float = 2.0


class ApiError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _json(payload: Any, status: int = 200) -> Any:
    from starlette.responses import Response

    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, status_code=status, media_type="application/json")


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> Any:
    response = _json({"error": reason}, status)
    if headers:
        response.headers.update(headers)
    return response


class Served:
    """One model behind the server: the object, what it says about itself, and its batcher."""

    def __init__(self, name: str, model: Any, batching: Batching, arrivals: Arrivals, metrics: Metrics) -> None:
        self.name = name
        self.model = model
        info = dict(model.describe())
        self.info = info
        self.target = info.get("target")
        self.labels = list(getattr(model, "labels", []) or [])

        def observe(texts: int, requests: int, seconds: float) -> None:
            metrics.observe_batch(name, texts, requests, seconds)

        self.batcher = Batcher(model, batching.max_batch, batching.max_delay_ms, arrivals, observe)
        metrics.queued.labels(name).set_function(lambda: self.batcher.queued)

    def metadata(self) -> dict[str, Any]:
        """KServe v2 model metadata."""
        backend = self.info.get("backend") or "python"
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": f"tsd-edge_{backend}",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "score", "datatype": "FP32", "shape": [-1]},
            ],
            "parameters": {k: v for k, v in self.info.items() if isinstance(v, (str, int, float, bool))},
        }


class _Guard:
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
        if self.api_key is not None and scope.get("path") not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.api_key):
                return _error(
                    401, "missing or wrong API key: send 'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"}
                )
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return _error(400, "Content-Length is not a number")
            if size > self.max_body:
                return _error(413, f"the body has {size} bytes, over the limit of {self.max_body}")
        return None


async def _read_body(request: Any, limit: int) -> bytes:
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_texts(texts: Any, limits: Limits, field: str = "texts") -> list[str]:
    if not isinstance(texts, list):
        raise ApiError(422, f"'{field}' must be a list of strings, not {type(texts).__name__}")
    if not texts:
        raise ApiError(422, f"'{field}' is empty: give at least one text")
    if len(texts) > limits.max_texts:
        raise ApiError(413, f"{len(texts)} texts in one request, over the limit of {limits.max_texts}: split it")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ApiError(422, f"text {i} is a {type(text).__name__}, not a string")
        if not text.strip():
            raise ApiError(422, f"text {i} is empty: give text to classify")
        if len(text) > limits.max_chars:
            raise ApiError(422, f"text {i} has {len(text)} characters, over the limit of {limits.max_chars}")
    return texts


def build_app(
    models: Mapping[str, Any],
    *,
    api_key: str | None = None,
    limits: Limits | None = None,
    batching: Batching | None = None,
    version: str = "",
) -> Any:
    """The ASGI app serving `models` (name -> model). Its batchers start and drain with the app's lifespan."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import Response
    from starlette.routing import Route

    if not models:
        raise ValueError("give at least one model to serve")
    limits = limits or Limits()
    batching = batching or Batching()
    metrics = Metrics()
    arrivals = Arrivals()
    served = {name: Served(name, model, batching, arrivals, metrics) for name, model in models.items()}
    state = {"ready": False}

    def model_named(name: str | None) -> Served:
        if name is None:
            if len(served) == 1:
                return next(iter(served.values()))
            raise ApiError(422, f"several models are served; name one with 'model': {', '.join(sorted(served))}")
        if not isinstance(name, str):
            raise ApiError(422, "'model' must be a string")
        if name not in served:
            raise ApiError(404, f"no model named {name!r}; served: {', '.join(sorted(served))}")
        return served[name]

    async def run(model: Served, texts: list[str], top_k: int) -> list[dict[str, Any]]:
        try:
            return await model.batcher.submit(texts, top_k)
        except Closing:
            raise ApiError(503, "the server is shutting down") from None

    async def health(request: Any) -> Any:
        return _json({"status": "live"})

    async def ready(request: Any) -> Any:
        if state["ready"] and all(m.batcher.running for m in served.values()):
            return _json({"status": "ready", "models": sorted(served)})
        return _error(503, "not ready")

    async def list_models(request: Any) -> Any:
        return _json({"models": [dict(m.info, name=m.name) for m in served.values()]})

    async def classify(request: Any) -> Any:
        arrivals.count += 1
        counted = True
        try:
            raw = await _read_body(request, limits.max_body_bytes)
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError):
                raise ApiError(400, "the body is not valid JSON") from None
            if not isinstance(body, dict):
                raise ApiError(400, 'the body must be a JSON object: {"texts": ["..."]}')
            unknown = set(body) - {"model", "texts", "top_k"}
            if unknown:
                raise ApiError(
                    422, f"unknown field(s) {', '.join(sorted(map(repr, unknown)))}: give model, texts, top_k"
                )
            model = model_named(body.get("model"))
            if "texts" not in body:
                raise ApiError(422, 'missing field \'texts\': {"texts": ["..."]}')
            texts = _check_texts(body["texts"], limits)
            top_k = body.get("top_k", 1)
            if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= limits.max_top_k:
                raise ApiError(422, f"'top_k' must be a whole number from 1 to {limits.max_top_k}")
            arrivals.count -= 1
            counted = False
            answers = await run(model, texts, top_k)
        finally:
            if counted:
                arrivals.count -= 1
        return _json({"model": model.name, "target": model.target, "predictions": answers})

    async def v2_server(request: Any) -> Any:
        return _json({"name": "tsd-edge", "version": version, "extensions": ["binary_tensor_data"]})

    def versioned(request: Any) -> Served:
        model = model_named(request.path_params["name"])
        asked = request.path_params.get("version")
        if asked is not None and asked != "1":
            raise ApiError(404, f"model {model.name!r} has version 1 only, not {asked!r}")
        return model

    async def v2_model(request: Any) -> Any:
        return _json(versioned(request).metadata())

    async def v2_model_ready(request: Any) -> Any:
        model = versioned(request)
        if state["ready"] and model.batcher.running:
            return _json({"name": model.name, "ready": True})
        return _error(503, f"model {model.name!r} is not ready")

    async def v2_infer(request: Any) -> Any:
        arrivals.count += 1
        counted = True
        try:
            model = versioned(request)
            raw = await _read_body(request, limits.max_body_bytes)
            try:
                request_id, texts, wanted, binary = kserve.parse_request(raw, request.headers.get(kserve.HEADER_LENGTH))
            except kserve.ProtocolError as exc:
                raise ApiError(exc.status, exc.reason) from None
            _check_texts(texts, limits, "inputs")
            arrivals.count -= 1
            counted = False
            answers = await run(model, texts, 1)
        finally:
            if counted:
                arrivals.count -= 1
        body, header_length = kserve.response(model.name, request_id, answers, wanted, binary)
        if header_length is None:
            return Response(body, media_type="application/json")
        return Response(
            body,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(header_length)},
        )

    async def metrics_endpoint(request: Any) -> Any:
        payload, content_type = metrics.render()
        return Response(payload, headers={"Content-Type": content_type})

    async def on_api_error(request: Any, exc: Exception) -> Any:
        assert isinstance(exc, ApiError)
        return _error(exc.status, exc.reason)

    async def on_http_error(request: Any, exc: Exception) -> Any:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    async def on_crash(request: Any, exc: Exception) -> Any:
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        for model in served.values():
            await model.batcher.start()
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            for model in served.values():
                await model.batcher.close()  # answers whatever is still queued

    name = "{name}"
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/classify", classify, methods=["POST"]),
        Route("/v2", v2_server, methods=["GET"]),
        Route("/v2/health/live", health, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route(f"/v2/models/{name}", v2_model, methods=["GET"]),
        Route(f"/v2/models/{name}/ready", v2_model_ready, methods=["GET"]),
        Route(f"/v2/models/{name}/infer", v2_infer, methods=["POST"]),
        Route(f"/v2/models/{name}/versions/{{version}}", v2_model, methods=["GET"]),
        Route(f"/v2/models/{name}/versions/{{version}}/ready", v2_model_ready, methods=["GET"]),
        Route(f"/v2/models/{name}/versions/{{version}}/infer", v2_infer, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: on_api_error, HTTPException: on_http_error, Exception: on_crash},
    )
    app.state.served = served
    app.state.metrics = metrics
    return _Guard(app, metrics, api_key, limits.max_body_bytes)
