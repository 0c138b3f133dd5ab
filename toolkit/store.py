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
from typing import Any

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
    latency_ms  REAL,                   -- from the first request to the answer, retries included
    tokens_in   INTEGER,                -- prompt tokens, where the teacher reports them
    tokens_out  INTEGER,                -- completion tokens
    attempts    INTEGER,                -- requests it took (1 = no retry)
    created_at  REAL NOT NULL,
    PRIMARY KEY (input_hash, teacher)
);
CREATE INDEX IF NOT EXISTS pairs_teacher_split ON pairs (teacher, split, status);
CREATE TABLE IF NOT EXISTS meta (
    key         TEXT PRIMARY KEY,       -- e.g. relevance/<teacher>: the calibrated relevance rule
    value       TEXT NOT NULL           -- JSON
);
CREATE TABLE IF NOT EXISTS vectors (    -- sentence embeddings of texts that are not pairs (relevance reference)
    encoder     TEXT NOT NULL,
    input_hash  TEXT NOT NULL,
    embedding   BLOB NOT NULL,
    PRIMARY KEY (encoder, input_hash)
);
"""
# columns added after the first release: (name, SQL type); older stores get them on open
ADDED_COLUMNS = [("tokens_in", "INTEGER"), ("tokens_out", "INTEGER"), ("attempts", "INTEGER")]
COLUMNS = (
    "input_hash, input, source, gold, split, status, label, probs, embedding, relevance, relevant,"
    " reason, raw, latency_ms, tokens_in, tokens_out, attempts"
)


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
    tokens_in: int | None = None
    tokens_out: int | None = None
    attempts: int | None = None


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
            have = {row[1] for row in self.db.execute("PRAGMA table_info(pairs)")}
            with self.db:
                for name, kind in ADDED_COLUMNS:
                    if name not in have:
                        self.db.execute(f"ALTER TABLE pairs ADD COLUMN {name} {kind}")
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
                p.tokens_in,
                p.tokens_out,
                p.attempts,
                time.time(),
            )
            for p in pairs
        ]
        with self.db:
            cur = self.db.executemany(
                "INSERT INTO pairs (input_hash, teacher, input, source, gold, split, status, reason, raw,"
                " label, probs, embedding, relevance, relevant, latency_ms, tokens_in, tokens_out, attempts,"
                " created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                # only a pair already stored is skipped; a row breaking a CHECK is an error, not silence
                " ON CONFLICT (input_hash, teacher) DO NOTHING",
                rows,
            )
        return cur.rowcount

    def get_meta(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, sort_keys=True)))

    # the collect stage's record: removed before answers are added, set once relevance has scored them all
    def begin_collect(self, fingerprint: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM meta WHERE key=?", (f"collected/{fingerprint}",))

    def finish_collect(self, fingerprint: str, **info: Any) -> None:
        self.set_meta(f"collected/{fingerprint}", {"finished": time.time(), **info})

    def collect_record(self, fingerprint: str) -> dict[str, Any] | None:
        return self.get_meta(f"collected/{fingerprint}")

    def vectors(self, encoder: str, keys: list[str], fingerprint: str | None = None) -> dict[str, np.ndarray]:
        """Stored embeddings by input hash: from the vector cache, else from `fingerprint`'s pairs."""
        out: dict[str, np.ndarray] = {}
        wanted = list(dict.fromkeys(keys))
        for i in range(0, len(wanted), 900):  # SQLite's limit on bound parameters
            part = wanted[i : i + 900]
            marks = ",".join("?" * len(part))
            q = f"SELECT input_hash, embedding FROM vectors WHERE encoder=? AND input_hash IN ({marks})"
            out.update((k, _array(b)) for k, b in self.db.execute(q, [encoder, *part]))  # type: ignore[misc]
            if fingerprint is not None:
                q = (
                    "SELECT input_hash, embedding FROM pairs WHERE teacher=? AND embedding IS NOT NULL"
                    f" AND input_hash IN ({marks})"
                )
                rows = self.db.execute(q, [fingerprint, *part])
                out.update((k, _array(b)) for k, b in rows if k not in out)  # type: ignore[misc]
        return out

    def add_vectors(self, encoder: str, items: dict[str, np.ndarray]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO vectors VALUES (?, ?, ?)", [(encoder, k, _blob(v)) for k, v in items.items()]
            )

    def set_relevance(self, fingerprint: str, scores: dict[str, float]) -> None:
        with self.db:
            self.db.executemany(
                "UPDATE pairs SET relevance=? WHERE teacher=? AND input_hash=?",
                [(float(v), fingerprint, k) for k, v in scores.items()],
            )

    def mark_relevance(self, fingerprint: str, threshold: float | None) -> None:
        """Mark pairs relevant by score; threshold None is the one relevance calibrated at collection."""
        if threshold is None:
            rule = self.get_meta(f"relevance/{fingerprint}")
            if rule is None:
                raise InputError(f"{self.path}: relevance was never scored for this teacher: run `tsd-edge collect`")
            threshold = float(rule["threshold"])
        with self.db:
            self.db.execute(
                # an answer of "none of these" (no label) is never relevant, whatever its score
                "UPDATE pairs SET relevant = ((status != 'ok' OR label IS NOT NULL)"
                " AND (relevance IS NULL OR relevance >= ?)) WHERE teacher=?",
                (threshold, fingerprint),
            )

    def pairs(
        self, fingerprint: str, *, split: str | None = None, status: str | None = "ok", relevant: bool | None = None
    ) -> Iterator[Pair]:
        sql = f"SELECT {COLUMNS} FROM pairs WHERE teacher=?"
        args: list[object] = [fingerprint]
        for col, val in (("split", split), ("status", status)):
            if val is not None:
                sql += f" AND {col}=?"
                args.append(val)
        if relevant is not None:
            sql += " AND relevant=?"
            args.append(int(relevant))
        for r in self.db.execute(sql + " ORDER BY input_hash", args):
            yield Pair(*r[:7], _array(r[7]), _array(r[8]), r[9], bool(r[10]), *r[11:])

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
