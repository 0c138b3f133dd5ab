"""What every endpoint shares: the server's limits, the API error, JSON responses and error bodies (KServe v2's
`{"error": reason}`, or OpenAI's error object on OpenAI's paths), and the checks of a request's body and texts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# probes need no key (an orchestrator's liveness check has none); everything else does when a key is set
OPEN_PATHS = frozenset({"/health", "/ready", "/v2/health/live", "/v2/health/ready"})
OPENAI_PATHS = frozenset({"/v1/embeddings"})  # errors there in OpenAI's shape


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


def json_response(payload: Any, status: int = 200) -> Any:
    from starlette.responses import Response

    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, status_code=status, media_type="application/json")


def error_response(
    status: int, reason: str, headers: dict[str, str] | None = None, *, path: str = "", param: str | None = None
) -> Any:
    """The error response: `{"error": reason}`, or on an OpenAI path OpenAI's error object."""
    if path in OPENAI_PATHS:
        kind = "authentication_error" if status == 401 else "server_error" if status >= 500 else "invalid_request_error"
        code = {401: "invalid_api_key", 404: "model_not_found"}.get(status)
        response = json_response({"error": {"message": reason, "type": kind, "param": param, "code": code}}, status)
    else:
        response = json_response({"error": reason}, status)
    if headers:
        response.headers.update(headers)
    return response


async def read_body(request: Any, limit: int) -> bytes:
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def check_texts(texts: Any, limits: Limits, field: str = "texts") -> list[str]:
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
