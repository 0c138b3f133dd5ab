"""Several servers behind one HTTP teacher: least outstanding requests, and a cool-down for a failing one.

Every request goes to the healthy server with the fewest requests in flight (ties: the one that got
the fewest so far), so a slower server gets fewer requests and none is buried. A server that fails
`FAIL_AFTER` requests in a row (connection errors, timeouts, 5xx) is taken out for `cooldown`
seconds; the request is retried elsewhere. After the cool-down it is probed with one request at a
time: an answer brings it back, another failure takes it out again. A `Retry-After` (429/503)
pauses only the server that sent it. With a single server nothing is ever taken out: there is
nowhere else to go, and the teacher's own retries and backoff apply as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

FAIL_AFTER = 2  # failures in a row that take a server out (one may be a blip; the request is retried anyway)


@dataclass
class Replica:
    url: str
    in_flight: int = 0
    sent: int = 0  # requests, retries included
    answered: int = 0  # HTTP 200 with a chat completion, or a 4xx the teacher stores as rejected
    failed: int = 0  # connection errors, timeouts, 5xx
    streak: int = 0  # failures in a row
    down_until: float = 0.0  # monotonic time its cool-down ends
    probing: bool = False  # back from a cool-down, not yet proven: one request at a time
    taken_out: int = 0  # times taken out
    returned: int = 0  # times it answered again after a cool-down
    not_before: float = 0.0  # Retry-After: no request before this monotonic time

    def stats(self) -> dict[str, int | str]:
        return {
            "url": self.url,
            "sent": self.sent,
            "answered": self.answered,
            "failed": self.failed,
            "taken_out": self.taken_out,
            "returned": self.returned,
        }


class Replicas:
    """The servers of one teacher, shared by all its workers (one asyncio loop, so no locks)."""

    def __init__(self, urls: list[str], cooldown: float) -> None:
        self.replicas = [Replica(u.rstrip("/") + "/") for u in urls]
        self.cooldown = cooldown
        self._changed = asyncio.Event()

    def start(self) -> None:
        """Before the requests of a new event loop (each `stream` runs its own); counts and cool-downs carry over."""
        self._changed = asyncio.Event()
        for r in self.replicas:
            r.in_flight, r.probing = 0, False

    def _ready(self, r: Replica, now: float) -> bool:
        return r.down_until <= now and r.not_before <= now and not (r.probing and r.in_flight)

    async def acquire(self) -> Replica:
        """The server for the next request (waits while none is ready); call `release` after it."""
        while True:
            now = time.monotonic()
            ready = [r for r in self.replicas if self._ready(r, now)]
            if ready:
                r = min(ready, key=lambda r: (r.in_flight, r.sent))
                if r.down_until and r.taken_out > r.returned:
                    r.probing = True
                r.in_flight += 1
                r.sent += 1
                return r
            later = [max(r.down_until, r.not_before) for r in self.replicas]
            wait = max(0.0, min(t for t in later if t > now) - now) if any(t > now for t in later) else None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=wait)

    def release(self, r: Replica, ok: bool) -> None:
        """`ok`: the server answered (even a 4xx the teacher rejects); else it failed (connection, timeout, 5xx)."""
        r.in_flight -= 1
        if ok:
            r.answered += 1
            r.streak = 0
            if r.probing:
                r.probing = False
                r.returned += 1
        else:
            r.failed += 1
            r.streak += 1
            if len(self.replicas) > 1 and (r.probing or r.streak >= FAIL_AFTER):
                r.down_until = time.monotonic() + self.cooldown
                r.taken_out += 1
                r.probing = False
                r.streak = 0
        self._changed.set()

    def pause(self, r: Replica, seconds: float) -> None:
        """The server asked for a pause (Retry-After)."""
        r.not_before = max(r.not_before, time.monotonic() + seconds)

    def stats(self) -> list[dict[str, int | str]]:
        return [r.stats() for r in self.replicas]
