"""OpenAI's embeddings API on an embed package (`POST /v1/embeddings`): the request's fields checked as OpenAI
checks them (each error names its `param`), and each vector encoded as OpenAI sends it."""

from __future__ import annotations

import base64
import json
from typing import Any, Callable

from .http import ApiError, Limits, check_texts

FIELDS = ("input", "model", "encoding_format", "dimensions", "user")  # `user` is accepted and unused


def parse_request(raw: bytes, embed_model: Callable[[Any], Any], limits: Limits) -> tuple[Any, list[str], str]:
    """(model, texts, encoding format) from an OpenAI embeddings request body, or ApiError naming the field."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, 'the body must be a JSON object: {"input": "..." or ["...", ...]}')
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        fields = ", ".join(FIELDS)
        raise ApiError(
            400, f"unrecognized request argument(s) {', '.join(map(repr, unknown))}: give {fields}", unknown[0]
        )
    model = embed_model(body.get("model"))
    if "input" not in body:
        raise ApiError(400, "missing field 'input': a string or a list of strings", "input")
    given = body["input"]
    texts = [given] if isinstance(given, str) else given
    if isinstance(texts, list) and texts and all(isinstance(t, (int, list)) for t in texts):
        raise ApiError(400, "token arrays are not accepted (the package has its own tokenizer): send text", "input")
    try:
        check_texts(texts, limits, "input")
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


def encode_vector(vector: Any, encoding: str) -> Any:
    """A float32 vector as OpenAI sends it: a list of numbers, or base64 of its little-endian float32 bytes."""
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()
