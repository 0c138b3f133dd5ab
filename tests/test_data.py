"""Reading task inputs (txt, jsonl, csv), the input key and the held-out split."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from tsd_edge.data import TaskInput, heldout, input_key, read_examples, read_inputs, read_source
from tsd_edge.errors import InputError
from tsd_edge.task import ExamplesSpec, Task, load_task

LABELS = ["refund", "card_lost", "balance"]


def make_task(folder: Path, inputs_yaml: str, labels: list[str] | None = None) -> Task:
    """A task in `folder` whose `inputs:` section is `inputs_yaml` (already indented as list items)."""
    text = f"name: demo\nlabels: {json.dumps(labels or LABELS)}\ninputs:\n{inputs_yaml}"
    path = folder / "task.yaml"
    path.write_text(text, encoding="utf-8")
    return load_task(path)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(folder: Path, name: str, rows: list[dict[str, object]]) -> Path:
    return write(folder, name, "".join(json.dumps(r) + "\n" for r in rows))


def input_error(task: Task) -> str:
    with pytest.raises(InputError) as info:
        read_inputs(task)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- input_key and heldout --------------------------------------------------------------------------------


def test_input_key_is_the_sha256_of_the_utf8_text() -> None:
    assert input_key("héllo") == hashlib.sha256("héllo".encode()).hexdigest()
    assert input_key("a") != input_key("a ")
    assert TaskInput(text="héllo", source="x").key == input_key("héllo")


def test_heldout_boundaries() -> None:
    assert heldout("0" * 64, 0.01) is True
    assert heldout("f" * 64, 0.99) is False
    assert heldout("8" + "0" * 63, 0.5) is False  # exactly one half is not under one half
    assert heldout("7fffffff" + "0" * 56, 0.5) is True


@pytest.mark.parametrize("share", [0.05, 0.2, 0.5])
def test_heldout_share_is_about_right_on_10k_keys(share: float) -> None:
    keys = [input_key(f"input number {i}") for i in range(10_000)]
    fraction = sum(heldout(k, share) for k in keys) / len(keys)
    assert fraction == pytest.approx(share, abs=0.02)


def test_heldout_is_stable_when_the_pool_grows() -> None:
    small = [input_key(f"q{i}") for i in range(2_000)]
    grown = small + [input_key(f"new q{i}") for i in range(3_000)]
    before = {k: heldout(k, 0.2) for k in small}
    after = {k: heldout(k, 0.2) for k in grown}
    assert all(after[k] == v for k, v in before.items())
    # and repeated calls agree
    assert [heldout(k, 0.2) for k in small] == [heldout(k, 0.2) for k in small]


def test_heldout_is_nested_in_share() -> None:
    keys = [input_key(f"x{i}") for i in range(2_000)]
    assert all(heldout(k, 0.3) for k in keys if heldout(k, 0.1))
    assert not any(heldout(k, 0.0) for k in keys)
    assert all(heldout(k, 1.0) for k in keys)


# --- formats ----------------------------------------------------------------------------------------------


def test_txt_one_input_per_line_blank_and_whitespace_dropped(tmp_path: Path) -> None:
    write(tmp_path, "in.txt", "first one\n\n  second  \r\n   \nthird")
    task = make_task(tmp_path, "  - path: in.txt\n")
    items = read_inputs(task)
    assert [i.text for i in items] == ["first one", "second", "third"]
    assert {i.source for i in items} == {"in.txt"}
    assert all(i.gold is None for i in items)


def test_jsonl_with_text_and_gold_label(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path,
        "in.jsonl",
        [
            {"q": "where is my refund", "intent": "refund"},
            {"q": "lost my card"},
            {"q": "balance?", "intent": None},
        ],
    )
    task = make_task(tmp_path, "  - path: in.jsonl\n    text_field: q\n    label_field: intent\n")
    items = read_inputs(task)
    assert [(i.text, i.gold) for i in items] == [
        ("where is my refund", "refund"),
        ("lost my card", None),
        ("balance?", None),
    ]


def test_jsonl_skips_blank_lines(tmp_path: Path) -> None:
    write(tmp_path, "in.jsonl", '{"text": "a"}\n\n   \n{"text": "b"}\n')
    task = make_task(tmp_path, "  - path: in.jsonl\n")
    assert [i.text for i in read_inputs(task)] == ["a", "b"]


def test_csv_with_quoted_fields_and_gold(tmp_path: Path) -> None:
    write(
        tmp_path,
        "in.csv",
        'text,label\n"hello, I need a refund",refund\n"multi\nline",\nplain,balance\n',
    )
    task = make_task(tmp_path, "  - path: in.csv\n    label_field: label\n")
    items = read_inputs(task)
    assert [(i.text, i.gold) for i in items] == [
        ("hello, I need a refund", "refund"),
        ("multi\nline", None),
        ("plain", "balance"),
    ]


def test_explicit_format_overrides_the_suffix(tmp_path: Path) -> None:
    write(tmp_path, "data.dat", '{"text": "from jsonl"}\n')
    task = make_task(tmp_path, "  - path: data.dat\n    format: jsonl\n")
    assert [i.text for i in read_inputs(task)] == ["from jsonl"]


def test_unknown_suffix_reads_as_txt(tmp_path: Path) -> None:
    write(tmp_path, "data.dat", '{"text": "kept verbatim"}\n')
    task = make_task(tmp_path, "  - path: data.dat\n")
    assert [i.text for i in read_inputs(task)] == ['{"text": "kept verbatim"}']


def test_limit_caps_each_source(tmp_path: Path) -> None:
    write(tmp_path, "a.txt", "".join(f"a{i}\n" for i in range(10)))
    write(tmp_path, "b.txt", "".join(f"b{i}\n" for i in range(10)))
    task = make_task(tmp_path, "  - path: a.txt\n    limit: 3\n  - path: b.txt\n    limit: 2\n")
    assert [i.text for i in read_inputs(task)] == ["a0", "a1", "a2", "b0", "b1"]


# --- dedup ------------------------------------------------------------------------------------------------


def test_repeated_inputs_are_kept_once_first_occurrence_wins(tmp_path: Path) -> None:
    write(tmp_path, "a.txt", "one\ntwo\none\n  two  \nthree\n")
    write_jsonl(tmp_path, "b.jsonl", [{"text": "three", "label": "refund"}, {"text": "four"}])
    task = make_task(tmp_path, "  - path: a.txt\n  - path: b.jsonl\n    label_field: label\n")
    items = read_inputs(task)
    assert [i.text for i in items] == ["one", "two", "three", "four"]
    three = items[2]
    assert three.source == "a.txt"
    assert three.gold is None
    assert len({i.key for i in items}) == len(items)


# --- errors -----------------------------------------------------------------------------------------------


def test_unknown_gold_label_names_file_and_line_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path, "in.jsonl", [{"text": "a", "label": "refund"}, {"text": "b", "label": "refnud"}])
    task = make_task(tmp_path, "  - path: in.jsonl\n    label_field: label\n")
    message = input_error(task)
    assert message.startswith(f"{path.resolve()}:2: ")
    assert "unknown label 'refnud'" in message


def test_unknown_gold_label_names_file_and_line_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "in.csv", "text,label\na,refund\nb,balance\nc,nope\n")
    task = make_task(tmp_path, "  - path: in.csv\n    label_field: label\n")
    message = input_error(task)
    assert message.startswith(f"{path.resolve()}:4: ")  # header is line 1
    assert "'nope'" in message


def test_missing_text_column_in_csv(tmp_path: Path) -> None:
    write(tmp_path, "in.csv", "query,label\na,refund\n")
    task = make_task(tmp_path, "  - path: in.csv\n")
    message = input_error(task)
    assert "in.csv" in message
    assert "no column 'text'" in message
    assert "query, label" in message


def test_missing_label_column_in_csv(tmp_path: Path) -> None:
    write(tmp_path, "in.csv", "text\na\n")
    task = make_task(tmp_path, "  - path: in.csv\n    label_field: intent\n")
    assert "no column 'intent'" in input_error(task)


def test_empty_csv_has_no_columns(tmp_path: Path) -> None:
    write(tmp_path, "in.csv", "")
    task = make_task(tmp_path, "  - path: in.csv\n")
    assert "no column 'text'" in input_error(task)


def test_jsonl_missing_text_field_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "in.jsonl", '{"text": "a"}\n{"query": "b"}\n')
    task = make_task(tmp_path, "  - path: in.jsonl\n")
    message = input_error(task)
    assert message.startswith(f"{path.resolve()}:2: ")
    assert "'text'" in message


@pytest.mark.parametrize("line", ['{"text": "a"', '["text", "a"]', '"just a string"'])
def test_jsonl_bad_line_names_line(tmp_path: Path, line: str) -> None:
    path = write(tmp_path, "in.jsonl", '{"text": "ok"}\n\n' + line + "\n")
    task = make_task(tmp_path, "  - path: in.jsonl\n")
    assert input_error(task).startswith(f"{path.resolve()}:3: ")


def test_missing_input_file(tmp_path: Path) -> None:
    task = make_task(tmp_path, "  - path: nowhere.txt\n")
    message = input_error(task)
    assert "not found" in message
    assert "nowhere.txt" in message


def test_missing_second_input_file(tmp_path: Path) -> None:
    write(tmp_path, "a.txt", "one\n")
    task = make_task(tmp_path, "  - path: a.txt\n  - path: b.txt\n")
    assert "b.txt" in input_error(task)


def test_read_source_reads_one_file(tmp_path: Path) -> None:
    write(tmp_path, "a.txt", "x\ny\nx\n")
    task = make_task(tmp_path, "  - path: a.txt\n")
    # one source is read as it is; dedup is read_inputs' job
    assert [i.text for i in read_source(task.inputs[0], task)] == ["x", "y", "x"]


def test_jsonl_numeric_gold_label_zero_is_kept(tmp_path: Path) -> None:
    write_jsonl(tmp_path, "in.jsonl", [{"text": "bad", "label": 0}, {"text": "good", "label": 1}])
    task = make_task(tmp_path, "  - path: in.jsonl\n    label_field: label\n", labels=["0", "1"])
    assert [i.gold for i in read_inputs(task)] == ["0", "1"]


# --- examples ---------------------------------------------------------------------------------------------


def test_read_examples_takes_the_first_per_label(tmp_path: Path) -> None:
    write(tmp_path, "in.txt", "x\n")
    rows = [{"text": f"refund {i}", "label": "refund"} for i in range(4)]
    rows += [
        {"text": "lost it", "label": "card_lost"},
        {"text": "no label"},
        {"text": "how much", "label": "balance"},
    ]
    write_jsonl(tmp_path, "examples.jsonl", rows)
    task = make_task(tmp_path, "  - path: in.txt\n")
    got = read_examples(ExamplesSpec(path=Path("examples.jsonl"), per_label=2), task)
    assert got == {"refund": ["refund 0", "refund 1"], "card_lost": ["lost it"], "balance": ["how much"]}


def test_read_examples_from_csv_with_other_fields(tmp_path: Path) -> None:
    write(tmp_path, "in.txt", "x\n")
    write(tmp_path, "ex.csv", "q,y\nr,refund\nc,card_lost\nb,balance\n")
    task = make_task(tmp_path, "  - path: in.txt\n")
    got = read_examples(ExamplesSpec(path=Path("ex.csv"), text_field="q", label_field="y"), task)
    assert got == {"refund": ["r"], "card_lost": ["c"], "balance": ["b"]}


def test_read_examples_needs_every_label(tmp_path: Path) -> None:
    write(tmp_path, "in.txt", "x\n")
    write_jsonl(tmp_path, "examples.jsonl", [{"text": "r", "label": "refund"}])
    task = make_task(tmp_path, "  - path: in.txt\n")
    with pytest.raises(InputError) as info:
        read_examples(ExamplesSpec(path=Path("examples.jsonl")), task)
    assert "no examples for label(s) card_lost, balance" in str(info.value)


def test_read_examples_unknown_label_names_line(tmp_path: Path) -> None:
    write(tmp_path, "in.txt", "x\n")
    write_jsonl(tmp_path, "examples.jsonl", [{"text": "r", "label": "refund"}, {"text": "?", "label": "other"}])
    task = make_task(tmp_path, "  - path: in.txt\n")
    with pytest.raises(InputError, match=r"examples\.jsonl:2: unknown label 'other'"):
        read_examples(ExamplesSpec(path=Path("examples.jsonl")), task)


def test_read_examples_missing_file(tmp_path: Path) -> None:
    write(tmp_path, "in.txt", "x\n")
    task = make_task(tmp_path, "  - path: in.txt\n")
    with pytest.raises(InputError, match="not found"):
        read_examples(ExamplesSpec(path=Path("examples.jsonl")), task)
