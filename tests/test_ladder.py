"""The student ladder (toolkit/ladder.py) through the real CLI, on the end-to-end run's pairs (no re-collection)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import Ran, tsd
from tsd_edge.task import StudentSpec

LADDER = """student:
  ladder:
    - {kind: static, hidden: 32, max_length: 32, training: {epochs: 3, lr: 1.0e-2}}
    - {layers: 1, max_length: 32}
"""


def _ladder_task(pipeline: tuple[Path, Path, Ran], folder: Path, threshold: float) -> tuple[Path, Path]:
    task, workdir, ran = pipeline
    assert ran.code == 0, ran.err[-2000:]
    if not (folder / "data").is_dir():
        shutil.copytree(task.parent / "data", folder / "data")
        (folder / "run").mkdir()
        shutil.copy(workdir / "pairs.sqlite", folder / "run" / "pairs.sqlite")
    text = task.read_text(encoding="utf-8").replace("student: {layers: 1, max_length: 32}\n", LADDER)
    text = text.replace("threshold: 0.7,", f"threshold: {threshold},")
    out = folder / "task.yaml"
    out.write_text(text, encoding="utf-8")
    return out, folder / "run"


def test_ladder_ships_the_first_rung_that_holds_and_a_second_run_trains_nothing(
    pipeline: tuple[Path, Path, Ran], tmp_path: Path
) -> None:
    task, run = _ladder_task(pipeline, tmp_path, 0.3)  # a bar the static rung clears
    first = tsd("run", task, "--workdir", run)
    assert first.code == 0, first.out[-3000:] + first.err[-3000:]
    ladder = json.loads((run / "reports" / "ladder.json").read_text())
    assert ladder["chosen"] == "1-static-32" and len(ladder["rungs"]) == 1
    assert not (run / "ladder" / "2-transformer-1xteacher").exists()  # the dearer rung is not trained
    rung = ladder["rungs"][0]["targets"]["cpu-x86"]
    assert rung["holds"] and rung["agreement"] >= 0.3 and rung["artifact_bytes"] > 0
    assert rung["latency"]["texts_per_s_b32"] > 0 and rung["latency"]["ms_b1"] > 0
    assert "student ladder" in first.out and "1-static-32" in first.out
    assert (run / "dist" / "bank-slice-cpu-x86.tsdpkg").is_file()
    assert "Student ladder" in (run / "report.html").read_text()

    again = tsd("run", task, "--workdir", run)
    assert again.code == 0, again.err[-2000:]
    stage_lines = [ln for ln in again.out.splitlines() if "[1-static-32]" in ln]
    assert stage_lines and all("skipped" in ln for ln in stage_lines), stage_lines
    gate = tsd("gate", run / "dist" / "bank-slice-cpu-x86.tsdpkg", "--json", run / "g.json", "--junit", run / "g.xml")
    assert gate.code == 0, gate.out + gate.err


@pytest.mark.slow
def test_ladder_climbs_every_rung_and_ships_nothing_when_none_holds(
    pipeline: tuple[Path, Path, Ran], tmp_path: Path
) -> None:
    task, run = _ladder_task(pipeline, tmp_path, 0.999)  # no rung can hold 0.999
    none = tsd("run", task, "--workdir", run)
    assert none.code == 3, none.out[-3000:] + none.err[-3000:]
    ladder = json.loads((run / "reports" / "ladder.json").read_text())
    assert [r["name"] for r in ladder["rungs"]] == ["1-static-32", "2-transformer-1xteacher"]
    assert ladder["chosen"] is None and "no rung holds" in ladder["stopped"]
    assert all(not r["holds"] for r in ladder["rungs"])
    assert not list((run / "dist").glob("*.tsdpkg"))

    # the same rungs under a bar the static one clears: nothing is trained again, the first rung ships
    task, run = _ladder_task(pipeline, tmp_path, 0.3)
    shipped = tsd("run", task, "--workdir", run)
    assert shipped.code == 0, shipped.out[-3000:] + shipped.err[-3000:]
    for line in shipped.out.splitlines():
        if line.startswith(("distill [", "export [", "compile cpu-x86 [")):
            assert "skipped" in line, line
    assert json.loads((run / "reports" / "ladder.json").read_text())["chosen"] == "1-static-32"


def test_ladder_settings_are_checked() -> None:
    assert StudentSpec.model_validate({"ladder": "auto"}).ladder == "auto"
    with pytest.raises(ValueError, match="replaces the other student settings"):
        StudentSpec.model_validate({"ladder": "auto", "layers": 2})
    with pytest.raises(ValueError, match="empty"):
        StudentSpec.model_validate({"ladder": []})
    with pytest.raises(ValueError, match="unknown settings"):
        StudentSpec.model_validate({"kind": "static", "training": {"learning_rate": 1}})
    spec = StudentSpec.model_validate({"ladder": [{"kind": "static", "training": {"lr": 0.01}}, {"layers": 1}]})
    assert isinstance(spec.ladder, list) and spec.ladder[0].kind == "static"


def test_a_rung_lays_its_training_over_the_tasks(tmp_path: Path) -> None:
    from slices import write_slice
    from tsd_edge.task import load_task

    task = load_task(write_slice(tmp_path))
    rung = task.for_student(StudentSpec(kind="static", training={"lr": 0.01, "epochs": 9}))
    assert rung.training.lr == 0.01 and rung.training.epochs == 9
    assert rung.training.batch_size == task.training.batch_size and rung.label_names == task.label_names
    assert task.training.lr == 5.0e-4  # the task itself is unchanged
