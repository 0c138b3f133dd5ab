"""SIGKILL `tsd-edge collect` at random points; the next run completes with exactly one answer per input."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tsd
from openai_server import FakeOpenAI
from test_teacher_openai import LABELS, texts, write_task

pytestmark = pytest.mark.network

N = 160


def stored(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0  # the schema is not there yet


def test_sigkill_mid_collection_then_resume_gives_one_answer_per_input(tmp_path: Path) -> None:
    rng = random.Random(7)
    with FakeOpenAI(LABELS, latency=0.02) as server:
        task = write_task(tmp_path, server.url, n=N, concurrency=4, batch_size=8)
        work = tmp_path / "w"
        db = work / "pairs.sqlite"
        counts = []
        # kill once the first requests are out (not during the interpreter's start-up: the server has seen a
        # request), then at two random points later on
        for target in (0, rng.randint(20, 60), rng.randint(80, 130)):
            proc = subprocess.Popen(
                [sys.executable, "-m", "tsd_edge", "collect", str(task), "--workdir", str(work)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "COLUMNS": "200"},
            )
            deadline = time.monotonic() + 60
            while target == 0 and not server.attempts and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            while target and stored(db) < target and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert proc.poll() is None, "collection finished before it could be killed: slow the server down"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            counts.append(stored(db))
        print("kill counts", counts)
        assert counts == sorted(counts) and counts[-1] < N
        final = tsd("collect", task, "--workdir", work)
        assert final.code == 0, final.err[-2000:]
        con = sqlite3.connect(db)
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        total, distinct = con.execute("SELECT COUNT(*), COUNT(DISTINCT input_hash) FROM pairs").fetchone()
        assert total == distinct == N
        assert {r[0] for r in con.execute("SELECT input FROM pairs")} == set(texts(N))
        # a kill loses at most what was in flight or not yet committed: never more than a batch per worker
        answered = sum(server.outcomes[t].count("ok") for t in texts(N))
        assert N <= answered <= N + 3 * (4 + 8)
        again = tsd("collect", task, "--workdir", work)
        assert f"all {N} inputs already answered" in again.out
