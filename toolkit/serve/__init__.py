"""`tsd-edge serve`: packages behind HTTP — health, readiness, a JSON classify endpoint, the KServe v2 /
Open Inference Protocol, Prometheus metrics, and dynamic batching.

    build_app(models)            the ASGI app for name -> model (anything with predict/describe/name)
    Batcher                      gathers concurrent requests into one length-sorted model call
    serve(app, bind(host, port)) runs it under uvicorn until SIGTERM, then drains

Python 3.8+; Starlette, uvicorn and prometheus-client on top of the runtime (no torch, no teacher).
"""

from __future__ import annotations

from .app import ApiError, Batching, Limits, build_app
from .batching import Batcher, Closing
from .server import bind, serve, url_of

__all__ = ["ApiError", "Batcher", "Batching", "Closing", "Limits", "bind", "build_app", "serve", "url_of"]
