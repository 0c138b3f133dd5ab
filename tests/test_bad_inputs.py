"""Issue 13: bad input files and run folders give one line and exit 2 (never a traceback), and everything a
run needs is checked before the first teacher call. A python teacher writes down every call it gets."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from conftest import Ran, tsd
from tsd_edge.errors import RuntimeMissingError

ROOT = Path(__file__).resolve().parents[1]

TEACHER = """
from pathlib import Path

def answer(texts, labels):
    with open(Path(__file__).with_name("calls.txt"), "a", encoding="utf-8") as fh:
        fh.write(f"{len(texts)}\\n")
    return [labels[len(t) % len(labels)] for t in texts]
"""


def _task(folder: Path, *, inputs: str = "in.txt", extra: str = "", labels: str = "[a, b]") -> Path:
    (folder / "teach.py").write_text(TEACHER, encoding="utf-8")
    if not (folder / "in.txt").exists():
        (folder / "in.txt").write_text("".join(f"question number {i}\n" for i in range(40)), encoding="utf-8")
    task = folder / "task.yaml"
    task.write_text(
        f"name: t\nlabels: {labels}\ninputs:\n  - {{path: {inputs}}}\n"
        "teacher: {kind: python, function: 'teach:answer'}\nrelevance: {method: teacher}\n" + extra,
        encoding="utf-8",
    )
    return task


def _calls(folder: Path) -> int:
    calls = folder / "calls.txt"
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def _one_line(ran: Ran, code: int, *needles: str) -> str:
    assert ran.code == code, ran.out + ran.err
    assert "Traceback" not in ran.out + ran.err
    lines = [ln for ln in ran.err.splitlines() if ln.strip()]
    assert len(lines) == 1, ran.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- case 3: undecodable files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        ("latin1.txt", "café au lait\nna\u00efve\n".encode("latin-1"), "latin1.txt:1"),
        ("binary.txt", bytes(range(256)) * 4, "binary.txt:1"),
        ("nul.txt", b"fine line\nsecond\x00line\n", "nul.txt:2"),
        ("late.csv", b"text\nok row\n" + "r\u00e9sum\u00e9\n".encode("latin-1"), "late.csv:3"),
        ("rows.jsonl", b'{"text": "ok"}\n{"text": "\xff"}\n', "rows.jsonl:2"),
    ],
)
def test_undecodable_inputs_file_is_one_line_exit_2(tmp_path: Path, name: str, content: bytes, where: str) -> None:
    (tmp_path / name).write_bytes(content)
    task = _task(tmp_path, inputs=name)
    _one_line(tsd("collect", task, "-w", tmp_path / "w"), 2, where)
    assert _calls(tmp_path) == 0


def test_latin1_task_file_and_labels_file(tmp_path: Path) -> None:
    task = _task(tmp_path)
    task.write_bytes(task.read_text().replace("name: t", "name: t  # caf\u00e9").encode("latin-1"))
    _one_line(tsd("collect", task, "-w", tmp_path / "w"), 2, "task.yaml:1", "UTF-8")
    (tmp_path / "labels.txt").write_bytes("caf\u00e9\nth\u00e9\n".encode("latin-1"))
    task = _task(tmp_path, labels="labels.txt")
    _one_line(tsd("collect", task, "-w", tmp_path / "w"), 2, "labels.txt:1", "UTF-8")
    (tmp_path / "labels.json").write_bytes(b'["a", "b"' + b"\xe9]")
    task = _task(tmp_path, labels="labels.json")
    _one_line(tsd("collect", task, "-w", tmp_path / "w"), 2, "labels.json:1", "UTF-8")
    assert _calls(tmp_path) == 0


def test_pairs_import_of_an_undecodable_file(tmp_path: Path) -> None:
    task = _task(tmp_path)
    (tmp_path / "pairs.jsonl").write_bytes(b'{"input": "x", "label": "a"}\n{"input": "\xe9", "label": "a"}\n')
    _one_line(tsd("pairs", "import", task, tmp_path / "pairs.jsonl", "-w", tmp_path / "w"), 2, "pairs.jsonl:2")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    _one_line(tsd("pairs", "import", task, tmp_path / "bad.parquet", "-w", tmp_path / "w"), 2, "bad.parquet")


# -- case 4: -w pointing at a file, a file where the run folder keeps a folder ---------------------


def test_workdir_that_is_a_file(tmp_path: Path) -> None:
    task = _task(tmp_path)
    (tmp_path / "afile").write_text("x")
    for stage in ("collect", "distill", "export", "package"):
        _one_line(tsd(stage, task, "-w", tmp_path / "afile"), 2, "is a file, not a folder")
    assert _calls(tmp_path) == 0


def test_file_where_the_run_folder_keeps_a_folder(tmp_path: Path) -> None:
    task = _task(tmp_path)
    work = tmp_path / "w"
    work.mkdir()
    (work / "student").write_text("not a folder")
    _one_line(tsd("distill", task, "-w", work), 2, "student", "a file where tsd-edge keeps a folder")
    (work / "student").unlink()
    (work / "pairs.sqlite").mkdir()
    _one_line(tsd("collect", task, "-w", work), 2, "pairs.sqlite", "a folder where the pair store should be")


# -- case 5: an inputs file with no inputs ---------------------------------------------------------


@pytest.mark.parametrize(("name", "content"), [("empty.txt", ""), ("blank.txt", "\n  \n\n"), ("head.csv", "text\n")])
def test_inputs_file_without_inputs_is_refused(tmp_path: Path, name: str, content: str) -> None:
    (tmp_path / name).write_text(content)
    _one_line(tsd("collect", _task(tmp_path, inputs=name), "-w", tmp_path / "w"), 2, name, "no inputs")
    assert _calls(tmp_path) == 0


# -- case 7: everything a run needs is checked before the first teacher call -----------------------


def test_unknown_target_in_the_task_file_before_any_teacher_call(tmp_path: Path) -> None:
    task = _task(tmp_path, extra="targets: [cpu-x86, cpu-x68]\n")
    for command in ("collect", "run"):
        _one_line(tsd(command, task, "-w", tmp_path / "w"), 2, "task.yaml:7", "targets[1]", "cpu-x68", "cpu-x86")
    assert _calls(tmp_path) == 0 and not (tmp_path / "w" / "pairs.sqlite").exists()


def test_unknown_run_target_and_bad_reference_before_any_teacher_call(tmp_path: Path) -> None:
    task = _task(tmp_path)
    _one_line(tsd("run", task, "-w", tmp_path / "w", "--target", "jetsn"), 2, "unknown target 'jetsn'")
    (tmp_path / "ref.txt").write_bytes("r\u00e9f\u00e9rence\n".encode("latin-1"))
    task = _task(tmp_path, extra="relevance: {method: knn, reference: {path: ref.txt}}\n")
    task.write_text(task.read_text().replace("relevance: {method: teacher}\n", ""))
    _one_line(tsd("collect", task, "-w", tmp_path / "w"), 2, "ref.txt:1", "UTF-8")
    assert _calls(tmp_path) == 0


# -- case 11: the README's install carries FP16 lowering; a missing package names its extra --------


def test_train_extra_carries_fp16_lowering() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith("onnxconverter-common") for dep in extras["train"])
    assert '.[train]"' in (ROOT / "README.md").read_text() or ".[train," in (ROOT / "README.md").read_text()
    import onnxconverter_common  # noqa: F401  (installed by the README's command here)


def test_missing_optional_package_names_the_extra() -> None:
    message = str(RuntimeMissingError("FP16 lowering", "onnxconverter_common"))
    assert "pip install 'tsd-edge[train]'" in message
    assert "pip install 'tsd-edge[openvino]'" in str(RuntimeMissingError("the openvino backend", "openvino"))
    assert "pip install 'tsd-edge[device]'" in str(RuntimeMissingError("--device", "asyncssh"))


def test_lowering_without_onnxconverter_common_says_which_extra(tmp_path: Path) -> None:
    """The real lowering code, in a process where onnxconverter_common cannot be imported."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['onnxconverter_common'] = None\n"
        "from pathlib import Path\nfrom tsd_edge.exporters import lowering\n"
        "from tsd_edge.errors import RuntimeMissingError\n"
        "try:\n    lowering.to_fp16(Path('a.onnx'), Path('b.onnx'))\n"
        "except RuntimeMissingError as exc:\n    print('MSG', exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "MSG" in proc.stdout and "pip install 'tsd-edge[train]'" in proc.stdout, proc.stdout + proc.stderr


def test_records_that_are_not_json_mean_not_done(tmp_path: Path) -> None:
    from tsd_edge import RunDir

    run = RunDir(tmp_path)
    run.record("distill").parent.mkdir(parents=True)
    for junk in (b"", b"\xff\xfe", b"[1, 2]", b'{"key": "k"}', b'{"key": "k", "outputs": {"../x": "0"}}'):
        run.record("distill").write_bytes(junk)
        assert not run.up_to_date("distill", "k")
    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "model.safetensors").write_bytes(b"weights")
    run.finish("distill", "k", [tmp_path / "student"])
    assert run.up_to_date("distill", "k")
    assert json.loads(run.record("distill").read_text())["outputs"] == {
        "student/model.safetensors": __import__("hashlib").sha256(b"weights").hexdigest()
    }
    (tmp_path / "student" / "model.safetensors").write_bytes(b"weights, half")
    assert not run.up_to_date("distill", "k")
