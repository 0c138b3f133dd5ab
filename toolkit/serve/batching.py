"""Dynamic batching: requests that arrive together are answered by one model call.

Each model has one `Batcher`: an asyncio task that takes queued requests, gathers more of them until the batch
holds `max_batch` texts or `max_delay` has passed, sorts the batch's texts by length (so little of it is
padding) and runs the model once in the batcher's own worker thread, off the event loop. While the model runs,
new requests queue up and form the next batch, so under load batches fill without waiting at all.

The delay is only spent when there is something to gather: another request is being read, or the previous
batch held more than one request. A lone request on an idle server runs at once, so batching costs a
single client nothing. `max_batch=1` turns batching off: one model call per request, in arrival order.

Any object with `predict(texts, top_k)` whose answers have `.label`, `.score` and `.top_k` (a list of
(label, score)) can be batched: the runtime's `Model`, or a teacher behind an adapter. A model of `kind` "embed"
is called through `embed_counted(texts)` instead, and each text's answer is its `Embedded` vector and token count.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict

Answer = Dict[str, Any]


class Closing(Exception):
    """The server is shutting down and takes no new work."""


class Arrivals:
    """How many inference requests are being read (not yet queued): the batchers wait for them."""

    def __init__(self) -> None:
        self.count = 0

    def arriving(self) -> Arrival:
        """A request starts being read: `with arrivals.arriving() as arrival:` ... `arrival.queued()`."""
        return Arrival(self)


class Arrival:
    """One request counted in `Arrivals` from its first byte until it reaches a batcher (`queued`) or fails."""

    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals = arrivals
        self.reading = True
        arrivals.count += 1

    def queued(self) -> None:
        if self.reading:
            self.reading = False
            self.arrivals.count -= 1

    def __enter__(self) -> Arrival:
        return self

    def __exit__(self, *exc: object) -> None:
        self.queued()


class _Item:
    __slots__ = ("future", "texts", "top_k")

    def __init__(self, texts: list[str], top_k: int, future: asyncio.Future) -> None:
        self.texts = texts
        self.top_k = top_k
        self.future = future


class Embedded:
    """One text's answer from an embed model: its vector (float32, unit length) and the tokens the model read."""

    __slots__ = ("tokens", "vector")

    def __init__(self, vector: Any, tokens: int) -> None:
        self.vector = vector
        self.tokens = tokens


def answer_dict(pred: Any, top_k: int) -> Answer:
    """One prediction as the JSON the server returns (rounded as `Prediction.to_dict` rounds)."""
    out: Answer = {"label": str(pred.label), "score": round(float(pred.score), 6)}
    if getattr(pred, "confidence", None) is not None:  # a package with a deferral rule: who answered, how sure
        out["source"] = str(pred.source)
        out["confidence"] = round(float(pred.confidence), 6)
    if getattr(pred, "error", None):
        out["error"] = str(pred.error)
    if top_k > 1:
        out["top_k"] = [{"label": str(lab), "score": round(float(s), 6)} for lab, s in list(pred.top_k)[:top_k]]
    return out


class Batcher:
    def __init__(
        self,
        model: Any,
        max_batch: int = 32,
        max_delay_ms: float = 2.0,
        arrivals: Arrivals | None = None,
        observe: Callable[[int, int, float], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.model = model
        self.max_batch = max_batch
        self.max_delay = max(0.0, max_delay_ms) / 1000.0
        self.arrivals = arrivals or Arrivals()
        self.observe = observe  # (texts, requests, seconds) of each model call
        self.embeds = getattr(model, "kind", "classify") == "embed"
        self._queue: collections.deque[_Item] = collections.deque()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tsd-serve-model")
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._last_requests = 0
        self.running = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())
        self.running = True

    async def submit(self, texts: list[str], top_k: int = 1) -> list[Any]:
        """The answers for `texts`, in order, once the batch holding them has run: `answer_dict`s, or for an
        embed model `Embedded`s."""
        if self._closing or self._wakeup is None:
            raise Closing("the server is shutting down")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(texts, top_k, future))
        self._wakeup.set()
        result: list[Any] = await future
        return result

    async def close(self) -> None:
        """Take no new requests, answer every queued one, then stop the worker thread."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)
        self.running = False

    def _more_expected(self) -> bool:
        return self.arrivals.count > 0 or self._last_requests > 1

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            first = self._queue.popleft()
            batch = [first]
            size = len(first.texts)
            deadline = loop.time() + self.max_delay
            while size < self.max_batch:
                if self._queue:
                    if size + len(self._queue[0].texts) > self.max_batch:
                        break
                    item = self._queue.popleft()
                    batch.append(item)
                    size += len(item.texts)
                    continue
                remaining = deadline - loop.time()
                if self._closing or remaining <= 0 or not self._more_expected():
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            self._last_requests = len(batch)
            await self._run_batch(loop, batch)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        live = [item for item in batch if not item.future.done()]  # a cancelled request is not run
        if not live:
            return
        texts = [text for item in live for text in item.texts]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        top_k = max(item.top_k for item in live)
        started = time.perf_counter()
        try:
            preds = await loop.run_in_executor(self._executor, self._predict, [texts[i] for i in order], top_k)
        except Exception as exc:
            if len(live) > 1:  # one request's failure is not its neighbours': answer each alone
                for item in live:
                    await self._run_batch(loop, [item])
                return
            if not live[0].future.done():
                live[0].future.set_exception(exc)
            return
        finally:
            if self.observe is not None:
                self.observe(len(texts), len(live), time.perf_counter() - started)
        if len(preds) != len(texts):
            error = RuntimeError(f"the model gave {len(preds)} answers for {len(texts)} texts")
            for item in live:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        ordered: list[Any] = [None] * len(texts)
        for position, index in enumerate(order):
            ordered[index] = preds[position]
        start = 0
        for item in live:
            mine = ordered[start : start + len(item.texts)]
            answers = mine if self.embeds else [answer_dict(p, item.top_k) for p in mine]
            start += len(item.texts)
            if not item.future.done():
                item.future.set_result(answers)

    def _predict(self, texts: list[str], top_k: int) -> list[Any]:
        if self.embeds:
            vectors, tokens = self.model.embed_counted(texts)
            return [Embedded(v, n) for v, n in zip(vectors, tokens)]
        return list(self.model.predict(texts, top_k=top_k))
