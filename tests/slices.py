"""A small, real slice of the Banking77 sample for end-to-end tests: a few intents, few inputs each."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "banking77"
LABELS = [
    "card_arrival",
    "lost_or_stolen_card",
    "exchange_rate",
    "pin_blocked",
    "top_up_failed",
    "cash_withdrawal_charge",
    "transfer_not_received_by_recipient",
    "age_limit",
]


def _rows(path: Path, per_label: int) -> list[dict[str, str]]:
    counts: dict[str, int] = {}
    out = []
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["category"] in LABELS and counts.get(row["category"], 0) < per_label:
                counts[row["category"]] = counts.get(row["category"], 0) + 1
                out.append(row)
    return out


def write_slice(
    folder: Path,
    *,
    train_per_label: int = 40,
    test_per_label: int = 25,
    hotels: int = 60,
    threshold: float = 0.7,
    extra: str = "",
) -> Path:
    """Write a task folder (task.yaml + data) and return the task file's path."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.csv", train_per_label), ("test.csv", test_per_label)):
        with (data / name).open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["text", "category"])
            writer.writeheader()
            writer.writerows(_rows(SAMPLE / "data" / name, n))
    lines = (SAMPLE / "data" / "hotels.txt").read_text(encoding="utf-8").splitlines()[:hotels]
    (data / "hotels.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (data / "labels.json").write_text(json.dumps(LABELS), encoding="utf-8")
    shutil.copy(SAMPLE / "data" / "LICENSE", data / "LICENSE")
    task = folder / "task.yaml"
    task.write_text(
        f"""name: bank-slice
labels: data/labels.json
inputs:
  - {{path: data/train.csv, label_field: category}}
  - {{path: data/test.csv, label_field: category}}
  - {{path: data/hotels.txt}}
teacher:
  examples: {{path: data/train.csv, label_field: category, per_label: 5}}
student: {{layers: 1, max_length: 32}}
training: {{epochs: 3, batch_size: 16, lr: 5.0e-4}}
agreement: {{threshold: {threshold}, max_drop: 0.05, min_n: 30}}
{extra}""",
        encoding="utf-8",
    )
    return task


def write_embed_slice(folder: Path, *, threshold: float = 0.3, extra: str = "") -> Path:
    """The same slice as an embed task (semantic search over the queries, no labels): the task file's path."""
    write_slice(folder)
    task = folder / "task.yaml"
    task.write_text(
        f"""name: bank-search
kind: embed
inputs:
  - {{path: data/train.csv}}
  - {{path: data/test.csv}}
  - {{path: data/hotels.txt}}
relevance: {{method: knn, reference: {{path: data/train.csv}}, k: 5, keep: 0.99}}
student: {{layers: 1, max_length: 32}}
training: {{epochs: 3, batch_size: 16, lr: 5.0e-4}}
agreement: {{metric: recall_asymmetric, k: 5, threshold: {threshold}, max_drop: 0.1, min_n: 30}}
{extra}""",
        encoding="utf-8",
    )
    return task
