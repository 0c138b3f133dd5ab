"""The `openai` teacher of an embed task: `POST {base_url}/embeddings` (vLLM, TEI, NIM, OpenAI).

`teacher.batch_size` inputs go in one request: `{"model", "input": [texts], "encoding_format": "float"}`,
plus `"dimensions"` when the task sets it. The HTTP side is the chat teacher's (openai.py), unchanged:
`concurrency` requests in flight, replicas, retries with backoff and `Retry-After`, the timeout, the
`max_calls` / `max_tokens` budgets, the key from `api_key_env`.

The answer: `data` items are matched to the inputs by `index`; each must be a flat list of finite floats
of the teacher's dimension (`dimensions`, else the most common one of its first answer), and is made unit
length. An input the server gave no usable vector for is stored as rejected with the reason (teachers/
vectors.py). A 200 body without a `data` list is retried like a malformed chat completion. A 4xx answer to
a batch (e.g. one input too long for the model) is asked again one input a request, so only the input at
fault is rejected. The server counts tokens per request (`usage.prompt_tokens`): they are shared out among
the request's inputs so that the store's total is the server's.

The fingerprint covers the model, `dimensions` and the kind (embed): not the URL, key or throughput settings.
"""

from __future__ import annotations

import json
from typing import Any

from ..task import OpenAITeacherSpec, Task
from . import Response, rejected
from .openai import OpenAITeacher
from .replicas import Replicas
from .vectors import VectorCheck


class OpenAIEmbedTeacher(OpenAITeacher):
    expected = "an embeddings list"

    def __init__(self, task: Task) -> None:
        spec = task.teacher
        assert isinstance(spec, OpenAITeacherSpec)
        self.labels = []
        self.spec = {"kind": "openai", "task": "embed", "model": spec.model, "dimensions": spec.dimensions}
        self.vectors = VectorCheck(spec.dimensions)
        self._connect(spec)

    def embed_body(self, texts: list[str]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.cfg.model, "input": list(texts), "encoding_format": "float"}
        if self.cfg.dimensions is not None:
            body["dimensions"] = self.cfg.dimensions
        return body

    def _units(self, n: int) -> list[list[int]]:
        size = self.cfg.batch_size
        return [list(range(i, min(i + size, n))) for i in range(0, n, size)]

    async def _ask(self, client: Any, servers: Replicas, texts: list[str]) -> list[Response]:
        def parse(content: bytes, seconds: float, attempts: int) -> list[Response] | None:
            return self._parse(content, len(texts), seconds, attempts)

        out = await self._post(client, servers, "embeddings", self.embed_body(texts), parse, len(texts))
        if len(texts) > 1 and all(r.status == "rejected" and (r.reason or "").startswith("HTTP ") for r in out):
            return [(await self._ask(client, servers, [text]))[0] for text in texts]
        return out

    def _parse(self, content: bytes, n: int, seconds: float, attempts: int) -> list[Response] | None:
        """One answer per input from an embeddings body, or None when it is not one (worth a retry)."""
        try:
            data = json.loads(content)
            items, usage = data["data"], data.get("usage") or {}
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if not isinstance(items, list) or not isinstance(usage, dict):
            return None
        prompt = usage.get("prompt_tokens")
        prompt = prompt if isinstance(prompt, int) and not isinstance(prompt, bool) else None
        total = usage.get("total_tokens")
        self.tokens += total if isinstance(total, int) and not isinstance(total, bool) else (prompt or 0)
        values: list[Any] = [None] * n
        seen: set[int] = set()
        twice: set[int] = set()
        for item in items:
            index = item.get("index") if isinstance(item, dict) else None
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < n:
                continue  # an item for none of the inputs: the input it was meant for has no vector
            if index in seen:
                twice.add(index)
            seen.add(index)
            values[index] = item.get("embedding")
        self.vectors.settle([v for i, v in enumerate(values) if i not in twice])
        out = []
        for i, (value, tokens) in enumerate(zip(values, _shares(prompt, n), strict=True)):
            meta: dict[str, Any] = {"latency_ms": seconds * 1000, "tokens_in": tokens, "attempts": attempts}
            if i in twice:
                out.append(rejected("the server gave two vectors for this input", **meta))
                continue
            r = self.vectors.response(value, **meta)
            if r.raw is not None:
                r.raw = self._scrub(r.raw)
            out.append(r)
        return out


def _shares(total: int | None, n: int) -> list[int | None]:
    """`total` tokens shared out among `n` inputs as evenly as whole numbers allow (the sum is `total`)."""
    if total is None:
        return [None] * n
    base, extra = divmod(total, n)
    return [base + (1 if i < extra else 0) for i in range(n)]
