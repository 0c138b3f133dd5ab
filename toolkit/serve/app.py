"""The HTTP application: health, readiness, a JSON classify endpoint, an OpenAI-compatible embeddings endpoint,
KServe v2, Prometheus metrics.

`build_app(models)` takes a name -> model mapping, where a model is anything with `predict(texts, top_k)`,
`describe()` and `name` (the runtime's `Model`, or a teacher behind an adapter) — or, of `kind` "embed", with
`embed_counted(texts)` and a `dim` — and returns a Starlette (ASGI) app. Every error is a JSON object
`{"error": reason}` (the KServe v2 form) with a 4xx status for a bad request, except on /v1/embeddings, which
answers in OpenAI's form (`{"error": {"message", "type", "param", "code"}}`) so OpenAI clients read it; the model
never runs on the event loop.
"""

from __future__ import annotations

import base64
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
OPENAI_PATHS = frozenset({"/v1/embeddings"})  # errors there in OpenAI's shape
EMBEDDING_FIELDS = ("input", "model", "encoding_format", "dimensions", "user")  # `user` is accepted and unused


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
    """`param`: the request field at fault (OpenAI's error names it)."""

    def __init__(self, status: int, reason: str, param: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.param = param


def _json(payload: Any, status: int = 200) -> Any:
    from starlette.responses import Response

    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, status_code=status, media_type="application/json")


def _error(
    status: int, reason: str, headers: dict[str, str] | None = None, *, path: str = "", param: str | None = None
) -> Any:
    """The error response: `{"error": reason}`, or on an OpenAI path OpenAI's error object."""
    if path in OPENAI_PATHS:
        kind = "authentication_error" if status == 401 else "server_error" if status >= 500 else "invalid_request_error"
        code = {401: "invalid_api_key", 404: "model_not_found"}.get(status)
        response = _json({"error": {"message": reason, "type": kind, "param": param, "code": code}}, status)
    else:
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
        self.kind = str(info.get("kind") or "classify")
        self.dim = info.get("dim")
        self.labels = list(getattr(model, "labels", []) or [])

        def observe(texts: int, requests: int, seconds: float) -> None:
            metrics.observe_batch(name, texts, requests, seconds)

        self.batcher = Batcher(model, batching.max_batch, batching.max_delay_ms, arrivals, observe)
        metrics.queued.labels(name).set_function(lambda: self.batcher.queued)

    @property
    def embeds(self) -> bool:
        return self.kind == "embed"

    def shape(self) -> dict[str, Any]:
        """What the model answers with (health and readiness say it per model)."""
        return {"kind": self.kind, "dim": self.dim} if self.embeds else {"kind": self.kind, "labels": len(self.labels)}

    def metadata(self) -> dict[str, Any]:
        """KServe v2 model metadata."""
        backend = self.info.get("backend") or "python"
        if self.embeds:
            outputs = [{"name": "embedding", "datatype": "FP32", "shape": [-1, self.dim]}]
        else:
            outputs = [
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "score", "datatype": "FP32", "shape": [-1]},
            ]
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": f"tsd-edge_{backend}",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": outputs,
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
        path = str(scope.get("path", ""))
        if self.api_key is not None and path not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.api_key):
                return _error(
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
                return _error(400, "Content-Length is not a number", path=path)
            if size > self.max_body:
                return _error(413, f"the body has {size} bytes, over the limit of {self.max_body}", path=path)
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
            raise ApiError(422, f"text {i} is empty: give text")
        if len(text) > limits.max_chars:
            raise ApiError(422, f"text {i} has {len(text)} characters, over the limit of {limits.max_chars}")
    return texts


def _embedding_request(raw: bytes, embed_model: Any, limits: Limits) -> tuple[Served, list[str], str]:
    """(model, texts, encoding format) from an OpenAI embeddings request body, or ApiError naming the field."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, 'the body must be a JSON object: {"input": "..." or ["...", ...]}')
    unknown = sorted(set(body) - set(EMBEDDING_FIELDS))
    if unknown:
        fields = ", ".join(EMBEDDING_FIELDS)
        raise ApiError(
            400, f"unrecognized request argument(s) {', '.join(map(repr, unknown))}: give {fields}", unknown[0]
        )
    model: Served = embed_model(body.get("model"))
    if "input" not in body:
        raise ApiError(400, "missing field 'input': a string or a list of strings", "input")
    given = body["input"]
    texts = [given] if isinstance(given, str) else given
    if isinstance(texts, list) and texts and all(isinstance(t, (int, list)) for t in texts):
        raise ApiError(400, "token arrays are not accepted (the package has its own tokenizer): send text", "input")
    try:
        _check_texts(texts, limits, "input")
    except ApiError as exc:
        raise ApiError(exc.status, exc.reason, "input") from None
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise ApiError(400, f"'encoding_format' must be 'float' or 'base64', not {encoding!r}", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions != model.dim
    ):
        raise ApiError(
            400,
            f"model {model.name!r} gives {model.dim}-dimension embeddings only: omit 'dimensions' or give {model.dim}",
            "dimensions",
        )
    return model, texts, encoding


def _encode_vector(vector: Any, encoding: str) -> Any:
    """A float32 vector as OpenAI sends it: a list of numbers, or base64 of its little-endian float32 bytes."""
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


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

    def embed_model(name: Any) -> Served:
        """The model /v1/embeddings answers with: the one named, or the only embed model served."""
        if name is None:
            embedders = [m for m in served.values() if m.embeds]
            if len(embedders) == 1:
                return embedders[0]
            if not embedders:
                raise ApiError(400, "no embed package is served here: /v1/embeddings needs a package of kind embed")
            names = ", ".join(sorted(m.name for m in embedders))
            raise ApiError(400, f"several embed models are served; name one with 'model': {names}", "model")
        try:
            model = model_named(name)
        except ApiError as exc:
            raise ApiError(exc.status, exc.reason, "model") from None
        if not model.embeds:
            raise ApiError(400, f"model {model.name!r} is a {model.kind} model: POST /v1/classify", "model")
        return model

    async def run(model: Served, texts: list[str], top_k: int) -> list[Any]:
        try:
            return await model.batcher.submit(texts, top_k)
        except Closing:
            raise ApiError(503, "the server is shutting down") from None

    def kinds() -> dict[str, Any]:
        return {name: m.shape() for name, m in sorted(served.items())}

    async def health(request: Any) -> Any:
        return _json({"status": "live"})  # a liveness probe: the same for every kind (/ready says what is served)

    async def ready(request: Any) -> Any:
        if state["ready"] and all(m.batcher.running for m in served.values()):
            return _json({"status": "ready", "models": sorted(served), "kinds": kinds()})
        return _error(503, "not ready")

    async def list_models(request: Any) -> Any:
        """tsd-edge's list (`models`: each model's description) and OpenAI's (`object`, `data`) in one body."""
        openai = [{"id": m.name, "object": "model", "created": 0, "owned_by": "tsd-edge"} for m in served.values()]
        return _json({"object": "list", "data": openai, "models": [dict(m.info, name=m.name) for m in served.values()]})

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
            if model.embeds:
                raise ApiError(400, f"model {model.name!r} gives embeddings, not labels: POST /v1/embeddings")
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

    async def embeddings(request: Any) -> Any:
        """OpenAI's POST /v1/embeddings: the same batcher and metrics as classify; 400 for what OpenAI refuses."""
        arrivals.count += 1
        counted = True
        try:
            try:
                raw = await _read_body(request, limits.max_body_bytes)
                model, texts, encoding = _embedding_request(raw, embed_model, limits)
            except ApiError as exc:  # OpenAI answers 400 where the classify endpoint says 422
                raise ApiError(400 if exc.status == 422 else exc.status, exc.reason, exc.param) from None
            arrivals.count -= 1
            counted = False
            answers = await run(model, texts, 1)
        finally:
            if counted:
                arrivals.count -= 1
        data = [
            {"object": "embedding", "index": i, "embedding": _encode_vector(a.vector, encoding)}
            for i, a in enumerate(answers)
        ]
        tokens = sum(int(a.tokens) for a in answers)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return _json({"object": "list", "data": data, "model": model.name, "usage": usage})

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
            outputs = kserve.EMBED_OUTPUTS if model.embeds else kserve.OUTPUTS
            try:
                request_id, texts, wanted, binary = kserve.parse_request(
                    raw, request.headers.get(kserve.HEADER_LENGTH), outputs
                )
            except kserve.ProtocolError as exc:
                raise ApiError(exc.status, exc.reason) from None
            _check_texts(texts, limits, "inputs")
            arrivals.count -= 1
            counted = False
            answers = await run(model, texts, 1)
        finally:
            if counted:
                arrivals.count -= 1
        if model.embeds:
            import numpy as np

            vectors = np.stack([a.vector for a in answers])
            body, header_length = kserve.embedding_response(model.name, request_id, vectors, binary)
        else:
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
        return _error(exc.status, exc.reason, path=request.url.path, param=exc.param)

    async def on_http_error(request: Any, exc: Exception) -> Any:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}), path=request.url.path)

    async def on_crash(request: Any, exc: Exception) -> Any:
        return _error(500, f"internal error: {type(exc).__name__}: {exc}", path=request.url.path)

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
        Route("/v1/embeddings", embeddings, methods=["POST"]),
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
