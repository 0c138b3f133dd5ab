"""A teacher that gives labels only (no embeddings: an LLM behind /v1/chat, a python function) under a relevance
rule that computes none (`method: teacher`) still distils: the student's head starts from the task encoder's
embeddings of the label names instead of the stored embeddings it does not have."""

from __future__ import annotations

from pathlib import Path

from conftest import tsd

TEACHER = """
KEYWORDS = {"card": "card_arrival", "stolen": "lost_or_stolen_card", "lost": "lost_or_stolen_card",
            "rate": "exchange_rate", "pin": "pin_blocked", "top": "top_up_failed", "cash": "cash_withdrawal_charge",
            "transfer": "transfer_not_received_by_recipient", "age": "age_limit", "old": "age_limit"}

def teach(texts):
    out = []
    for text in texts:
        words = text.lower()
        out.append(next((label for key, label in KEYWORDS.items() if key in words), "card_arrival"))
    return out
"""


def test_distill_with_a_teacher_that_gives_no_embeddings(tmp_path: Path) -> None:
    from slices import write_slice

    task = write_slice(tmp_path, hotels=5, extra="relevance: {method: teacher}\n", threshold=0.3)
    (tmp_path / "keywords.py").write_text(TEACHER, encoding="utf-8")
    text = task.read_text(encoding="utf-8").replace(
        "teacher:\n  examples: {path: data/train.csv, label_field: category, per_label: 5}\n",
        "teacher: {kind: python, function: 'keywords:teach'}\n",
    )
    task.write_text(text, encoding="utf-8")
    run = tmp_path / "run"
    assert tsd("collect", task, "--workdir", run).code == 0
    distilled = tsd("distill", task, "--workdir", run)
    assert distilled.code == 0, distilled.out + distilled.err
    assert "agreement" in distilled.out
