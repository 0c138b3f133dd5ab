"""The task file: `load_task` validates with pydantic; an error is one line `file:line: field: problem`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from tsd_edge.errors import InputError
from tsd_edge.task import LabelSpec, Task, load_task

MINIMAL = """\
name: demo
labels: [refund, card_lost]
inputs:
  - path: inputs.txt
"""


def write_task(folder: Path, text: str, name: str = "task.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    with pytest.raises(InputError) as info:
        load_task(path)
    message = str(info.value)
    assert "\n" not in message, "an InputError is one line"
    return message


# --- what a good task file gives -------------------------------------------------------------------------


def test_minimal_task_gets_defaults_and_resolves_paths(tmp_path: Path) -> None:
    path = write_task(tmp_path, MINIMAL)
    task = load_task(path)
    assert isinstance(task, Task)
    assert task.name == "demo"
    assert task.kind == "classify"
    assert task.label_names == ["refund", "card_lost"]
    assert [s.description for s in task.label_specs] == [None, None]
    assert task.source == path
    assert task.targets == ["cpu-x86"]
    assert task.agreement.threshold == pytest.approx(0.85)
    assert task.split.heldout == pytest.approx(0.2)
    # relative paths resolve against the task file's folder, absolute ones are kept
    assert task.path(task.inputs[0].path) == tmp_path.resolve() / "inputs.txt"
    assert task.path(Path("/abs/file.txt")) == Path("/abs/file.txt")
    assert task.inputs[0].resolved_format == "txt"


def test_task_loads_from_another_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "project"
    sub.mkdir()
    write_task(sub, MINIMAL)
    monkeypatch.chdir(tmp_path)
    task = load_task("project/task.yaml")
    assert task.path(task.inputs[0].path) == sub.resolve() / "inputs.txt"


def test_labels_with_descriptions_inline(tmp_path: Path) -> None:
    path = write_task(
        tmp_path,
        """\
        name: demo
        labels:
          - refund
          - name: card_lost
            description: the customer lost a card
        inputs:
          - path: inputs.csv
            label_field: intent
        """,
    )
    task = load_task(path)
    assert task.label_names == ["refund", "card_lost"]
    assert task.label_specs[1] == LabelSpec(name="card_lost", description="the customer lost a card")
    assert task.inputs[0].resolved_format == "csv"
    assert task.inputs[0].label_field == "intent"


def test_labels_from_a_json_list(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text(
        json.dumps(["a", {"name": "b", "description": "the b one"}, "c"]), encoding="utf-8"
    )
    path = write_task(tmp_path, "name: demo\nlabels: labels.json\ninputs:\n  - path: in.txt\n")
    task = load_task(path)
    assert task.label_names == ["a", "b", "c"]
    assert task.label_specs[1].description == "the b one"


def test_labels_from_a_txt_file_skip_blank_lines(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("alpha\n\n  beta  \ngamma\n\n", encoding="utf-8")
    path = write_task(tmp_path, "name: demo\nlabels: labels.txt\ninputs:\n  - path: in.txt\n")
    assert load_task(path).label_names == ["alpha", "beta", "gamma"]


def test_settings_are_plain_json(tmp_path: Path) -> None:
    task = load_task(write_task(tmp_path, MINIMAL))
    settings = task.settings("agreement", "split")
    assert set(settings) == {"agreement", "split"}
    assert settings["split"] == {"heldout": 0.2}
    json.dumps(settings)  # serialisable


# --- errors name the file, the line and the field ---------------------------------------------------------


def test_out_of_range_value_names_file_line_and_field(tmp_path: Path) -> None:
    text = "".join(
        [
            "name: demo\n",  # 1
            "labels: [a, b]\n",  # 2
            "inputs:\n",  # 3
            "  - path: in.txt\n",  # 4
            "teacher:\n",  # 5
            "  kind: embedding\n",  # 6
            "student:\n",  # 7
            "  layers: 2\n",  # 8
            "training:\n",  # 9
            "  epochs: 3\n",  # 10
            "agreement:\n",  # 11
            "  threshold: 1.5\n",  # 12
        ]
    )
    message = load_error(write_task(tmp_path, text))
    assert message.startswith(f"{tmp_path / 'task.yaml'}:12: agreement.threshold: ")
    assert "less than or equal to 1" in message


def test_unknown_field_is_an_error_at_its_line(tmp_path: Path) -> None:
    message = load_error(write_task(tmp_path, MINIMAL + "student:\n  layerz: 3\n"))
    assert "task.yaml:6: student.layerz: unknown field" in message


def test_misspelt_top_level_key_is_an_error(tmp_path: Path) -> None:
    message = load_error(write_task(tmp_path, MINIMAL + "agrement: 0.9\n"))
    assert "task.yaml:5: agrement: unknown field" in message


def test_unknown_section_is_reported_at_its_key_line(tmp_path: Path) -> None:
    message = load_error(write_task(tmp_path, MINIMAL + "agrement:\n  threshold: 0.9\n"))
    assert "task.yaml:5: agrement: unknown field" in message


def test_all_errors_reported_together_on_one_line(tmp_path: Path) -> None:
    text = MINIMAL + "training:\n  epochs: 0\nagreement:\n  min_n: 0\n"
    message = load_error(write_task(tmp_path, text))
    assert "task.yaml:6: training.epochs:" in message
    assert "task.yaml:8: agreement.min_n:" in message
    assert message.count("; ") >= 1


def test_error_inside_a_list_item_names_index_and_line(tmp_path: Path) -> None:
    text = MINIMAL + "  - path: more.txt\n    limit: 0\n"
    message = load_error(write_task(tmp_path, text))
    assert "task.yaml:6: inputs.1.limit: " in message


def test_missing_required_field(tmp_path: Path) -> None:
    message = load_error(write_task(tmp_path, "labels: [a, b]\ninputs:\n  - path: in.txt\n"))
    assert "task.yaml" in message
    assert "name: required field is missing" in message


def test_empty_inputs_list_is_refused(tmp_path: Path) -> None:
    message = load_error(write_task(tmp_path, "name: demo\nlabels: [a, b]\ninputs: []\n"))
    assert "task.yaml:3: inputs:" in message


def test_bad_input_format_is_refused(tmp_path: Path) -> None:
    message = load_error(write_task(tmp_path, MINIMAL + "    format: parquetz\n"))
    assert "task.yaml:5: inputs.0.format:" in message


@pytest.mark.parametrize("name", ["bad name", "../escape", "-leading-dash", "a/b", ".hidden", ""])
def test_bad_task_name_is_refused(tmp_path: Path, name: str) -> None:
    text = f"name: {json.dumps(name)}\nlabels: [a, b]\ninputs:\n  - path: in.txt\n"
    message = load_error(write_task(tmp_path, text))
    assert "task.yaml:1: name:" in message


@pytest.mark.parametrize("name", ["demo", "Banking77", "a.b_c-d", "7"])
def test_good_task_names_are_accepted(tmp_path: Path, name: str) -> None:
    text = f"name: {json.dumps(name)}\nlabels: [a, b]\ninputs:\n  - path: in.txt\n"
    assert load_task(write_task(tmp_path, text)).name == name


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write_task(tmp_path, "name: demo\nlabels: [a, b\ninputs:\n  - path: in.txt\n")
    message = load_error(path)
    assert message.startswith(f"{path}:")
    assert "not valid YAML" in message
    line = int(message.split(":", 2)[1])
    assert 2 <= line <= 4


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "", "42\n"])
def test_task_file_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = write_task(tmp_path, text)
    message = load_error(path)
    assert str(path) in message
    assert "mapping" in message


def test_missing_task_file(tmp_path: Path) -> None:
    message = load_error(tmp_path / "nope.yaml")
    assert "not found" in message
    assert "nope.yaml" in message


def test_a_folder_is_not_a_task_file(tmp_path: Path) -> None:
    assert "not found" in load_error(tmp_path)


# --- labels -----------------------------------------------------------------------------------------------


def test_duplicated_labels_are_refused(tmp_path: Path) -> None:
    text = "name: demo\nlabels: [a, b, a, c, c]\ninputs:\n  - path: in.txt\n"
    message = load_error(write_task(tmp_path, text))
    assert "task.yaml" in message
    assert "duplicated label(s) a, c" in message


def test_duplicated_labels_across_forms_are_refused(tmp_path: Path) -> None:
    text = "name: demo\nlabels:\n  - a\n  - name: a\n    description: again\ninputs:\n  - path: in.txt\n"
    assert "duplicated" in load_error(write_task(tmp_path, text))


@pytest.mark.parametrize("labels", ["[only]", "[]"])
def test_fewer_than_two_labels_are_refused(tmp_path: Path, labels: str) -> None:
    message = load_error(write_task(tmp_path, f"name: demo\nlabels: {labels}\ninputs:\n  - path: in.txt\n"))
    assert "at least 2 labels" in message


def test_fewer_than_two_labels_in_a_file(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("only\n\n", encoding="utf-8")
    message = load_error(write_task(tmp_path, "name: demo\nlabels: labels.txt\ninputs:\n  - path: in.txt\n"))
    assert "found 1" in message


def test_duplicated_labels_in_a_file(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text('["a", "b", "a"]', encoding="utf-8")
    message = load_error(write_task(tmp_path, "name: demo\nlabels: labels.json\ninputs:\n  - path: in.txt\n"))
    assert "duplicated label(s) a" in message


def test_missing_labels_file(tmp_path: Path) -> None:
    text = "name: demo\nlabels: nowhere.json\ninputs:\n  - path: in.txt\n"
    message = load_error(write_task(tmp_path, text))
    assert "task.yaml" in message
    assert "labels: file not found" in message
    assert "nowhere.json" in message


def test_labels_file_with_bad_json(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text('["a", "b",\n', encoding="utf-8")
    message = load_error(write_task(tmp_path, "name: demo\nlabels: labels.json\ninputs:\n  - path: in.txt\n"))
    assert "labels.json" in message
    assert "not valid JSON" in message


def test_labels_file_entry_that_is_not_a_name(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text('["a", 1, "b"]', encoding="utf-8")
    message = load_error(write_task(tmp_path, "name: demo\nlabels: labels.json\ninputs:\n  - path: in.txt\n"))
    assert "entry 1 is not a label name" in message


def test_empty_label_name_inline_is_refused(tmp_path: Path) -> None:
    text = "name: demo\nlabels:\n  - a\n  - name: ''\ninputs:\n  - path: in.txt\n"
    message = load_error(write_task(tmp_path, text))
    assert "task.yaml:4: labels.1" in message


def test_labels_json_that_is_a_number_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text("5", encoding="utf-8")
    load_error(write_task(tmp_path, "name: demo\nlabels: labels.json\ninputs:\n  - path: in.txt\n"))


@pytest.mark.parametrize("content", ['{"x": 1, "y": 2}', '"abc"'])
def test_labels_json_that_is_not_a_list_is_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / "labels.json").write_text(content, encoding="utf-8")
    load_error(write_task(tmp_path, "name: demo\nlabels: labels.json\ninputs:\n  - path: in.txt\n"))


def test_labels_json_with_bad_description_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text('[{"name": "a", "description": 3}, "b"]', encoding="utf-8")
    load_error(write_task(tmp_path, "name: demo\nlabels: labels.json\ninputs:\n  - path: in.txt\n"))


# -- kind: embed ------------------------------------------------------------------------------------


def test_an_embed_task_needs_no_labels_and_gates_neighbour_recall_by_default(tmp_path: Path) -> None:
    task = load_task(write_task(tmp_path, "name: search\nkind: embed\ninputs: [{path: in.txt}]\n"))
    assert task.kind == "embed" and task.label_names == []
    assert task.metric == "recall_asymmetric" and task.agreement.k == 10


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ("labels: [a, b]\n", "an embed task has no labels"),
        ("deploy: {answered_agreement: 0.9}\n", "needs kind: classify"),
        ("agreement: {metric: label}\n", "agreement.metric for kind embed"),
        ("teacher: {kind: hf, model: m, pipeline: text-classification}\n", "does not answer kind: embed tasks"),
    ],
)
def test_what_an_embed_task_cannot_have_is_named(tmp_path: Path, extra: str, says: str) -> None:
    path = write_task(tmp_path, "name: search\nkind: embed\ninputs: [{path: in.txt}]\n" + extra)
    assert says in load_error(path)


def test_a_classify_task_still_needs_labels_and_an_hf_teacher_defaults_by_kind(tmp_path: Path) -> None:
    assert "needs `labels:`" in load_error(write_task(tmp_path, "name: t\ninputs: [{path: in.txt}]\n"))
    task = load_task(
        write_task(tmp_path, "name: t\nkind: embed\ninputs: [{path: in.txt}]\nteacher: {kind: hf, model: m}\n")
    )
    assert task.teacher.pipeline == "feature-extraction"  # type: ignore[union-attr]
