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

import contextlib
import json
from typing import Any, AsyncIterator, Mapping

from . import kserve
from .batching import Arrival, Arrivals, Batcher, Closing
from .guard import Guard
from .http import ApiError, Batching, Limits, check_texts, error_response, json_response, read_body
from .metrics import Metrics
from .openai_embeddings import encode_vector
from .openai_embeddings import parse_request as parse_embeddings


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

    async def run(arrival: Arrival, model: Served, texts: list[str], top_k: int) -> list[Any]:
        arrival.queued()
        try:
            return await model.batcher.submit(texts, top_k)
        except Closing:
            raise ApiError(503, "the server is shutting down") from None

    def kinds() -> dict[str, Any]:
        return {name: m.shape() for name, m in sorted(served.items())}

    async def health(request: Any) -> Any:
        return json_response(
            {"status": "live"}
        )  # a liveness probe: the same for every kind (/ready says what is served)

    async def ready(request: Any) -> Any:
        if state["ready"] and all(m.batcher.running for m in served.values()):
            return json_response({"status": "ready", "models": sorted(served), "kinds": kinds()})
        return error_response(503, "not ready")

    async def list_models(request: Any) -> Any:
        """tsd-edge's list (`models`: each model's description) and OpenAI's (`object`, `data`) in one body."""
        openai = [{"id": m.name, "object": "model", "created": 0, "owned_by": "tsd-edge"} for m in served.values()]
        return json_response(
            {"object": "list", "data": openai, "models": [dict(m.info, name=m.name) for m in served.values()]}
        )

    async def classify(request: Any) -> Any:
        with arrivals.arriving() as arrival:
            raw = await read_body(request, limits.max_body_bytes)
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
            texts = check_texts(body["texts"], limits)
            top_k = body.get("top_k", 1)
            if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= limits.max_top_k:
                raise ApiError(422, f"'top_k' must be a whole number from 1 to {limits.max_top_k}")
            answers = await run(arrival, model, texts, top_k)
        return json_response({"model": model.name, "target": model.target, "predictions": answers})

    async def embeddings(request: Any) -> Any:
        """OpenAI's POST /v1/embeddings: the same batcher and metrics as classify; 400 for what OpenAI refuses."""
        with arrivals.arriving() as arrival:
            try:
                raw = await read_body(request, limits.max_body_bytes)
                model, texts, encoding = parse_embeddings(raw, embed_model, limits)
            except ApiError as exc:  # OpenAI answers 400 where the classify endpoint says 422
                raise ApiError(400 if exc.status == 422 else exc.status, exc.reason, exc.param) from None
            answers = await run(arrival, model, texts, 1)
        data = [
            {"object": "embedding", "index": i, "embedding": encode_vector(a.vector, encoding)}
            for i, a in enumerate(answers)
        ]
        tokens = sum(int(a.tokens) for a in answers)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return json_response({"object": "list", "data": data, "model": model.name, "usage": usage})

    async def v2_server(request: Any) -> Any:
        return json_response({"name": "tsd-edge", "version": version, "extensions": ["binary_tensor_data"]})

    def versioned(request: Any) -> Served:
        model = model_named(request.path_params["name"])
        asked = request.path_params.get("version")
        if asked is not None and asked != "1":
            raise ApiError(404, f"model {model.name!r} has version 1 only, not {asked!r}")
        return model

    async def v2_model(request: Any) -> Any:
        return json_response(versioned(request).metadata())

    async def v2_model_ready(request: Any) -> Any:
        model = versioned(request)
        if state["ready"] and model.batcher.running:
            return json_response({"name": model.name, "ready": True})
        return error_response(503, f"model {model.name!r} is not ready")

    async def v2_infer(request: Any) -> Any:
        with arrivals.arriving() as arrival:
            model = versioned(request)
            raw = await read_body(request, limits.max_body_bytes)
            outputs = kserve.EMBED_OUTPUTS if model.embeds else kserve.OUTPUTS
            try:
                request_id, texts, wanted, binary = kserve.parse_request(
                    raw, request.headers.get(kserve.HEADER_LENGTH), outputs
                )
            except kserve.ProtocolError as exc:
                raise ApiError(exc.status, exc.reason) from None
            check_texts(texts, limits, "inputs")
            answers = await run(arrival, model, texts, 1)
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
        return error_response(exc.status, exc.reason, path=request.url.path, param=exc.param)

    async def on_http_error(request: Any, exc: Exception) -> Any:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}), path=request.url.path)

    async def on_crash(request: Any, exc: Exception) -> Any:
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}", path=request.url.path)

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
    return Guard(app, metrics, api_key, limits.max_body_bytes)
