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
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class Column:
    """One column of the pairs table: its SQL, its Arrow type in Parquet exports (None: not exported), and
    whether it came after the first release (older stores get it on open)."""

    name: str
    sql: str
    arrow: str | None  # "string", "float64", "int64", "bool", "floats" (float32 list)
    added: bool = False


# The pairs table, declared once: the SQL below, `PairStore.add`/`pairs`, the Parquet schema and the JSONL
# rows of `tsd-edge pairs export` (pairs.py) all derive from it. A new column goes here and on `Pair`.
PAIR_COLUMNS = (
    Column("input_hash", "TEXT NOT NULL", "string"),
    Column("teacher", "TEXT NOT NULL REFERENCES teachers(fingerprint)", "string"),
    Column("input", "TEXT NOT NULL", "string"),
    Column("source", "TEXT NOT NULL", "string"),
    Column("gold", "TEXT", "string"),  # a label from the data itself, for reporting only
    Column("split", "TEXT NOT NULL CHECK (split IN ('train', 'heldout'))", "string"),
    Column("status", "TEXT NOT NULL CHECK (status IN ('ok', 'rejected'))", "string"),
    Column("reason", "TEXT", "string"),  # why a response was rejected
    Column("raw", "TEXT", "string"),  # the teacher's raw answer, where it was text
    Column("label", "TEXT", "string"),
    Column("probs", "BLOB", "floats"),  # over the teacher's labels, little-endian float32
    Column("embedding", "BLOB", "floats"),
    Column("relevance", "REAL", "float64"),
    Column("relevant", "INTEGER", "bool"),
    Column("latency_ms", "REAL", "float64"),  # from the first request to the answer, retries included
    Column("tokens_in", "INTEGER", "int64", added=True),  # prompt tokens, where the teacher reports them
    Column("tokens_out", "INTEGER", "int64", added=True),  # completion tokens
    Column("attempts", "INTEGER", "int64", added=True),  # requests it took (1 = no retry)
    Column("created_at", "REAL NOT NULL", None),
)
ARRAYS = tuple(c.name for c in PAIR_COLUMNS if c.arrow == "floats")
_PAIRS_SQL = ",\n".join(f"    {c.name} {c.sql}" for c in PAIR_COLUMNS)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS teachers (
    fingerprint TEXT PRIMARY KEY,
    labels      TEXT NOT NULL,          -- JSON list: the order of every `probs` vector
    spec        TEXT NOT NULL,          -- JSON: what the teacher was
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pairs (
{_PAIRS_SQL},
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


FIELDS = tuple(f.name for f in dataclass_fields(Pair))  # what a Pair carries: every column but teacher, created_at


def _blob(a: np.ndarray | None) -> bytes | None:
    return None if a is None else np.asarray(a, dtype="<f4").tobytes()


def _array(b: bytes | None) -> np.ndarray | None:
    return None if b is None else np.frombuffer(b, dtype="<f4").copy()


def _sql(name: str, value: Any) -> Any:
    """A Pair's value as the pairs table stores it."""
    if name in ARRAYS:
        return _blob(value)
    return int(value) if name == "relevant" else value


def _value(name: str, stored: Any) -> Any:
    """A stored value as a Pair carries it."""
    if name in ARRAYS:
        return _array(stored)
    return bool(stored) if name == "relevant" else stored


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
                for col in PAIR_COLUMNS:
                    if col.added and col.name not in have:
                        self.db.execute(f"ALTER TABLE pairs ADD COLUMN {col.name} {col.sql}")
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
        names = [*FIELDS, "teacher", "created_at"]
        now = time.time()
        rows = [[*(_sql(name, getattr(p, name)) for name in FIELDS), fingerprint, now] for p in pairs]
        with self.db:
            cur = self.db.executemany(
                f"INSERT INTO pairs ({', '.join(names)}) VALUES ({','.join('?' * len(names))})"
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

    def mark_relevance(self, fingerprint: str, threshold: float | None) -> None:
        """Mark pairs relevant by score; threshold None is the one relevance calibrated at collection."""
        if threshold is None:
            rule = self.get_meta(f"relevance/{fingerprint}")
            if rule is None:
                raise InputError(f"{self.path}: relevance was never scored for this teacher: run `tsd-edge collect`")
            threshold = float(rule["threshold"])
        # an embed teacher (no labels) answers with its embedding: that is relevant-able, where a classify
        # teacher's answer without a label ("none of these") never is
        embeds = not self.labels(fingerprint)
        with self.db:
            self.db.execute(
                # a rejected answer, or one of "none of these" (no label), is never relevant, whatever its score
                "UPDATE pairs SET relevant = (status = 'ok' AND (label IS NOT NULL OR (? AND embedding IS NOT NULL))"
                " AND (relevance IS NULL OR relevance >= ?)) WHERE teacher=?",
                (int(embeds), threshold, fingerprint),
            )

    def pairs(
        self, fingerprint: str, *, split: str | None = None, status: str | None = "ok", relevant: bool | None = None
    ) -> Iterator[Pair]:
        sql = f"SELECT {', '.join(FIELDS)} FROM pairs WHERE teacher=?"
        args: list[object] = [fingerprint]
        for col, val in (("split", split), ("status", status)):
            if val is not None:
                sql += f" AND {col}=?"
                args.append(val)
        if relevant is not None:
            sql += " AND relevant=?"
            args.append(int(relevant))
        for r in self.db.execute(sql + " ORDER BY input_hash", args):
            yield Pair(**{name: _value(name, v) for name, v in zip(FIELDS, r, strict=True)})

    def spec(self, fingerprint: str) -> dict[str, Any]:
        row = self.db.execute("SELECT spec FROM teachers WHERE fingerprint=?", (fingerprint,)).fetchone()
        return json.loads(row[0]) if row else {}

    def kept_by_source(self, fingerprint: str) -> list[tuple[str, int, int]]:
        """(source, answered, relevant) per input file, over the accepted answers, by source."""
        q = (
            "SELECT source, COUNT(*), SUM(relevant) FROM pairs WHERE teacher=? AND status='ok'"
            " GROUP BY source ORDER BY source"
        )
        return [(src, n, int(kept or 0)) for src, n, kept in self.db.execute(q, (fingerprint,))]

    def count_by(self, fingerprint: str, column: str, *, ok_only: bool = False) -> dict[str, int]:
        """Pairs by the value of `column` (one of the store's columns; label None reads "(none of these)";
        relevant reads "relevant" / "not relevant"), most first."""
        if column not in FIELDS:
            raise ValueError(f"not a column of the pairs table: {column}")
        expr = {
            "label": "COALESCE(label, '(none of these)')",
            "relevant": "CASE WHEN relevant THEN 'relevant' ELSE 'not relevant' END",
        }.get(column, column)
        where = " AND status='ok'" if ok_only else ""
        q = f"SELECT {expr}, COUNT(*) FROM pairs WHERE teacher=?{where} GROUP BY {expr} ORDER BY COUNT(*) DESC"
        return {str(k): n for k, n in self.db.execute(q, (fingerprint,))}

    def costs(self, fingerprint: str) -> tuple[int, int, int, list[float]]:
        """Prompt tokens, completion tokens, answers that took a retry, and every recorded latency (ms)."""
        tin, tout, retried = self.db.execute(
            "SELECT COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), 0), COALESCE(SUM(attempts > 1), 0)"
            " FROM pairs WHERE teacher=?",
            (fingerprint,),
        ).fetchone()
        q = "SELECT latency_ms FROM pairs WHERE teacher=? AND latency_ms IS NOT NULL"
        return int(tin), int(tout), int(retried), [r[0] for r in self.db.execute(q, (fingerprint,))]

    def rejected(self, fingerprint: str, limit: int, *, latest: bool = False) -> list[tuple[str, str, str | None]]:
        """(input, reason, raw) of rejected answers: by input hash, or the latest first."""
        order = "created_at DESC" if latest else "input_hash"
        q = f"SELECT input, reason, raw FROM pairs WHERE teacher=? AND status='rejected' ORDER BY {order} LIMIT ?"
        return list(self.db.execute(q, (fingerprint, limit)))

    def unscored(self, fingerprint: str, *, all_: bool = False) -> list[tuple[str, str, bytes | None]]:
        """(input hash, input, stored embedding blob) of accepted answers without a relevance score (`all_`: all)."""
        where = "" if all_ else " AND relevance IS NULL"
        q = f"SELECT input_hash, input, embedding FROM pairs WHERE teacher=? AND status='ok'{where}"
        return list(self.db.execute(q, (fingerprint,)))

    def set_scores(self, fingerprint: str, keys: list[str], scores: Any, embeddings: Any = None) -> None:
        """Relevance scores, and the embeddings they were computed from where a pair had none (`embeddings`
        None: the scores alone; an embed task's `embedding` is the teacher's answer), in one transaction."""
        with self.db:
            if embeddings is None:
                self.db.executemany(
                    "UPDATE pairs SET relevance=? WHERE teacher=? AND input_hash=?",
                    [(float(v), fingerprint, k) for v, k in zip(scores, keys, strict=True)],
                )
                return
            self.db.executemany(
                "UPDATE pairs SET relevance=?, embedding=COALESCE(embedding, ?) WHERE teacher=? AND input_hash=?",
                [(float(v), _blob(e), fingerprint, k) for v, e, k in zip(scores, embeddings, keys, strict=True)],
            )

    def embedding_dim(self, fingerprint: str) -> int | None:
        """The length of the embeddings stored with this teacher's answers (None: none stored)."""
        q = "SELECT LENGTH(embedding) FROM pairs WHERE teacher=? AND embedding IS NOT NULL LIMIT 1"
        row = self.db.execute(q, (fingerprint,)).fetchone()
        return None if row is None else int(row[0]) // 4

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
