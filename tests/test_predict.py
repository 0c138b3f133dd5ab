"""`tsd-edge predict` and `tsd_edge.load(...).predict` on the real package of the end-to-end run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Ran, tsd

TEXTS = ["I lost my card", "how do I top up my account", "my transfer has not arrived"]


@pytest.fixture(scope="module")
def pkg(pipeline: tuple[Path, Path, Ran]) -> Path:
    _, workdir, ran = pipeline
    assert ran.code == 0, ran.err[-2000:]
    return workdir / "dist" / "bank-slice-cpu-x86.tsdpkg"


def test_api_predict_matches_logits_and_the_label_map(pkg: Path) -> None:
    import numpy as np
    import tsd_edge

    with tsd_edge.load(pkg) as model:
        logits = model.logits(TEXTS)
        preds = model.predict(TEXTS, top_k=3)
        assert model.name == "bank-slice" and model.target == "cpu-x86" and model.kind == "classify"
    assert logits.shape == (3, len(model.labels))
    assert [p.label for p in preds] == [model.labels[i] for i in logits.argmax(1)]
    for p, row in zip(preds, logits, strict=True):
        probs = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        assert p.score == pytest.approx(float(probs.max()), rel=1e-5)
        assert next(lab for lab, _ in p.top_k) == p.label and len(p.top_k) == 3
        assert p.top_k[0][1] >= p.top_k[1][1] >= p.top_k[2][1]


def test_api_rejects_bad_input_with_a_reason(pkg: Path) -> None:
    import tsd_edge
    from tsd_edge.errors import InputError

    with tsd_edge.load(pkg) as model:
        for bad, why in (
            ("one string", "list of texts"),
            ([""], "empty"),
            ([3], "not a string"),
            (["x" * 200_001], "limit"),
        ):
            with pytest.raises(InputError, match=why):
                model.predict(bad)  # type: ignore[arg-type]
        with pytest.raises(InputError, match="top_k"):
            model.predict(TEXTS, top_k=0)
        assert model.predict([]) == []
        # a long input is truncated to the student's max_length, as in training, not refused
        assert model.predict(["card " * 5000])[0].label in model.labels


def test_cli_predict_arguments_stdin_and_top_k(pkg: Path) -> None:
    import tsd_edge

    with tsd_edge.load(pkg) as model:
        want = [p.label for p in model.predict(TEXTS)]
    ran = tsd("predict", pkg, *TEXTS)
    assert ran.code == 0, ran.err
    rows = [json.loads(line) for line in ran.out.splitlines()]
    assert [r["label"] for r in rows] == want and [r["text"] for r in rows] == TEXTS
    assert all(r["package"] == "bank-slice" and r["target"] == "cpu-x86" and "top_k" not in r for r in rows)
    stdin = f'{{"text": "{TEXTS[0]}"}}\n\n{TEXTS[1]}\n{json.dumps({"text": TEXTS[2], "id": 7})}\n'
    proc = subprocess.run(
        [sys.executable, "-m", "tsd_edge", "predict", str(pkg), "--top-k", "2"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["label"] for r in rows] == want and all(len(r["top_k"]) == 2 for r in rows)


@pytest.mark.parametrize(
    ("stdin", "why"),
    [('{"text": 5}\n', 'needs a "text" string'), ("{not json\n", "not valid JSON"), ("  \t\n", None)],
)
def test_cli_predict_bad_stdin_is_one_line_exit_2(pkg: Path, stdin: str, why: str | None) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tsd_edge", "predict", str(pkg)], input=stdin, capture_output=True, text=True
    )
    if why is None:  # nothing to classify: nothing printed, success
        assert proc.returncode == 0 and proc.stdout == ""
        return
    assert proc.returncode == 2 and why in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_predict_refuses_what_is_not_a_sound_package(pkg: Path, tmp_path: Path) -> None:
    not_pkg = tmp_path / "x.tsdpkg"
    not_pkg.write_bytes(b"hello")
    ran = tsd("predict", not_pkg, "hi")
    assert ran.code == 2 and "not a tsd-edge package" in ran.err
    empty = tsd("predict", pkg, "")
    assert empty.code == 2 and "empty" in empty.err
    missing = tsd("predict", tmp_path / "nope.tsdpkg", "hi")
    assert missing.code == 2 and "not found" in missing.err
