"""Issue 13, cases 8 and 9: collect says when inputs are still unanswered (exit 5), and a killed collection
keeps the relevance reference embeddings it had computed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tsd
from openai_server import FakeOpenAI
from slices import write_slice
from test_teacher_openai import LABELS, texts, write_task


@pytest.mark.network
def test_collect_with_inputs_left_unanswered_exits_5_and_says_how_many(tmp_path: Path) -> None:
    with FakeOpenAI(LABELS) as server:
        server.retry_after = 0
        task = write_task(tmp_path, server.url, n=30, max_retries=1)
        for text in texts(30)[:3]:
            server.plan[text] = ["500", "500"]  # more failures than retries: not answered this time
        work = tmp_path / "w"
        first = tsd("collect", task, "--workdir", work)
        assert first.code == 5, first.out + first.err
        assert "Traceback" not in first.err
        error = [ln for ln in first.err.splitlines() if ln.strip()]
        assert len(error) == 1 and "3 of 30 inputs are still unanswered" in error[0], first.err
        for text in texts(30)[3:5]:
            server.plan[text] = ["ok", "500", "500"]  # by attempt: answered above, failing in the new folder
        work2 = tmp_path / "w2"
        ran = tsd("run", task, "--workdir", work2)  # `run` does not go on to distill a partial collection either
        assert ran.code == 5 and "2 of 30 inputs are still unanswered" in ran.err, ran.out + ran.err
        assert "distill" not in ran.out
        again = tsd("collect", task, "--workdir", work)
        assert again.code == 0, again.out + again.err
        assert "3 asked" in again.out and "27 already answered" in again.out


def _vectors(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


ENCODE = """
import sys
from pathlib import Path
from tsd_edge import relevance
from tsd_edge.store import PairStore
from tsd_edge.task import load_task

relevance.REFERENCE_CHUNK = 8
task = load_task(sys.argv[1])
with PairStore(Path(sys.argv[2])) as store:
    rel = relevance.Relevance(task, store, None)
    keys, ref = rel.reference_embeddings("no-teacher")
    print("ROWS", len(ref))
"""


def test_killed_collection_keeps_reference_embeddings(tmp_path: Path) -> None:
    task = write_slice(tmp_path, train_per_label=40)  # the reference: the 320 rows of the examples file
    db = tmp_path / "w" / "pairs.sqlite"
    script = tmp_path / "encode.py"
    script.write_text(ENCODE)
    proc = subprocess.Popen([sys.executable, str(script), str(task), str(db)], env={**os.environ})
    deadline = time.monotonic() + 300
    while _vectors(db) < 40 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "encoding finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    kept = _vectors(db)
    assert 40 <= kept < 320, kept  # what was encoded before the kill is stored
    done = subprocess.run([sys.executable, str(script), str(task), str(db)], capture_output=True, text=True)
    assert "ROWS 320" in done.stdout, done.stderr[-2000:]
    assert _vectors(db) == 320
