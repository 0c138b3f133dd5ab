"""An HTTP teacher over several servers (tests/openai_server.py on 127.0.0.1): least outstanding requests,
a failing server taken out for a cool-down and brought back, every input answered exactly once."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from openai_server import FakeOpenAI
from tsd_edge.collect import collect
from tsd_edge.store import PairStore
from tsd_edge.task import load_task
from tsd_edge.teachers.openai import OpenAITeacher
from tsd_edge.teachers.replicas import FAIL_AFTER

pytestmark = pytest.mark.network

LABELS = ["billing", "delivery", "account", "technical"]


def texts(n: int) -> list[str]:
    return [f"customer question number {i}" for i in range(n)]


def write_task(folder: Path, urls: list[str], n: int, **teacher: object) -> Path:
    (folder / "in.txt").write_text("\n".join(texts(n)) + "\n", encoding="utf-8")
    settings = {"kind": "openai", "base_url": urls, "model": "m", "timeout": 2, "backoff": 0.01, **teacher}
    task = {
        "name": "replicas",
        "labels": LABELS,
        "inputs": [{"path": "in.txt"}],
        "relevance": {"method": "teacher"},
        "teacher": settings,
    }
    path = folder / "task.yaml"
    path.write_text(json.dumps(task), encoding="utf-8")
    return path


@pytest.fixture
def servers() -> Iterator[list[FakeOpenAI]]:
    with ExitStack() as stack:
        yield [stack.enter_context(FakeOpenAI(LABELS)) for _ in range(3)]


def answered_once(servers: list[FakeOpenAI], n: int) -> None:
    """Every input got exactly one answer over all servers (no input lost, none answered twice)."""
    for text in texts(n):
        oks = sum(s.outcomes[text].count("ok") for s in servers)
        assert oks == 1, (text, [s.outcomes[text] for s in servers])


def collect_with(task_path: Path, tmp_path: Path) -> tuple[OpenAITeacher, dict[str, str]]:
    task = load_task(task_path)
    teacher = OpenAITeacher(task)
    with PairStore(tmp_path / "pairs.sqlite") as store:
        result = collect(task, store, teacher)
        assert result.failed == 0, result.failures
        statuses = dict(store.db.execute("SELECT input, status FROM pairs"))
    return teacher, statuses


def test_requests_go_to_the_server_with_fewest_in_flight(tmp_path: Path, servers: list[FakeOpenAI]) -> None:
    fast, slow = servers[0], servers[1]
    fast.latency, slow.latency = 0.02, 0.2
    n = 150
    teacher, statuses = collect_with(write_task(tmp_path, [fast.url, slow.url], n, concurrency=6), tmp_path)
    assert len(statuses) == n and set(statuses.values()) == {"ok"}
    answered_once([fast, slow], n)
    got = {s.url: sum(s.attempts.values()) for s in (fast, slow)}
    # in flight stays split 3 / 3, so the server that answers 10x faster gets several times the requests
    assert got[fast.url] > 2 * got[slow.url] > 0, got
    assert fast.max_in_flight <= 4 and slow.max_in_flight <= 4, (fast.max_in_flight, slow.max_in_flight)
    stats = {s["url"].rstrip("/"): s for s in teacher.replicas.stats()}
    assert {url: stats[url]["sent"] for url in got} == got
    print(f"least outstanding: fast (20 ms) {got[fast.url]}, slow (200 ms) {got[slow.url]} requests")


def test_a_failing_server_is_taken_out_and_brought_back(tmp_path: Path, servers: list[FakeOpenAI]) -> None:
    n = 300
    for s in servers:
        s.latency = 0.02
    broken = servers[2]
    broken.plan = {t: ["500"] * 100 for t in texts(n)}  # every request to it fails, until it is mended

    def mend() -> None:  # once the teacher has had enough failures from it to take it out
        deadline = time.monotonic() + 30
        while broken.attempts.total() < FAIL_AFTER and time.monotonic() < deadline:
            time.sleep(0.005)
        broken.plan = {}

    fixer = threading.Thread(target=mend, daemon=True)
    fixer.start()
    task_path = write_task(tmp_path, [s.url for s in servers], n, concurrency=6, cooldown=0.3)
    teacher, statuses = collect_with(task_path, tmp_path)
    fixer.join()
    assert len(statuses) == n and set(statuses.values()) == {"ok"}
    answered_once(servers, n)
    stats = teacher.replicas.stats()
    print("replicas:", stats)
    assert stats[2]["taken_out"] >= 1 and stats[2]["returned"] >= 1, stats
    assert stats[2]["failed"] >= FAIL_AFTER
    assert sum(o.count("ok") for o in broken.outcomes.values()) > 0  # it answered again once back
    assert stats[0]["taken_out"] == stats[1]["taken_out"] == 0


def test_a_server_that_refuses_connections_is_left_out(tmp_path: Path, servers: list[FakeOpenAI]) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    n = 120
    urls = [servers[0].url, dead, servers[1].url]
    teacher, statuses = collect_with(write_task(tmp_path, urls, n, concurrency=4, cooldown=0.2), tmp_path)
    assert len(statuses) == n and set(statuses.values()) == {"ok"}
    answered_once(servers[:2], n)
    stats = teacher.replicas.stats()
    assert stats[1]["answered"] == 0 and stats[1]["taken_out"] >= 1
    assert stats[1]["sent"] < n // 4, stats  # after its first failures it was only probed now and then
