"""Collection with the real offline teacher: never asks twice, resumes, dry-runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import tsd
from slices import write_slice


def test_collect_resumes_and_never_asks_twice(tmp_path: Path) -> None:
    task = write_slice(tmp_path, train_per_label=10, test_per_label=5, hotels=10)
    work = tmp_path / "w"
    dry = tsd("collect", task, "--workdir", work, "--dry-run")
    assert dry.code == 0 and "130 teacher calls would be made" in dry.out, dry.out + dry.err
    first = tsd("collect", task, "--workdir", work, "--limit", "50")
    assert first.code == 0, first.err[-2000:]
    assert "50 asked" in first.out
    rest = tsd("collect", task, "--workdir", work)
    assert "80 asked" in rest.out and "50 already answered" in rest.out, rest.out
    db = sqlite3.connect(work / "pairs.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT input_hash) FROM pairs").fetchone() == (130, 130)
    splits = dict(db.execute("SELECT split, COUNT(*) FROM pairs GROUP BY split").fetchall())
    assert splits["heldout"] > 0 and splits["train"] > splits["heldout"]
    again = tsd("collect", task, "--workdir", work)
    assert "all 130 inputs already answered" in again.out
