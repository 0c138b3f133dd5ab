"""The feedback round's derived task (benchmarks/feedback.py): what round 1 leaves out of the Banking77 pool is
training-split inputs only, so both rounds are judged on the same held-out inputs, by the same teacher."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_held_back_slice_is_training_split_only_and_the_teacher_is_the_same(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from tsd_edge.data import heldout, read_inputs
    from tsd_edge.task import load_task
    from tsd_edge.teachers import load_teacher

    from benchmarks.feedback import SAMPLE, derive

    facts = derive(tmp_path, 0.4)
    sample, derived = load_task(SAMPLE / "task.yaml"), load_task(tmp_path / "task.yaml")
    full = {i.key: i for i in read_inputs(sample)}
    pool = {i.key: i for i in read_inputs(derived)}
    back = (tmp_path / "heldback.txt").read_text(encoding="utf-8").splitlines()
    assert facts["held_back"] == len(back) and 0.3 < len(back) / facts["train_csv_training_split"] < 0.5
    share = sample.split.heldout
    held = {k for k in full if heldout(k, share)}
    assert held == {k for k in pool if heldout(k, share)}  # the same held-out inputs in both rounds
    by_text = {i.text: k for k, i in full.items()}
    assert all(by_text[t] not in pool and not heldout(by_text[t], share) for t in back)
    assert set(pool) | {by_text[t] for t in back} == set(full)  # nothing else is left out
    assert load_teacher(derived).fingerprint == load_teacher(sample).fingerprint
    assert derive(tmp_path / "again", 0.4) == facts  # stable: a function of the inputs alone
