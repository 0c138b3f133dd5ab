"""The pair store: every call to the teacher and its response, in SQLite (WAL).

One row per (input, teacher fingerprint). Each batch of answers is one transaction, so a killed
collection leaves whole batches behind and the next run asks only for what is missing; an input
already answered by the same teacher is never asked again. Arrays (probabilities over the task's
labels, sentence embeddings) are stored as little-endian float32 blobs: no pickle, ever.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

SCHEMA = """
CREATE TABLE IF NOT EXISTS teachers (
    fingerprint TEXT PRIMARY KEY,
    labels      TEXT NOT NULL,          -- JSON list: the order of every `probs` vector
    spec        TEXT NOT NULL,          -- JSON: what the teacher was
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pairs (
    input_hash  TEXT NOT NULL,
    teacher     TEXT NOT NULL REFERENCES teachers(fingerprint),
    input       TEXT NOT NULL,
    source      TEXT NOT NULL,
    gold        TEXT,                   -- a label from the data itself, for reporting only
    split       TEXT NOT NULL CHECK (split IN ('train', 'heldout')),
    status      TEXT NOT NULL CHECK (status IN ('ok', 'rejected')),
    reason      TEXT,                   -- why a response was rejected
    raw         TEXT,                   -- the teacher's raw answer, where it was text
    label       TEXT,
    probs       BLOB,
    embedding   BLOB,
    relevance   REAL,
    relevant    INTEGER,
    latency_ms  REAL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (input_hash, teacher)
);
CREATE INDEX IF NOT EXISTS pairs_teacher_split ON pairs (teacher, split, status);
"""


@dataclass
class Pair:
    input_hash: str
    input: str
    source: str
    gold: str | None
    split: str
    status: str
    label: str | None
    probs: np.ndarray | None
    embedding: np.ndarray | None
    relevance: float | None
    relevant: bool
    reason: str | None = None
    raw: str | None = None
    latency_ms: float | None = None


def _blob(a: np.ndarray | None) -> bytes | None:
    return None if a is None else np.asarray(a, dtype="<f4").tobytes()


def _array(b: bytes | None) -> np.ndarray | None:
    return None if b is None else np.frombuffer(b, dtype="<f4").copy()


class PairStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self.db = sqlite3.connect(path, timeout=30.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise InputError(
                f"{path}: not a tsd-edge pair store ({exc}); move it away or use another --workdir"
            ) from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> PairStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def register_teacher(self, fingerprint: str, labels: list[str], spec: dict) -> None:
        row = self.db.execute("SELECT labels FROM teachers WHERE fingerprint=?", (fingerprint,)).fetchone()
        if row is None:
            with self.db:
                self.db.execute(
                    "INSERT INTO teachers VALUES (?,?,?,?)",
                    (fingerprint, json.dumps(labels), json.dumps(spec, sort_keys=True), time.time()),
                )
        elif json.loads(row[0]) != labels:
            raise InputError(
                f"{self.path}: teacher {fingerprint[:12]} was stored with other labels; use a new --workdir"
            )

    def labels(self, fingerprint: str) -> list[str]:
        row = self.db.execute("SELECT labels FROM teachers WHERE fingerprint=?", (fingerprint,)).fetchone()
        return json.loads(row[0]) if row else []

    def answered(self, fingerprint: str) -> set[str]:
        rows = self.db.execute("SELECT input_hash FROM pairs WHERE teacher=?", (fingerprint,))
        return {r[0] for r in rows}

    def add(self, fingerprint: str, pairs: Iterable[Pair]) -> int:
        """Write a batch atomically; a pair already stored for this teacher is left as it was."""
        rows = [
            (
                p.input_hash,
                fingerprint,
                p.input,
                p.source,
                p.gold,
                p.split,
                p.status,
                p.reason,
                p.raw,
                p.label,
                _blob(p.probs),
                _blob(p.embedding),
                p.relevance,
                int(p.relevant),
                p.latency_ms,
                time.time(),
            )
            for p in pairs
        ]
        with self.db:
            cur = self.db.executemany(
                "INSERT INTO pairs (input_hash, teacher, input, source, gold, split, status, reason, raw,"
                " label, probs, embedding, relevance, relevant, latency_ms, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                # only a pair already stored is skipped; a row breaking a CHECK is an error, not silence
                " ON CONFLICT (input_hash, teacher) DO NOTHING",
                rows,
            )
        return cur.rowcount

    def mark_relevance(self, fingerprint: str, threshold: float) -> None:
        with self.db:
            self.db.execute(
                "UPDATE pairs SET relevant = (relevance IS NULL OR relevance >= ?) WHERE teacher=?",
                (threshold, fingerprint),
            )

    def pairs(
        self, fingerprint: str, *, split: str | None = None, status: str | None = "ok", relevant: bool | None = None
    ) -> Iterator[Pair]:
        sql = "SELECT input_hash, input, source, gold, split, status, label, probs, embedding, relevance, relevant,"
        sql += " reason, raw, latency_ms FROM pairs WHERE teacher=?"
        args: list[object] = [fingerprint]
        for col, val in (("split", split), ("status", status)):
            if val is not None:
                sql += f" AND {col}=?"
                args.append(val)
        if relevant is not None:
            sql += " AND relevant=?"
            args.append(int(relevant))
        for r in self.db.execute(sql + " ORDER BY input_hash", args):
            yield Pair(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                _array(r[7]),
                _array(r[8]),
                r[9],
                bool(r[10]),
                r[11],
                r[12],
                r[13],
            )

    def counts(self, fingerprint: str) -> dict[str, int]:
        """Counts by status, split and relevance: the figures a person checks first."""
        out: dict[str, int] = {}
        q = "SELECT status, split, relevant, COUNT(*) FROM pairs WHERE teacher=? GROUP BY status, split, relevant"
        for status, split, relevant, n in self.db.execute(q, (fingerprint,)):
            key = f"{status}/{split}/{'relevant' if relevant else 'irrelevant'}"
            out[key] = n
        return out

    def digest(self, fingerprint: str) -> str:
        """A hash of what training would read: changes when any answer, split or relevance mark changes."""
        h = hashlib.sha256()
        q = "SELECT input_hash, status, label, relevant, split FROM pairs WHERE teacher=? ORDER BY input_hash"
        for row in self.db.execute(q, (fingerprint,)):
            h.update(repr(row).encode())
        return h.hexdigest()
