"""The `openai` teacher: any OpenAI-compatible chat/completions endpoint (vLLM, NIM, TGI, llama.cpp, OpenAI).

`concurrency` workers each keep one request in flight. `base_url` may list several servers (replicas
of one model): each request goes to the one with the fewest requests in flight, and one that keeps
failing is taken out for `cooldown` seconds (teachers/replicas.py). A request that fails for a
reason that may pass (429, 5xx, timeout, dropped connection, a body that is not a chat completion)
is retried up to `max_retries` times with exponential backoff and full jitter; a 429/503
`Retry-After` pauses every worker's requests to that server until then. 401/403/404 stop the
collection (wrong key, URL or model: every call would fail alike). Other 4xx answers (a prompt too
long for the model) are stored as rejected with the server's message. The key is read from the
environment variable `api_key_env` and lives only in the client's headers: it is in no spec,
fingerprint, log, error or store.

An embed task asks `/embeddings` instead, with the same machinery (`_post`, `_run`): openai_embed.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import importlib.util
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import InputError
from ..task import OpenAITeacherSpec, Task
from . import Response, failed, rejected
from .labels import LabelParser, soft_labels
from .replicas import Replicas

POOL_SIZE = 8  # connections per HTTP client; concurrency above it uses several clients
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
FATAL_STATUS = {401: "the server refused the key", 403: "the key may not use this model", 404: "no such URL or model"}


class _Stop(Exception):
    """A response that means every other request would fail alike."""


class OpenAITeacher:
    expected = "a chat completion"  # what a 200 body must be (for the retry's reason)

    def __init__(self, task: Task) -> None:
        spec = task.teacher
        assert isinstance(spec, OpenAITeacherSpec)
        self.labels = task.label_names
        self.descriptions = {s.name: s.description for s in task.label_specs if s.description}
        self.parser = LabelParser(self.labels, self.descriptions, allow_none=spec.allow_none)
        self.spec = {
            "kind": "openai",
            "model": spec.model,
            "constrain": spec.constrain,
            "system": spec.system,
            "prompt": spec.prompt,
            "use_descriptions": spec.use_descriptions,
            "allow_none": spec.allow_none,
            "temperature": spec.temperature,
            "seed": spec.seed,
            "max_answer_tokens": spec.max_answer_tokens,
            "logprobs": spec.logprobs,
            "extra_body": spec.extra_body,
            "labels": self.labels,
            "descriptions": self.descriptions if spec.use_descriptions else {},
        }
        self._connect(spec)

    def _connect(self, spec: OpenAITeacherSpec) -> None:
        """The HTTP side, shared with the embeddings teacher (openai_embed.py): key, counts, servers."""
        self.cfg = spec
        # read now (so it can be scrubbed from anything the server echoes), required only when asking
        self._key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        self.fingerprint = hashlib.sha256(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()[:16]
        self.calls = 0  # HTTP requests sent, retries included
        self.tokens = 0
        self.stopped: str | None = None  # why the last stream ended before every input was asked
        self._fatal: str | None = None
        self.urls = [spec.base_url] if isinstance(spec.base_url, str) else list(spec.base_url)
        self.replicas = Replicas(self.urls, spec.cooldown)  # the servers, with their counts

    # -- the request ------------------------------------------------------------------------------

    @property
    def choices(self) -> list[str]:
        return self.labels + (["none"] if self.cfg.allow_none else [])

    def prompt(self, text: str) -> str:
        cfg = self.cfg
        lines = []
        for name in self.labels:
            desc = self.descriptions.get(name) if cfg.use_descriptions else None
            lines.append(f"- {name}: {desc}" if desc else f"- {name}")
        none_clause = ', or "none" if no label fits' if cfg.allow_none else ""
        return cfg.prompt.format_map(
            {
                "labels": "\n".join(lines),
                "input": text,
                "none_clause": none_clause,
                "label_names": ", ".join(self.labels),
            }
        )

    def body(self, text: str) -> dict[str, Any]:
        cfg = self.cfg
        messages = ([{"role": "system", "content": cfg.system}] if cfg.system else []) + [
            {"role": "user", "content": self.prompt(text)}
        ]
        body: dict[str, Any] = {
            "model": cfg.model,
            "messages": messages,
            "temperature": cfg.temperature,
            "max_tokens": cfg.max_answer_tokens,
        }
        if cfg.seed is not None:
            body["seed"] = cfg.seed
        if cfg.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = cfg.logprobs
        if cfg.constrain == "json_schema":
            schema = {
                "type": "object",
                "properties": {"label": {"type": "string", "enum": self.choices}},
                "required": ["label"],
                "additionalProperties": False,
            }
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "label", "strict": True, "schema": schema},
            }
        elif cfg.constrain == "choice":
            body["structured_outputs"] = {"choice": self.choices}
        elif cfg.constrain == "guided_choice":
            body["guided_choice"] = self.choices
        body.update(cfg.extra_body)
        return body

    # -- one input, with its retries --------------------------------------------------------------

    def _budget_left(self) -> bool:
        cfg = self.cfg
        if cfg.max_calls is not None and self.calls >= cfg.max_calls:
            self.stopped = f"budget of {cfg.max_calls} calls (teacher.max_calls) spent"
            return False
        if cfg.max_tokens is not None and self.tokens >= cfg.max_tokens:
            self.stopped = f"budget of {cfg.max_tokens} tokens (teacher.max_tokens) spent"
            return False
        return True

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.cfg.max_backoff, self.cfg.backoff * 2 ** (attempt - 1)))

    async def _ask(self, client: Any, servers: Replicas, texts: list[str]) -> list[Response]:
        """The answers to one request's inputs (chat: one input a request)."""
        (text,) = texts

        def parse(content: bytes, seconds: float, attempts: int) -> list[Response] | None:
            out = self._answer(content, seconds, attempts)
            return None if out is None else [out]

        return await self._post(client, servers, "chat/completions", self.body(text), parse, 1)

    def _units(self, n: int) -> list[list[int]]:
        """The inputs asked together in one request, by index."""
        return [[i] for i in range(n)]

    async def _post(
        self,
        client: Any,
        servers: Replicas,
        path: str,
        body: dict[str, Any],
        parse: Callable[[bytes, float, int], list[Response] | None],
        n: int,
    ) -> list[Response]:
        """POST `body` to `path` of a server, with retries, until `parse` makes `n` answers of a 200 body (None:
        not the body expected, worth a retry); a failure or a 4xx answers each of the `n` inputs alike."""
        import httpx

        cfg = self.cfg
        start = time.perf_counter()
        attempt = 0
        while True:
            if not self._budget_left():
                return [failed(self.stopped or "budget spent", attempts=attempt)] * n
            server = await servers.acquire()  # the ready server with the fewest requests in flight
            attempt += 1
            self.calls += 1
            delay: float | None = None
            up = False  # the server answered (a 429 or a 4xx is an answer; a 5xx or silence is not)
            try:
                try:
                    async with asyncio.timeout(cfg.timeout):
                        resp = await client.post(server.url + path, json=body)
                        content = resp.content  # read fully inside the deadline
                except TimeoutError:
                    reason = f"no answer within teacher.timeout={cfg.timeout:g} s"
                except httpx.TransportError as exc:
                    reason = f"connection failed ({type(exc).__name__})"
                else:
                    up = resp.status_code < 500
                    if resp.status_code == 200:
                        out = parse(content, time.perf_counter() - start, attempt)
                        up = out is not None
                        if out is not None:
                            return out
                        reason = f"the server's body is not {self.expected} (malformed JSON)"
                    elif resp.status_code in FATAL_STATUS:
                        raise _Stop(
                            f"HTTP {resp.status_code} from {server.url} ({FATAL_STATUS[resp.status_code]}): "
                            f"check teacher.base_url, teacher.model and the key in ${cfg.api_key_env or '(none set)'}"
                        )
                    elif resp.status_code in RETRY_STATUS:
                        reason = f"HTTP {resp.status_code}"
                        delay = _retry_after(resp.headers.get("retry-after"))
                        if delay is not None:
                            delay = min(delay, max(cfg.max_backoff, 1.0))
                            servers.pause(server, delay)
                    else:
                        answer = rejected(
                            f"HTTP {resp.status_code}: {self._scrub(_server_message(content))}",
                            latency_ms=(time.perf_counter() - start) * 1000,
                            attempts=attempt,
                        )
                        return [answer] * n
            finally:
                servers.release(server, ok=up)
            if attempt > cfg.max_retries:
                return [failed(f"{reason}; gave up after {attempt} attempts", attempts=attempt)] * n
            await asyncio.sleep(delay if delay is not None else self._backoff(attempt))

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _answer(self, content: bytes, seconds: float, attempts: int) -> Response | None:
        """The parsed answer, or None when the body is not a chat completion (worth a retry)."""
        try:
            data = json.loads(content)
            choice = data["choices"][0]
            raw = choice["message"]["content"]
            usage = data.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError):
            return None
        if not isinstance(raw, str):
            return None
        raw = self._scrub(raw)
        tin, tout = usage.get("prompt_tokens"), usage.get("completion_tokens")
        self.tokens += int(usage.get("total_tokens") or (tin or 0) + (tout or 0))
        meta: dict[str, Any] = {"latency_ms": seconds * 1000, "tokens_in": tin, "tokens_out": tout}
        meta["attempts"] = attempts
        parsed = self.parser.parse(raw, "label" if self.cfg.constrain == "json_schema" else None)
        if parsed.reason is not None:
            return rejected(parsed.reason, raw, **meta)
        if parsed.label is None:
            return Response(label=None, reason="teacher answered none of the labels", raw=raw, **meta)
        probs = None
        tokens = ((choice.get("logprobs") or {}).get("content")) if self.cfg.logprobs else None
        if tokens and parsed.span:
            try:
                probs = soft_labels(raw, tokens, parsed.span, self.labels, parsed.label)
            except (AttributeError, TypeError):
                probs = None
        return Response(label=parsed.label, probs=probs, raw=raw, **meta)

    # -- many inputs ------------------------------------------------------------------------------

    async def _run(self, texts: list[str], out: asyncio.Queue) -> None:
        import httpx

        cfg = self.cfg
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        _no_sniffio()
        size = min(cfg.concurrency, POOL_SIZE)
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        units = self._units(len(texts))
        todo = iter(units)
        stop = asyncio.Event()
        servers = self.replicas
        servers.start()

        async def worker(client: httpx.AsyncClient) -> None:
            for unit in todo:
                if stop.is_set():
                    return
                try:
                    responses = await self._ask(client, servers, [texts[i] for i in unit])
                except _Stop as exc:
                    self.stopped = self._fatal = str(exc)
                    stop.set()
                    raise
                if responses[0].status == "failed" and not self._budget_left():
                    stop.set()
                    return  # inputs the budget cut off are not answered: asked again next run
                for i, response in zip(unit, responses, strict=True):
                    await out.put((i, response))

        n_workers = min(cfg.concurrency, len(units))
        # httpcore's pool costs O(connections) per request: small pools keep the client off the CPU at
        # high concurrency (measured: 64 workers on one pool reached 8% of the ideal rate here)
        n_clients = -(-n_workers // POOL_SIZE)
        tls = httpx.create_ssl_context()  # one for all clients: loading the CA bundle takes ~80 ms each
        try:
            async with contextlib.AsyncExitStack() as stack:
                clients = [
                    await stack.enter_async_context(
                        # no base_url: each request names its server (clients are not tied to one)
                        httpx.AsyncClient(headers=headers, limits=limits, timeout=cfg.timeout, verify=tls)
                    )
                    for _ in range(n_clients)
                ]
                workers = [asyncio.ensure_future(worker(clients[w % n_clients])) for w in range(n_workers)]
                results = await asyncio.gather(*workers, return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, _Stop | asyncio.CancelledError):
                    raise r
        finally:
            await out.put(None)

    def stream(self, texts: list[str]) -> Iterator[tuple[int, Response]]:
        """(index, response) as answers arrive; raises InputError after the last one if the server refused us."""
        self.stopped = self._fatal = None
        if self.cfg.api_key_env and not self._key:
            raise InputError(
                f"teacher.api_key_env names ${self.cfg.api_key_env}, which is not set: export it (or drop api_key_env)"
            )
        loop = asyncio.new_event_loop()
        try:
            out: asyncio.Queue = asyncio.Queue()
            main = loop.create_task(self._run(texts, out))
            while (item := loop.run_until_complete(out.get())) is not None:
                yield item
            loop.run_until_complete(main)
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending))
            loop.close()
        if self._fatal:
            raise InputError(self._fatal)

    def answer(self, batch: list[str]) -> list[Response]:
        got = dict(self.stream(batch))
        return [got.get(i) or failed(self.stopped or "not asked") for i in range(len(batch))]


def _no_sniffio() -> None:
    """httpcore tries `import sniffio` on every request; when it is not installed, each failed import
    searches sys.path again (a third of the client's time at 64 requests in flight). Record the absence once."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]  # `import sniffio` now fails at once


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(content: bytes) -> str:
    try:
        err = json.loads(content).get("error")
        msg = err.get("message") if isinstance(err, dict) else err
    except (ValueError, AttributeError):
        msg = None
    text = str(msg) if msg else content.decode("utf-8", "replace")
    return " ".join(text.split())[:200]
