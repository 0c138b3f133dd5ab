"""The `python` teacher: a user's `module:function` answering batches, through the real collection path."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import tsd
from tsd_edge.collect import collect
from tsd_edge.errors import InputError
from tsd_edge.store import PairStore
from tsd_edge.task import load_task
from tsd_edge.teachers import load_teacher

LABELS = ["refund", "card_lost", "balance"]

MODULE = """
def teach(texts, labels, scale=1.0):
    out = []
    for t in texts:
        kind = t.split()[0]
        if kind == "hard":
            out.append("refund")
        elif kind == "pair":
            out.append(("card_lost", [0.1, 0.8, 0.1]))
        elif kind == "dict":
            out.append({"balance": 0.7 * scale, "refund": 0.3 * scale})
        elif kind == "none":
            out.append(None)
        elif kind == "outside":
            out.append("pizza")
        elif kind == "badprobs":
            out.append(("refund", [0.9, 0.9, 0.9]))
        elif kind == "shortprobs":
            out.append(("refund", [1.0]))
        elif kind == "boom":
            raise ValueError("cannot answer " + t)
        else:
            out.append(42)
    return out


def short(texts):
    return ["refund"]
"""


def write(folder: Path, lines: list[str], function: str = "teach", options: dict | None = None) -> tuple[Path, str]:
    name = f"teach_{uuid.uuid4().hex[:8]}"  # a fresh module per test: imports are cached per process
    (folder / f"{name}.py").write_text(MODULE, encoding="utf-8")
    (folder / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = {
        "name": "py",
        "labels": LABELS,
        "inputs": [{"path": "in.txt"}],
        "relevance": {"method": "teacher"},
        "teacher": {"kind": "python", "function": f"{name}:{function}", "options": options or {}},
    }
    (folder / "task.yaml").write_text(json.dumps(task), encoding="utf-8")
    return folder / "task.yaml", name


def test_every_answer_shape_is_stored_or_rejected_with_its_reason(tmp_path: Path) -> None:
    lines = ["hard 1", "pair 2", "dict 3", "none 4", "outside 5", "badprobs 6", "shortprobs 7", "other 8"]
    task_path, _ = write(tmp_path, lines)
    task = load_task(task_path)
    with PairStore(tmp_path / "w" / "pairs.sqlite") as store:
        res = collect(task, store)
        assert res.asked == 8 and res.rejected == 4
        got = {
            r[0]: r[1:]
            for r in store.db.execute("SELECT input, status, label, reason, relevant, probs IS NOT NULL FROM pairs")
        }
        fp = res.teacher
        pairs = {p.input: p for p in store.pairs(fp, status=None)}
    assert got["hard 1"] == ("ok", "refund", None, 1, 0)
    assert got["pair 2"][:2] == ("ok", "card_lost")
    np.testing.assert_allclose(pairs["pair 2"].probs, [0.1, 0.8, 0.1], rtol=1e-6)
    assert got["dict 3"][:2] == ("ok", "balance")
    np.testing.assert_allclose(pairs["dict 3"].probs, [0.3, 0.0, 0.7], rtol=1e-6)
    assert got["none 4"] == ("ok", None, "teacher answered none of the labels", 0, 0)
    assert got["outside 5"][:3] == ("rejected", None, "answer 'pizza' is not one of the task's labels")
    assert got["badprobs 6"][2] == "probs sums to 2.7000, not 1"
    assert got["shortprobs 7"][2] == "probs has 1 values for 3 labels"
    assert "int is not an answer" in got["other 8"][2]


def test_options_are_passed_and_part_of_the_fingerprint(tmp_path: Path) -> None:
    task_path, _ = write(tmp_path, ["dict 1"], options={"scale": 2.0})
    teacher = load_teacher(load_task(task_path))
    (response,) = teacher.answer(["dict 1"])
    assert response.status == "rejected" and "sums to 2.0000" in (response.reason or "")
    (tmp_path / "b").mkdir()
    other, _ = write(tmp_path / "b", ["dict 1"])  # the same module, no options
    assert load_teacher(load_task(other)).fingerprint != teacher.fingerprint


def test_editing_the_module_changes_the_fingerprint(tmp_path: Path) -> None:
    task_path, name = write(tmp_path, ["hard 1"])
    before = load_teacher(load_task(task_path)).fingerprint
    assert load_teacher(load_task(task_path)).fingerprint == before
    module = tmp_path / f"{name}.py"
    module.write_text(module.read_text() + "\n# a change\n", encoding="utf-8")
    assert load_teacher(load_task(task_path)).fingerprint != before


def test_an_exception_stops_collection_and_keeps_what_was_answered(tmp_path: Path) -> None:
    task_path, _ = write(tmp_path, ["boom 1", "hard 2"])
    with PairStore(tmp_path / "w" / "pairs.sqlite") as store, pytest.raises(InputError, match="raised ValueError"):
        collect(load_task(task_path), store)


def test_a_wrong_number_of_answers_is_an_error(tmp_path: Path) -> None:
    task_path, _ = write(tmp_path, ["hard 1", "hard 2"], function="short")
    with pytest.raises(InputError, match="returned 1 for 2 texts"):
        load_teacher(load_task(task_path)).answer(["hard 1", "hard 2"])


@pytest.mark.parametrize(
    ("function", "message"), [("no_such_module_xyz:teach", "cannot import"), ("{name}:nothing", "no function")]
)
def test_a_function_that_cannot_be_found_is_named(tmp_path: Path, function: str, message: str) -> None:
    task_path, name = write(tmp_path, ["hard 1"])
    task = json.loads(task_path.read_text())
    task["teacher"]["function"] = function.format(name=name)
    task_path.write_text(json.dumps(task))
    with pytest.raises(InputError, match=message):
        load_teacher(load_task(task_path))


def test_collect_through_the_cli(tmp_path: Path) -> None:
    task_path, _ = write(tmp_path, [f"hard {i}" for i in range(10)] + ["pair 1", "outside 1"])
    ran = tsd("collect", task_path, "--workdir", tmp_path / "w")
    assert ran.code == 0, ran.err
    assert "12 asked" in ran.out and "1 rejected" in ran.out
    shown = tsd("pairs", task_path, "--workdir", tmp_path / "w")
    assert "ok 11, rejected 1" in shown.out and "pizza" in shown.out
