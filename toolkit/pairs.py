"""Looking into the pair store, and moving pairs to and from other tools (JSONL and Parquet).

One row per pair, these columns (docs/teachers/README.md lists them too):

| column | type | meaning |
| --- | --- | --- |
| `input` | string | the task input |
| `input_hash` | string | its SHA-256 (the pair's identity with `teacher`) |
| `source` | string | the input file it came from |
| `gold` | string or null | a gold label from the data, for reporting only |
| `split` | `train` / `heldout` | a function of `input_hash` alone |
| `status` | `ok` / `rejected` | rejected answers are kept with `reason` and `raw`, never trained on |
| `label` | string or null | the teacher's label (null: rejected, or "none of these") |
| `probs` | list of float or null | soft labels, in the order of `labels` in the metadata |
| `relevance` | float or null | the input's relevance score |
| `relevant` | bool | whether training uses the pair |
| `reason`, `raw` | string or null | why an answer was rejected; the teacher's raw text |
| `latency_ms`, `tokens_in`, `tokens_out`, `attempts` | number or null | cost of the answer |
| `teacher` | string | the teacher's fingerprint |
| `embedding` | list of float or null | only with `--embeddings`; always for an embed task, whose answer it is |

The teacher's labels and spec travel beside the rows: in the Parquet schema metadata
(`tsd_edge.teacher`) and, for JSONL, in `<file>.teacher.json`. Importing a file without them
assigns its rows to the task's current teacher, with the task's labels.

An embed task's teacher has no labels (`labels` is `[]`): its answer is the `embedding`, so export always
writes it, and import requires one on every `ok` row (finite numbers, one length for the file, no label or
probs), stored unit length as the teachers store theirs.

At scale, export to a folder instead of a file: `part-00000.parquet`, `part-00001.parquet`, ... of
`shard_size` rows each, every shard with the teacher's metadata, written while the store is read
(memory holds one shard). Import takes a file, a folder (its `*.parquet` and `*.jsonl` files) or a
glob, so a collection on a cluster can feed a distillation elsewhere.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data import heldout, input_key, jsonl_rows
from .errors import InputError, RuntimeMissingError
from .store import ARRAYS, PAIR_COLUMNS, Pair, PairStore
from .task import Task
from .teachers.vectors import VectorCheck
from .textfile import read_json, read_lines

# the exported columns: the store's (store.PAIR_COLUMNS), input first as people read it; embeddings on request
COLUMNS = ["input", *(c.name for c in PAIR_COLUMNS if c.arrow and c.name not in ("input", "embedding"))]


@dataclass
class StoreSummary:
    teacher: str
    spec: dict[str, Any]
    total: int
    by_status: dict[str, int]
    by_split: dict[str, int]
    by_relevance: dict[str, int]
    by_label: dict[str, int]
    by_source: dict[str, tuple[int, int]]  # source -> (ok answers, relevant)
    # by_label is empty for an embed teacher (no labels: its answer is an embedding of this length)
    tokens_in: int
    tokens_out: int
    latency_ms_median: float | None
    retried: int
    rejected: list[tuple[str, str, str | None]] = field(default_factory=list)  # (input, reason, raw)
    relevance_rule: dict[str, Any] | None = None  # the rule collection last marked pairs with
    embedding_dim: int | None = None


def summarise(store: PairStore, fingerprint: str, sample: int = 5) -> StoreSummary:
    sources = {src: (n, kept) for src, n, kept in store.kept_by_source(fingerprint)}
    tin, tout, retried, lat = store.costs(fingerprint)
    rejected = store.rejected(fingerprint, sample)
    spec = store.spec(fingerprint)
    by_status = store.count_by(fingerprint, "status")
    embeds = not store.labels(fingerprint)
    return StoreSummary(
        teacher=fingerprint,
        spec=spec,
        total=sum(by_status.values()),
        by_status=by_status,
        by_split=store.count_by(fingerprint, "split"),
        by_relevance=store.count_by(fingerprint, "relevant", ok_only=True),
        by_label={} if embeds else store.count_by(fingerprint, "label", ok_only=True),
        by_source=sources,
        tokens_in=int(tin),
        tokens_out=int(tout),
        latency_ms_median=float(np.median(lat)) if lat else None,
        retried=int(retried),
        rejected=[(r[0], r[1] or "", r[2]) for r in rejected],
        relevance_rule=store.get_meta(f"relevance/{fingerprint}"),
        embedding_dim=store.embedding_dim(fingerprint) if embeds else None,
    )


# -- export ----------------------------------------------------------------------------------------


SHARD_SIZE = 100_000  # rows per Parquet shard by default (~40 MB with embeddings of 384 floats)


def _format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    raise InputError(f"{path}: unknown format; name the file *.parquet or *.jsonl")


def is_file_name(path: Path) -> bool:
    """A path naming one file of pairs (*.parquet, *.jsonl); anything else names a folder of shards."""
    return path.name.lower().endswith((".parquet", ".jsonl", ".ndjson"))


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise RuntimeMissingError("Parquet import/export", "pyarrow") from None
    return pyarrow


def _row(p: Pair, fingerprint: str, embeddings: bool) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name in [*COLUMNS, "embedding"] if embeddings else COLUMNS:
        value = fingerprint if name == "teacher" else getattr(p, name)
        row[name] = [float(x) for x in value] if name in ARRAYS and value is not None else value
    return row


def export_pairs(
    store: PairStore, fingerprint: str, path: Path, *, embeddings: bool = False, shard_size: int | None = None
) -> int:
    """Write every pair of `fingerprint` to one file, or to a folder of Parquet shards (`shard_size` given,
    an existing folder, or a name without a suffix). Returns the number of pairs."""
    labels = store.labels(fingerprint)
    embeddings = embeddings or not labels  # an embed teacher's answer is its embedding
    meta = {"fingerprint": fingerprint, "labels": labels, "spec": summarise(store, fingerprint, 0).spec}
    if shard_size is not None or path.is_dir() or not path.suffix:
        if is_file_name(path):
            raise InputError(f"{path}: --shard-size writes a folder of part-NNNNN.parquet files; give a folder")
        return _export_shards(store, fingerprint, path, meta, embeddings, shard_size or SHARD_SIZE)
    fmt = _format(path)
    rows = [_row(p, fingerprint, embeddings) for p in store.pairs(fingerprint, status=None)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    if fmt == "jsonl":
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        path.with_name(path.name + ".teacher.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    else:
        pa = _pyarrow()
        cols = [*COLUMNS, "embedding"] if embeddings else COLUMNS
        table = pa.Table.from_pylist(rows, schema=_schema(pa, embeddings)).select(cols)
        table = table.replace_schema_metadata({"tsd_edge.teacher": json.dumps(meta)})
        pa.parquet.write_table(table, tmp)
    tmp.replace(path)
    return len(rows)


def _export_shards(
    store: PairStore, fingerprint: str, folder: Path, meta: dict[str, Any], embeddings: bool, shard_size: int
) -> int:
    if shard_size < 1:
        raise InputError(f"--shard-size {shard_size}: give a number of rows per shard, at least 1")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file; shards go into a folder (name a new or existing folder)")
    pa = _pyarrow()
    folder.mkdir(parents=True, exist_ok=True)
    cols = [*COLUMNS, "embedding"] if embeddings else COLUMNS
    schema = _schema(pa, embeddings)
    written: list[Path] = []
    total = 0
    for n, chunk in enumerate(_chunks(store.pairs(fingerprint, status=None), shard_size)):
        table = pa.Table.from_pylist([_row(p, fingerprint, embeddings) for p in chunk], schema=schema).select(cols)
        table = table.replace_schema_metadata({"tsd_edge.teacher": json.dumps(meta)})
        tmp = folder / f".part-{n:05d}.parquet.part"
        pa.parquet.write_table(table, tmp)
        written.append(tmp)
        total += len(chunk)
    # only now replace what an earlier export left: a reader never sees a mix of two exports' shards
    for old in folder.glob("part-*.parquet"):
        old.unlink()
    for tmp in written:
        tmp.replace(folder / tmp.name[1:].removesuffix(".part"))
    return total


def _chunks(items: Iterable[Pair], size: int) -> Iterator[list[Pair]]:
    chunk: list[Pair] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _schema(pa: Any, embeddings: bool) -> Any:
    kinds = {c.name: c.arrow for c in PAIR_COLUMNS if c.arrow is not None}
    types = {"string": pa.string(), "float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_()}
    types["floats"] = pa.list_(pa.float32())
    return pa.schema([(name, types[kinds[name]]) for name in ([*COLUMNS, "embedding"] if embeddings else COLUMNS)])


# -- import ----------------------------------------------------------------------------------------


def _read(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    if not path.is_file():
        raise InputError(f"file not found: {path} (give a .parquet or .jsonl file of pairs)")
    if _format(path) == "jsonl":
        rows = []
        for n, obj in jsonl_rows(read_lines(path, "give a .jsonl file of pairs"), path):
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{n}: a row is a JSON object with at least 'input' and 'label'")
            rows.append(obj)
        side = path.with_name(path.name + ".teacher.json")
        meta = read_json(side, "it is written by `pairs export`: export again or remove it") if side.is_file() else None
        return rows, _teacher_meta(meta, side)
    pa = _pyarrow()
    try:
        table = pa.parquet.read_table(path)
        raw = (table.schema.metadata or {}).get(b"tsd_edge.teacher")
        meta = json.loads(raw) if raw else None
        return table.to_pylist(), _teacher_meta(meta, path)
    except (pa.ArrowException, ValueError, UnicodeDecodeError) as exc:
        raise InputError(
            f"{path}: not a Parquet file of pairs ({exc}); export it with `tsd-edge pairs export`"
        ) from None


def _teacher_meta(meta: Any, where: Path) -> dict[str, Any] | None:
    if meta is None:
        return None
    if (
        not isinstance(meta, dict)
        or not isinstance(meta.get("fingerprint"), str)
        or not isinstance(meta.get("labels"), list)
    ):
        raise InputError(f"{where}: the teacher description lacks 'fingerprint' or 'labels'; export the pairs again")
    return meta


def pair_files(source: Path | str | Sequence[Path | str]) -> list[Path]:
    """The files an import reads: a file, a folder's *.parquet / *.jsonl files (sorted), a glob, or a list of these."""
    if not isinstance(source, Path | str):
        return [f for one in source for f in pair_files(one)]
    text = str(source)
    if any(c in text for c in "*?["):
        files = [Path(f) for f in sorted(glob.glob(text))]
        if not files:
            raise InputError(f"no files match {text}: check the pattern (quote it so the shell leaves it to tsd-edge)")
        return files
    path = Path(source)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and is_file_name(f) and not f.name.startswith("."))
        if not files:
            raise InputError(f"{path}: no *.parquet or *.jsonl files in this folder")
        return files
    return [path]


def import_pairs(
    store: PairStore,
    task: Task,
    fingerprint: str,
    path: Path | str | Sequence[Path | str],
    teacher: Any = None,
) -> tuple[int, int]:
    """Add the pairs of a file, a folder of shards or a glob; (added, already there). Splits are
    recomputed from the task, never trusted. Given the task's `teacher`, its pairs are then scored
    for relevance by the task's rule (from imported embeddings where there are any) and the store is
    ready for `distill` with no input file present."""
    added = had = 0
    marked: set[str] = set()
    relevance = None
    if teacher is not None:
        from .relevance import Relevance

        relevance = Relevance(task, store, teacher)
        relevance.preflight()
        before = store.collect_record(teacher.fingerprint)
        store.begin_collect(teacher.fingerprint)
    for file in pair_files(path):
        rows, meta = _read(file)
        if meta:
            owner, labels, spec = meta["fingerprint"], meta["labels"], meta.get("spec") or {}
        else:
            owner, labels, spec = fingerprint, task.label_names, {"kind": "imported", "from": file.name}
        store.register_teacher(owner, labels, spec)
        vectors = None if labels else VectorCheck(store.embedding_dim(owner))  # no labels: an embed teacher
        pairs = [_pair(row, labels, task, f"{file}: row {n}", vectors) for n, row in enumerate(rows, 1)]
        n_added = store.add(owner, pairs)
        added, had = added + n_added, had + len(pairs) - n_added
        marked.add(owner)
    for owner in marked:
        if relevance is not None and owner == teacher.fingerprint:
            relevance.refresh(owner)
            store.finish_collect(owner, imported=True)
        elif task.relevance.threshold is not None or store.get_meta(f"relevance/{owner}") is not None:
            store.mark_relevance(owner, task.relevance.threshold)
    if relevance is not None and teacher.fingerprint not in marked and before is not None:
        store.set_meta(f"collected/{teacher.fingerprint}", before)  # none of its pairs came in: as it was
    return added, had


def _pair(row: dict[str, Any], labels: list[str], task: Task, where: str, vectors: VectorCheck | None = None) -> Pair:
    text = row.get("input")
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: no 'input' text; every row needs 'input' and 'label' (or status 'rejected')")
    text = text.strip()
    key = input_key(text)
    if row.get("input_hash") not in (None, key):
        raise InputError(f"{where}: input_hash does not match the input's SHA-256; drop the column or fix the row")
    status = row.get("status") or "ok"
    label = row.get("label")
    if status not in ("ok", "rejected"):
        raise InputError(f"{where}: status {status!r}; use 'ok' or 'rejected'")
    if status == "ok" and label is not None and label not in labels:
        raise InputError(f"{where}: label {label!r} is not one of the teacher's labels")
    probs = row.get("probs")
    if probs is not None and len(probs) != len(labels):
        raise InputError(f"{where}: probs has {len(probs)} values for {len(labels)} labels")
    emb = row.get("embedding")
    if vectors is not None and status == "ok":
        emb = _embed_answer(row, emb, vectors, where)
    return Pair(
        input_hash=key,
        input=text,
        source=str(row.get("source") or "imported"),
        gold=row.get("gold"),
        split="heldout" if heldout(key, task.split.heldout) else "train",
        status=status,
        label=label if status == "ok" else None,
        probs=None if probs is None else np.asarray(probs, dtype=np.float32),
        embedding=None if emb is None else np.asarray(emb, dtype=np.float32),
        relevance=row.get("relevance"),
        relevant=bool(row.get("relevant", True)),
        reason=row.get("reason"),
        raw=row.get("raw"),
        latency_ms=row.get("latency_ms"),
        tokens_in=row.get("tokens_in"),
        tokens_out=row.get("tokens_out"),
        attempts=row.get("attempts"),
    )


def _embed_answer(row: dict[str, Any], emb: Any, vectors: VectorCheck, where: str) -> np.ndarray:
    """An embed teacher's `ok` answer: its embedding, checked as the teachers check theirs, unit length."""
    if row.get("label") is not None or row.get("probs") is not None:
        raise InputError(f"{where}: an embed task's pair has no label or probs, only its embedding; drop them")
    if emb is None:
        raise InputError(
            f"{where}: an embed task's ok pair needs its 'embedding' (add it, or mark the row status rejected)"
        )
    vectors.settle([emb])
    vec, reason = vectors.vector(emb)
    if vec is None:
        raise InputError(f"{where}: {reason}; fix the row or mark it status 'rejected'")
    return vec
