"""The `openai` teacher against a real OpenAI-compatible HTTP server on 127.0.0.1 (tests/openai_server.py)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from openai_server import FakeOpenAI, label_for
from tsd_edge.collect import collect
from tsd_edge.errors import InputError
from tsd_edge.store import PairStore
from tsd_edge.task import load_task
from tsd_edge.teachers.labels import LabelParser

pytestmark = pytest.mark.network

LABELS = ["billing", "delivery", "account", "technical"]
KEY = "sk-test-0f3c9a1b7e2d4c6a8b"


def texts(n: int) -> list[str]:
    return [f"customer question number {i}" for i in range(n)]


def write_task(folder: Path, url: str, n: int = 40, **teacher: object) -> Path:
    (folder / "in.txt").write_text("\n".join(texts(n)) + "\n", encoding="utf-8")
    settings = {
        "kind": "openai",
        "base_url": url,
        "model": "test-model",
        "concurrency": 4,
        "timeout": 0.5,
        "backoff": 0.01,
        "max_retries": 3,
        **teacher,
    }
    task = {
        "name": "oa",
        "labels": [{"name": "billing", "description": "invoices and charges"}, "delivery", "account", "technical"],
        "inputs": [{"path": "in.txt"}],
        "relevance": {"method": "teacher"},
        "teacher": settings,
    }
    path = folder / "task.yaml"
    path.write_text(json.dumps(task), encoding="utf-8")  # JSON is YAML
    return path


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(LABELS) as srv:
        srv.retry_after = 0
        yield srv


def rows(store: PairStore) -> dict[str, tuple]:
    q = "SELECT input, status, label, reason, raw, attempts, tokens_in, tokens_out, latency_ms FROM pairs"
    return {r[0]: r[1:] for r in store.db.execute(q)}


def test_every_fault_is_retried_or_rejected_and_nothing_is_lost_or_duplicated(
    tmp_path: Path, server: FakeOpenAI
) -> None:
    t = texts(40)
    server.plan = {
        t[1]: ["429", "ok"],
        t[2]: ["503", "500", "ok"],
        t[3]: ["slow", "ok"],
        t[4]: ["malformed", "ok"],
        t[5]: ["drop", "ok"],
        t[6]: ["outside"],
        t[7]: ["400"],
        t[8]: ["none"],
        t[9]: ["500"] * 4,  # more than max_retries: failed, not stored, asked again next run
    }
    task = load_task(write_task(tmp_path, server.url))
    with PairStore(tmp_path / "w" / "pairs.sqlite") as store:
        res = collect(task, store)
        got = rows(store)
        assert res.asked == 39 and res.failed == 1 and res.rejected == 2
        assert "HTTP 500" in res.failures[0] and "4 attempts" in res.failures[0]
        assert t[9] not in got
        for i in (1, 3, 4, 5):
            assert got[t[i]][:2] == ("ok", label_for(t[i], LABELS)) and got[t[i]][4] == 2, (i, got[t[i]])
        assert got[t[2]][4] == 3
        assert got[t[6]][:3] == ("rejected", None, "answer 'banana' is not one of the task's labels")
        assert got[t[6]][3] == '{"label": "banana"}'
        assert got[t[7]][0] == "rejected" and got[t[7]][2].startswith("HTTP 400: injected 400")
        assert got[t[8]][:3] == ("ok", None, "teacher answered none of the labels")
        # "none of these" is kept but never trained on
        assert store.db.execute("SELECT relevant FROM pairs WHERE input=?", (t[8],)).fetchone() == (0,)
        assert all(r[5] and r[6] and r[7] is not None for r in got.values() if r[0] == "ok")
        # the next run asks only for the one that failed
        again = collect(task, store)
        assert (again.asked, again.already, again.failed) == (1, 39, 0)
        assert store.db.execute("SELECT COUNT(*), COUNT(DISTINCT input_hash) FROM pairs").fetchone() == (40, 40)
    # the server answered each input once, plus one request per injected fault: nothing asked twice
    for text in t:
        assert server.outcomes[text].count("ok") <= 1
    assert server.attempts[t[9]] == 5
    assert sum(server.attempts.values()) == 40 + 1 + 2 + 1 + 1 + 1 + 4


def test_concurrency_limit_is_respected_and_used(tmp_path: Path, server: FakeOpenAI) -> None:
    server.latency = 0.05
    task = load_task(write_task(tmp_path, server.url, n=48, concurrency=3))
    with PairStore(tmp_path / "w" / "pairs.sqlite") as store:
        res = collect(task, store)
    assert res.asked == 48
    assert server.max_in_flight == 3  # never more than the limit, and the limit is used


def test_retry_after_is_honoured(tmp_path: Path, server: FakeOpenAI) -> None:
    server.retry_after = 1
    t = texts(4)
    server.plan = {t[0]: ["429", "ok"]}
    task = load_task(write_task(tmp_path, server.url, n=4, backoff=0.0))
    with PairStore(tmp_path / "w" / "pairs.sqlite") as store:
        assert collect(task, store).asked == 4
    first, second = server.times[t[0]]
    assert second - first >= 0.95


def test_soft_labels_from_logprobs(tmp_path: Path, server: FakeOpenAI) -> None:
    task = load_task(write_task(tmp_path, server.url, n=12))
    with PairStore(tmp_path / "w" / "pairs.sqlite") as store:
        collect(task, store)
        pairs = list(store.pairs(store.db.execute("SELECT teacher FROM pairs").fetchone()[0]))
    assert len(pairs) == 12
    for p in pairs:
        assert p.probs is not None and p.probs.shape == (4,)
        assert abs(float(p.probs.sum()) - 1) < 1e-5
        # the server puts 0.8 on its answer and 0.2 on a label with another first letter
        assert LABELS[int(np.argmax(p.probs))] == p.label and abs(float(p.probs.max()) - 0.8) < 1e-5


@pytest.mark.parametrize(
    ("constrain", "key", "value"),
    [
        ("json_schema", "response_format", "json_schema"),
        ("choice", "structured_outputs", None),
        ("guided_choice", "guided_choice", None),
        ("prompt", None, None),
    ],
)
def test_each_constraint_mode_asks_for_it_and_parses_the_answer(
    tmp_path: Path, server: FakeOpenAI, constrain: str, key: str | None, value: str | None
) -> None:
    task = load_task(write_task(tmp_path, server.url, n=6, constrain=constrain))
    with PairStore(tmp_path / "w" / "pairs.sqlite") as store:
        assert collect(task, store).asked == 6
        assert {r[0] for r in rows(store).values()} == {"ok"}
    body = server.bodies[0]
    if key == "response_format":
        assert body[key]["type"] == value and body[key]["json_schema"]["schema"]["properties"]["label"]["enum"] == [
            *LABELS,
            "none",
        ]
    elif key == "structured_outputs":
        assert body[key] == {"choice": [*LABELS, "none"]}
    elif key == "guided_choice":
        assert body[key] == [*LABELS, "none"]
    else:
        assert not {"response_format", "structured_outputs", "guided_choice"} & set(body)
    assert body["model"] == "test-model" and body["temperature"] == 0
    assert "- billing: invoices and charges" in body["messages"][-1]["content"]


def test_a_refused_key_or_wrong_url_stops_collection_with_one_clear_line(tmp_path: Path, server: FakeOpenAI) -> None:
    server.plan = {text: ["401"] for text in texts(40)}
    task = load_task(write_task(tmp_path, server.url))
    with PairStore(tmp_path / "w" / "pairs.sqlite") as store, pytest.raises(InputError, match="HTTP 401") as err:
        collect(task, store)
    assert "check teacher.base_url" in str(err.value) and "\n" not in str(err.value)
    assert sum(server.attempts.values()) <= 4  # one per worker, no retries: every call would fail alike
    task = load_task(write_task(tmp_path, server.url.replace("/v1", "/v2")))
    with PairStore(tmp_path / "w" / "pairs.sqlite") as store, pytest.raises(InputError, match="HTTP 404"):
        collect(task, store)


def test_the_budget_stops_collection_and_the_next_run_continues(tmp_path: Path, server: FakeOpenAI) -> None:
    t = texts(40)
    server.plan = {t[0]: ["500", "ok"]}
    task = load_task(write_task(tmp_path, server.url, max_calls=10, concurrency=2))
    with PairStore(tmp_path / "w" / "pairs.sqlite") as store:
        res = collect(task, store)
        assert res.stopped and "budget of 10 calls" in res.stopped
        assert res.asked == 9 and res.failed == 0  # 10 calls: one retry, nine answers
        assert sum(server.attempts.values()) == 10
        again = collect(task, store)
        assert again.asked == 10 and again.already == 9


def test_a_misconfigured_teacher_fails_the_smoke_test_in_seconds(tmp_path: Path, server: FakeOpenAI) -> None:
    server.plan = {text: ["outside"] for text in texts(200)}
    task = load_task(write_task(tmp_path, server.url, n=200))
    with PairStore(tmp_path / "w" / "pairs.sqlite") as store, pytest.raises(InputError, match="smoke test: 16 of"):
        collect(task, store)
    assert sum(server.attempts.values()) == 16


def test_a_missing_key_variable_is_named(tmp_path: Path, server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TSD_NO_SUCH_KEY", raising=False)
    task = load_task(write_task(tmp_path, server.url, api_key_env="TSD_NO_SUCH_KEY"))
    with PairStore(tmp_path / "w" / "pairs.sqlite") as store, pytest.raises(InputError, match=r"\$TSD_NO_SUCH_KEY"):
        collect(task, store)


def test_the_fingerprint_ignores_url_key_and_throughput_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tsd_edge.teachers import load_teacher

    monkeypatch.setenv("TSD_TEST_KEY", KEY)
    a = load_teacher(load_task(write_task(tmp_path, "http://127.0.0.1:1/v1", api_key_env="TSD_TEST_KEY")))
    b = load_teacher(load_task(write_task(tmp_path, "http://127.0.0.1:2/v1", concurrency=64, timeout=5)))
    c = load_teacher(load_task(write_task(tmp_path, "http://127.0.0.1:1/v1", model="other")))
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert KEY not in json.dumps(a.spec) and "127.0.0.1" not in json.dumps(a.spec)


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("billing", "billing"),
        ("  Billing.\n", "billing"),
        ('"DELIVERY"', "delivery"),
        ("Invoices and charges", "billing"),
        ("none", None),
    ],
)
def test_parsing_forgives_case_whitespace_and_descriptions(raw: str, label: str | None) -> None:
    parsed = LabelParser(LABELS, {"billing": "invoices and charges"}, allow_none=True).parse(raw)
    assert parsed.reason is None and parsed.label == label


@pytest.mark.parametrize("raw", ["I think billing", "billing, delivery", "", "bill", "none"])
def test_parsing_rejects_anything_else(raw: str) -> None:
    parsed = LabelParser(LABELS, allow_none=False).parse(raw)
    assert parsed.label is None and parsed.reason


def test_json_answers_are_parsed_strictly() -> None:
    parser = LabelParser(LABELS)
    assert parser.parse('{"label": "account"}', "label").label == "account"
    assert "JSON" in (parser.parse("account", "label").reason or "")
    assert "no string 'label'" in (parser.parse('{"answer": "account"}', "label").reason or "")


def test_the_key_is_in_no_file_and_no_output(tmp_path: Path, server: FakeOpenAI) -> None:
    from conftest import tsd

    os.environ["TSD_TEST_KEY"] = KEY
    try:
        t = texts(30)
        server.plan = {t[3]: ["500", "ok"], t[4]: ["outside"], t[5]: ["400"]}
        task = write_task(tmp_path, server.url, n=30, api_key_env="TSD_TEST_KEY")
        work = tmp_path / "w"
        outputs = [tsd("collect", task, "--workdir", work), tsd("pairs", task, "--workdir", work)]
        outputs.append(tsd("pairs", "export", task, tmp_path / "w" / "out.jsonl", "--workdir", work))
        outputs.append(tsd("--debug", "collect", task, "--workdir", work))
    finally:
        del os.environ["TSD_TEST_KEY"]
    assert outputs[0].code == 0, outputs[0].err
    assert all(h.get("Authorization") == f"Bearer {KEY}" for h in server.headers_seen)  # it was used
    for ran in outputs:
        assert KEY not in ran.out and KEY not in ran.err
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "pairs.sqlite" for p in files)
    for p in files:
        assert KEY.encode() not in p.read_bytes(), p
    db = sqlite3.connect(work / "pairs.sqlite")
    assert db.execute("SELECT COUNT(*) FROM pairs").fetchone() == (30,)
