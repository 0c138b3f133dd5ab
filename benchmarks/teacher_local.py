"""Collection throughput of the `embedding` teacher vs the encoder's bare batched throughput, same process.

    python benchmarks/teacher_local.py [--n 1500]

Bare: `encode` of n Banking77 training queries at the teacher's batch size. Collection: a full
`collect` of the same queries into a fresh store (prototypes, soft labels, store commits; relevance
`teacher`, so the kNN pass is not counted). The goal is collection ≥ 80% of bare.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

from tsd_edge.collect import collect
from tsd_edge.encoder import embed
from tsd_edge.store import PairStore
from tsd_edge.task import load_task

DATA = Path(__file__).resolve().parents[1] / "samples" / "banking77" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1500)
    args = ap.parse_args()
    with (DATA / "train.csv").open(encoding="utf-8", newline="") as fh:
        texts = [r["text"].strip() for r in csv.DictReader(fh)][: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
        task = {
            "name": "bench",
            "labels": str(DATA / "categories.json"),
            "inputs": [{"path": "in.txt"}],
            "teacher": {"examples": {"path": str(DATA / "train.csv"), "label_field": "category", "per_label": 5}},
            "relevance": {"method": "teacher"},
        }
        (folder / "task.yaml").write_text(json.dumps(task), encoding="utf-8")
        t = load_task(folder / "task.yaml")
        embed("all-MiniLM-L6-v2", texts[:64], 32)  # load the model outside both timings
        start = time.perf_counter()
        embed("all-MiniLM-L6-v2", texts, t.teacher.batch_size)
        bare = len(texts) / (time.perf_counter() - start)
        with PairStore(folder / "pairs.sqlite") as store:
            from tsd_edge.teachers import load_teacher

            teacher = load_teacher(t)
            teacher.prototypes  # noqa: B018  # built outside the timing, as bare has no prototypes
            start = time.perf_counter()
            res = collect(t, store, teacher)
            collected = res.asked / (time.perf_counter() - start)
    print("| n | bare encode (texts/s) | collect (texts/s) | collect / bare |")
    print("| --- | --- | --- | --- |")
    print(f"| {len(texts)} | {bare:.1f} | {collected:.1f} | {collected / bare:.0%} |")


if __name__ == "__main__":
    main()
