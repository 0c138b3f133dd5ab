"""The pair store: real SQLite files (WAL) in tmp_path."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tsd_edge.data import heldout, input_key
from tsd_edge.errors import InputError
from tsd_edge.store import Pair, PairStore

FP = "teacher-fingerprint-0123456789abcdef"
LABELS = ["refund", "card_lost", "balance"]


def make_pair(
    text: str,
    *,
    label: str | None = "refund",
    split: str | None = None,
    status: str = "ok",
    relevance: float | None = 0.9,
    relevant: bool = True,
    probs: np.ndarray | None = None,
    embedding: np.ndarray | None = None,
    gold: str | None = None,
    reason: str | None = None,
    raw: str | None = None,
    latency_ms: float | None = None,
) -> Pair:
    key = input_key(text)
    return Pair(
        input_hash=key,
        input=text,
        source="inputs.txt",
        gold=gold,
        split=split or ("heldout" if heldout(key, 0.2) else "train"),
        status=status,
        label=label,
        probs=probs,
        embedding=embedding,
        relevance=relevance,
        relevant=relevant,
        reason=reason,
        raw=raw,
        latency_ms=latency_ms,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PairStore]:
    s = PairStore(tmp_path / "pairs.sqlite")
    s.register_teacher(FP, LABELS, {"kind": "embedding", "model": "m"})
    yield s
    s.close()


def texts(pairs: list[Pair]) -> set[str]:
    return {p.input for p in pairs}


# --- opening ----------------------------------------------------------------------------------------------


def test_new_store_is_sqlite_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "pairs.sqlite"
    with PairStore(path) as s:
        s.register_teacher(FP, LABELS, {})
    assert path.is_file()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"teachers", "pairs"} <= tables


@pytest.mark.parametrize("content", [b"hello, this is not a database\n" * 20, bytes(range(256)) * 40])
def test_a_file_that_is_not_sqlite_is_an_input_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "pairs.sqlite"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        PairStore(path)
    assert str(path) in str(info.value)
    assert "not a tsd-edge pair store" in str(info.value)
    assert path.read_bytes() == content  # left as it was


def test_a_sqlite_file_of_another_schema_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "pairs.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE pairs (id INTEGER PRIMARY KEY, what TEXT)")
    with pytest.raises(InputError, match="not a tsd-edge pair store"):
        PairStore(path)


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "pairs.sqlite"
    with PairStore(path) as s:
        s.register_teacher(FP, LABELS, {"kind": "x"})
        s.add(FP, [make_pair("a"), make_pair("b")])
    with PairStore(path) as s:
        assert s.labels(FP) == LABELS
        assert texts(list(s.pairs(FP))) == {"a", "b"}


# --- teachers ---------------------------------------------------------------------------------------------


def test_register_teacher_is_idempotent_with_the_same_labels(store: PairStore) -> None:
    store.register_teacher(FP, LABELS, {"kind": "embedding", "model": "m"})
    store.register_teacher(FP, list(LABELS), {"other": "spec is not compared"})
    assert store.labels(FP) == LABELS


@pytest.mark.parametrize("labels", [["refund", "card_lost"], ["card_lost", "refund", "balance"], [*LABELS, "extra"]])
def test_register_teacher_with_other_labels_is_refused(store: PairStore, labels: list[str]) -> None:
    with pytest.raises(InputError) as info:
        store.register_teacher(FP, labels, {})
    assert "other labels" in str(info.value)
    assert FP[:12] in str(info.value)
    assert store.labels(FP) == LABELS


def test_labels_of_an_unknown_teacher_is_empty(store: PairStore) -> None:
    assert store.labels("nobody") == []


# --- add and answered -------------------------------------------------------------------------------------


def test_add_returns_new_rows_and_answered_lists_them(store: PairStore) -> None:
    batch = [
        make_pair("a"),
        make_pair("b"),
        make_pair("c", status="rejected", label=None, reason="unparsable"),
    ]
    assert store.add(FP, batch) == 3
    assert store.answered(FP) == {input_key("a"), input_key("b"), input_key("c")}
    assert store.answered("another-teacher") == set()
    assert store.add(FP, []) == 0


def test_a_stored_pair_is_never_overwritten(store: PairStore) -> None:
    first = make_pair("a", label="refund", relevance=0.9, probs=np.array([0.8, 0.1, 0.1]))
    assert store.add(FP, [first]) == 1
    second = make_pair("a", label="balance", relevance=0.1, relevant=False, probs=np.array([0.0, 0.0, 1.0]))
    assert store.add(FP, [second, make_pair("b")]) == 1  # only "b" is new
    (got,) = [p for p in store.pairs(FP) if p.input == "a"]
    assert got.label == "refund"
    assert got.relevance == pytest.approx(0.9)
    assert got.relevant is True
    np.testing.assert_array_equal(got.probs, np.array([0.8, 0.1, 0.1], dtype=np.float32))


def test_duplicate_within_a_batch_is_stored_once(store: PairStore) -> None:
    assert store.add(FP, [make_pair("a", label="refund"), make_pair("a", label="balance")]) == 1
    assert [p.label for p in store.pairs(FP)] == ["refund"]


def test_same_input_for_another_teacher_is_a_separate_pair(store: PairStore) -> None:
    store.register_teacher("other", LABELS, {})
    store.add(FP, [make_pair("a", label="refund")])
    assert store.add("other", [make_pair("a", label="balance")]) == 1
    assert [p.label for p in store.pairs(FP)] == ["refund"]
    assert [p.label for p in store.pairs("other")] == ["balance"]


def test_a_batch_is_atomic(store: PairStore) -> None:
    store.add(FP, [make_pair("before")])
    broken = make_pair("z")
    broken.raw = {"not": "bindable"}  # type: ignore[assignment]  # sqlite cannot bind it: the batch fails
    with pytest.raises(sqlite3.Error):
        store.add(FP, [make_pair("x"), make_pair("y"), broken])
    assert store.answered(FP) == {input_key("before")}
    assert store.add(FP, [make_pair("x")]) == 1  # the connection is still usable


@pytest.mark.parametrize("bad", [{"split": "test"}, {"status": "maybe"}])
def test_an_invalid_pair_is_not_silently_dropped(store: PairStore, bad: dict[str, str]) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store.add(FP, [make_pair("x"), make_pair("z", **bad)])  # type: ignore[arg-type]


def test_all_fields_round_trip(store: PairStore) -> None:
    rng = np.random.default_rng(0)
    probs = rng.random(3).astype(np.float64)
    emb = rng.standard_normal(384).astype(np.float32)
    pair = make_pair(
        "héllo wörld ✓",
        gold="balance",
        split="heldout",
        probs=probs,
        embedding=emb,
        relevance=0.4321,
        raw="Balance.",
        latency_ms=12.5,
    )
    store.add(FP, [pair])
    (got,) = store.pairs(FP)
    assert got.input_hash == input_key("héllo wörld ✓")
    assert (got.input, got.source, got.gold, got.split, got.status) == (
        "héllo wörld ✓",
        "inputs.txt",
        "balance",
        "heldout",
        "ok",
    )
    assert (got.label, got.raw, got.latency_ms, got.reason) == ("refund", "Balance.", 12.5, None)
    assert got.relevance == pytest.approx(0.4321)
    assert got.probs is not None and got.embedding is not None
    assert got.probs.dtype == np.float32 and got.embedding.dtype == np.float32
    np.testing.assert_array_equal(got.probs, probs.astype(np.float32))
    np.testing.assert_array_equal(got.embedding, emb)  # float32 is exact
    assert got.embedding.flags.writeable  # a copy, not a view of the row's bytes


def test_arrays_are_stored_as_little_endian_float32(store: PairStore, tmp_path: Path) -> None:
    store.add(FP, [make_pair("a", probs=np.array([1.0, 0.5, -2.0], dtype=">f8"))])
    blob = store.db.execute("SELECT probs FROM pairs").fetchone()[0]
    assert blob == np.array([1.0, 0.5, -2.0], dtype="<f4").tobytes()


def test_missing_arrays_stay_none(store: PairStore) -> None:
    store.add(FP, [make_pair("a", relevance=None)])
    (got,) = store.pairs(FP)
    assert got.probs is None and got.embedding is None and got.relevance is None


# --- queries ----------------------------------------------------------------------------------------------


def _fill(store: PairStore) -> None:
    store.add(
        FP,
        [
            make_pair("t-rel", split="train", relevance=0.9),
            make_pair("t-irr", split="train", relevance=0.1, relevant=False),
            make_pair("h-rel", split="heldout", relevance=0.8),
            make_pair("h-irr", split="heldout", relevance=0.2, relevant=False),
            make_pair("t-rej", split="train", status="rejected", label=None, reason="not a label", relevance=None),
        ],
    )


def test_pairs_filters(store: PairStore) -> None:
    _fill(store)
    assert texts(list(store.pairs(FP))) == {"t-rel", "t-irr", "h-rel", "h-irr"}  # status "ok" by default
    assert texts(list(store.pairs(FP, status=None))) == {"t-rel", "t-irr", "h-rel", "h-irr", "t-rej"}
    assert texts(list(store.pairs(FP, status="rejected"))) == {"t-rej"}
    assert texts(list(store.pairs(FP, split="train"))) == {"t-rel", "t-irr"}
    assert texts(list(store.pairs(FP, split="heldout"))) == {"h-rel", "h-irr"}
    assert texts(list(store.pairs(FP, relevant=True))) == {"t-rel", "h-rel"}
    assert texts(list(store.pairs(FP, relevant=False))) == {"t-irr", "h-irr"}
    assert texts(list(store.pairs(FP, split="train", relevant=True))) == {"t-rel"}
    assert texts(list(store.pairs(FP, split="train", status=None, relevant=True))) == {"t-rel", "t-rej"}
    assert list(store.pairs("nobody", status=None)) == []
    (rejected,) = store.pairs(FP, status="rejected")
    assert rejected.reason == "not a label" and rejected.label is None


def test_pairs_come_in_input_hash_order(store: PairStore) -> None:
    store.add(FP, [make_pair(f"q{i}") for i in range(30)])
    hashes = [p.input_hash for p in store.pairs(FP)]
    assert hashes == sorted(hashes) and len(hashes) == 30


def test_counts(store: PairStore) -> None:
    _fill(store)
    assert store.counts(FP) == {
        "ok/train/relevant": 1,
        "ok/train/irrelevant": 1,
        "ok/heldout/relevant": 1,
        "ok/heldout/irrelevant": 1,
        "rejected/train/relevant": 1,
    }
    assert store.counts("nobody") == {}


def test_mark_relevance(store: PairStore) -> None:
    _fill(store)
    store.mark_relevance(FP, 0.5)
    # a rejected answer is never relevant (it is never trained on), whatever its score
    assert texts(list(store.pairs(FP, status=None, relevant=True))) == {"t-rel", "h-rel"}
    assert texts(list(store.pairs(FP, status="rejected", relevant=False))) == {"t-rej"}
    store.mark_relevance(FP, 0.15)
    assert texts(list(store.pairs(FP, relevant=False))) == {"t-irr"}
    store.mark_relevance(FP, 0.2)  # the threshold itself is relevant
    assert texts(list(store.pairs(FP, relevant=False))) == {"t-irr"}
    store.mark_relevance(FP, 0.95)
    assert texts(list(store.pairs(FP, relevant=True))) == set()


def test_mark_relevance_touches_only_its_teacher(store: PairStore) -> None:
    store.register_teacher("other", LABELS, {})
    store.add(FP, [make_pair("a", relevance=0.3)])
    store.add("other", [make_pair("a", relevance=0.3)])
    store.mark_relevance(FP, 0.5)
    assert next(store.pairs(FP)).relevant is False
    assert next(store.pairs("other")).relevant is True


# --- digest -----------------------------------------------------------------------------------------------


def test_digest_is_stable_and_order_independent(tmp_path: Path) -> None:
    batch = [make_pair(f"q{i}", label=LABELS[i % 3]) for i in range(20)]
    with PairStore(tmp_path / "one.sqlite") as one, PairStore(tmp_path / "two.sqlite") as two:
        one.add(FP, batch)
        two.add(FP, batch[10:])
        two.add(FP, list(reversed(batch[:10])))
        assert one.digest(FP) == two.digest(FP)
        before = one.digest(FP)
        one.add(FP, batch[:5])  # nothing new
        assert one.digest(FP) == before


def test_digest_changes_when_a_pair_is_added(store: PairStore) -> None:
    store.add(FP, [make_pair("a")])
    before = store.digest(FP)
    store.add(FP, [make_pair("b")])
    assert store.digest(FP) != before


def test_digest_changes_when_a_label_differs(tmp_path: Path) -> None:
    with PairStore(tmp_path / "one.sqlite") as one, PairStore(tmp_path / "two.sqlite") as two:
        one.add(FP, [make_pair("a", label="refund"), make_pair("b", label="balance")])
        two.add(FP, [make_pair("a", label="refund"), make_pair("b", label="card_lost")])
        assert one.digest(FP) != two.digest(FP)


def test_digest_changes_when_a_label_is_changed_in_place(store: PairStore) -> None:
    store.add(FP, [make_pair("a", label="refund")])
    before = store.digest(FP)
    with store.db:
        store.db.execute("UPDATE pairs SET label='balance'")
    assert store.digest(FP) != before


def test_digest_changes_when_relevance_marks_change(store: PairStore) -> None:
    store.add(FP, [make_pair("a", relevance=0.3), make_pair("b", relevance=0.9)])
    store.mark_relevance(FP, 0.2)
    before = store.digest(FP)
    store.mark_relevance(FP, 0.25)  # nothing flips
    assert store.digest(FP) == before
    store.mark_relevance(FP, 0.5)  # "a" becomes irrelevant
    after = store.digest(FP)
    assert after != before
    store.mark_relevance(FP, 0.2)
    assert store.digest(FP) == before


def test_digest_changes_with_split_and_status(tmp_path: Path) -> None:
    with (
        PairStore(tmp_path / "a.sqlite") as a,
        PairStore(tmp_path / "b.sqlite") as b,
        PairStore(tmp_path / "c.sqlite") as c,
    ):
        a.add(FP, [make_pair("x", split="train")])
        b.add(FP, [make_pair("x", split="heldout")])
        c.add(FP, [make_pair("x", split="train", status="rejected")])
        assert len({a.digest(FP), b.digest(FP), c.digest(FP)}) == 3


def test_digest_is_per_teacher(store: PairStore) -> None:
    store.register_teacher("other", LABELS, {})
    store.add(FP, [make_pair("a")])
    before = store.digest(FP)
    store.add("other", [make_pair("b")])
    assert store.digest(FP) == before


# --- concurrent writers -----------------------------------------------------------------------------------


def test_two_connections_in_threads_both_land(tmp_path: Path) -> None:
    path = tmp_path / "pairs.sqlite"
    with PairStore(path) as s:
        s.register_teacher(FP, LABELS, {})
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def writer(prefix: str) -> None:
        try:
            with PairStore(path) as s:
                start.wait()
                for b in range(25):
                    s.add(FP, [make_pair(f"{prefix}-{b}-{i}") for i in range(8)])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    with PairStore(path) as s:
        assert len(s.answered(FP)) == 2 * 25 * 8
        assert s.counts(FP).get("ok/train/relevant", 0) + s.counts(FP).get("ok/heldout/relevant", 0) == 400


def _write_batches(path: Path, prefix: str) -> None:
    """One writer process: its own PairStore, 20 batches of 10 pairs, one transaction each."""
    with PairStore(path) as s:
        for b in range(20):
            s.add(FP, [make_pair(f"{prefix}-{b}-{i}") for i in range(10)])


def test_two_processes_writing_concurrently_both_land(tmp_path: Path) -> None:
    path = tmp_path / "pairs.sqlite"
    with PairStore(path) as s:
        s.register_teacher(FP, LABELS, {})
    ctx = multiprocessing.get_context("fork")  # the child has tsd_edge loaded already: fast
    procs = [ctx.Process(target=_write_batches, args=(path, prefix)) for prefix in ("p1", "p2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    with PairStore(path) as s:
        assert len(s.answered(FP)) == 400
        assert {p.input.split("-")[0] for p in s.pairs(FP)} == {"p1", "p2"}
