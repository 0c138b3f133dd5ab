"""Prometheus metrics of one server, in its own registry (several servers can live in one process)."""

from __future__ import annotations

import re

# endpoint labels are route templates, never raw paths, so a client cannot grow the label set
_ROUTES = [
    (re.compile(r"^/v2/models/[^/]+/versions/[^/]+/infer$"), "/v2/models/{name}/versions/{version}/infer"),
    (re.compile(r"^/v2/models/[^/]+/versions/[^/]+/ready$"), "/v2/models/{name}/versions/{version}/ready"),
    (re.compile(r"^/v2/models/[^/]+/versions/[^/]+$"), "/v2/models/{name}/versions/{version}"),
    (re.compile(r"^/v2/models/[^/]+/infer$"), "/v2/models/{name}/infer"),
    (re.compile(r"^/v2/models/[^/]+/ready$"), "/v2/models/{name}/ready"),
    (re.compile(r"^/v2/models/[^/]+$"), "/v2/models/{name}"),
]
_FIXED = {
    "/health",
    "/ready",
    "/metrics",
    "/v1/classify",
    "/v1/embeddings",
    "/v1/models",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
}

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def endpoint_of(path: str) -> str:
    if path in _FIXED:
        return path
    for pattern, name in _ROUTES:
        if pattern.match(path):
            return name
    return "other"


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tsd_serve_requests", "HTTP requests answered", ["endpoint", "method", "status"], registry=self.registry
        )
        self.errors = Counter(
            "tsd_serve_errors",
            "Requests answered with an error, by kind (client: 4xx, server: 5xx)",
            ["endpoint", "kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tsd_serve_request_seconds",
            "Time from a request's arrival to its response",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_texts = Histogram(
            "tsd_serve_batch_size", "Texts per model call", ["model"], buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.batch_requests = Histogram(
            "tsd_serve_batch_requests",
            "Requests answered by one model call",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.model_seconds = Histogram(
            "tsd_serve_model_seconds",
            "Time of one model call (the batch, in the worker thread)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.texts = Counter(
            "tsd_serve_texts", "Texts answered (classified or embedded)", ["model"], registry=self.registry
        )
        self.queued = Gauge(
            "tsd_serve_queued_requests", "Requests waiting for a batch", ["model"], registry=self.registry
        )
        self.in_flight = Gauge("tsd_serve_in_flight_requests", "Requests being handled", registry=self.registry)

    def observe_request(self, path: str, method: str, status: int, seconds: float) -> None:
        endpoint = endpoint_of(path)
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status >= 400:
            self.errors.labels(endpoint, "server" if status >= 500 else "client").inc()

    def observe_batch(self, model: str, texts: int, requests: int, seconds: float) -> None:
        self.batch_texts.labels(model).observe(texts)
        self.batch_requests.labels(model).observe(requests)
        self.model_seconds.labels(model).observe(seconds)
        self.texts.labels(model).inc(texts)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
