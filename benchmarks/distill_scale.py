"""Distillation throughput: one process vs two gloo processes (torchrun), torch.compile off vs on.

    python benchmarks/distill_scale.py [--epochs 3] [--repeats 2] [--configs NAME ...] [--out FILE]

A Banking77 slice (tests/slices.py: 8 intents, 40 train + 25 test queries each, 60 hotel queries) is
collected once with the offline teacher; then `tsd-edge distill --force` runs on copies of that
store in these configurations, interleaved and in alternating order each repeat (so drift on a shared
machine hits all alike):

- `1 process`: one process, torch threads = all cores (the default);
- `2 processes`: `torchrun --standalone --nproc_per_node 2`, gloo, one thread each (cores ÷ processes);
- `1 process, compile`: the same with `training.compile: true` (`torch.compile(dynamic=True)`);
- `1 process, 1 thread`: the base of the scaling;
- `1 process, 1 thread, compile`: compile without the two-thread noise of a shared machine.

The student is the Banking77 sample's (2 layers copied from the teacher, max_length 64), batch 32,
dropout 0 (so the runs compute the same function). samples/s is the training loop alone (held-out
evaluation excluded), all processes together, from the report's `samples_per_second`; `steady` leaves
out the first epoch (compilation happens there). The students of each configuration are compared with
the first chosen one's on the held-out inputs (max |Δ logit|), and with a student trained on batches of 16
instead of 32, which shows how far a different batch split moves the logits. `--out` writes JSON with
the machine and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CONFIGS: dict[str, dict[str, Any]] = {
    "1 process": {"procs": 1, "training": {}},
    "2 processes": {"procs": 2, "training": {}},
    "1 process, compile": {"procs": 1, "training": {"compile": True}},
    "1 process, 1 thread": {"procs": 1, "training": {"threads": 1}},
    "1 process, 1 thread, compile": {"procs": 1, "training": {"threads": 1, "compile": True}},
}


def write_task(folder: Path, epochs: int, extra: dict[str, Any], batch_size: int = 32) -> Path:
    from slices import write_slice

    task = write_slice(folder)
    training = {"epochs": epochs, "batch_size": batch_size, "lr": 5.0e-4, "patience": epochs, **extra}
    text = task.read_text(encoding="utf-8")
    text = text.replace("student: {layers: 1, max_length: 32}", "student: {layers: 2, max_length: 64, dropout: 0.0}")
    text = text.replace("training: {epochs: 3, batch_size: 16, lr: 5.0e-4}", f"training: {json.dumps(training)}")
    task.write_text(text, encoding="utf-8")
    return task


def distill(task: Path, workdir: Path, procs: int) -> dict[str, Any]:
    if procs == 1:
        launch = [sys.executable, "-m", "tsd_edge"]
    else:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
        launch += ["-m", "tsd_edge"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run(
        [*launch, "distill", str(task), "--workdir", str(workdir), "--force"], capture_output=True, text=True, env=env
    )
    if proc.returncode:
        raise SystemExit(f"distill failed:\n{proc.stderr[-2000:]}")
    details = json.loads((workdir / "reports" / "student.json").read_text(encoding="utf-8"))["details"]
    epochs = [h for h in details["history"] if h["epoch"] >= 1]
    steady = epochs[1:] or epochs
    pairs = details["train_pairs"]
    return {
        "samples_per_second": details["samples_per_second"],
        "steady_samples_per_second": round(pairs * len(steady) / sum(h["seconds"] for h in steady), 1),
        "first_epoch_seconds": epochs[0]["seconds"],
        "agreement": details["history"][-1]["agreement"],
        "train_pairs": pairs,
    }


def logits(student: Path, texts: list[str]) -> Any:
    from tsd_edge.runtime.infer import predict_logits
    from tsd_edge.runtime.tokenizer import TextEncoder
    from tsd_edge.student import StudentRunner

    with StudentRunner.load(student) as runner:
        return predict_logits(runner, TextEncoder(student / "tokenizer.json", 64), texts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from tsd_edge.collect import collect
    from tsd_edge.store import PairStore
    from tsd_edge.task import load_task

    root = Path(tempfile.mkdtemp(prefix="distill-scale-"))
    store = root / "pairs.sqlite"
    base = write_task(root / "base", args.epochs, {})
    with PairStore(store) as s:
        collect(load_task(base), s)
        fingerprint = s.db.execute("SELECT fingerprint FROM teachers").fetchone()[0]
        held = [p.input for p in s.pairs(fingerprint, split="heldout")]

    chosen = {name: CONFIGS[name] for name in CONFIGS if name in args.configs}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
    students: dict[str, Path] = {}
    for r in range(args.repeats):
        order = list(chosen) if r % 2 == 0 else list(reversed(chosen))
        for name in order:
            cfg = chosen[name]
            task = write_task(root / f"task-{len(students)}-{r}", args.epochs, cfg["training"])
            work = root / f"run-{name.replace(' ', '_').replace(',', '')}"
            work.mkdir(exist_ok=True)
            shutil.copy(store, work / "pairs.sqlite")
            runs[name].append(distill(task, work, cfg["procs"]))
            students[name] = work / "student"
            print(name, runs[name][-1], flush=True)
    # a different batch split, for scale: one process on batches of 16
    half = root / "run-batch16"
    half.mkdir()
    shutil.copy(store, half / "pairs.sqlite")
    distill(write_task(root / "task-batch16", args.epochs, {}, batch_size=16), half, 1)

    first = next(iter(chosen))
    ref = logits(students[first], held)
    result: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average": os.getloadavg(),
        "when": datetime.now(UTC).isoformat(timespec="minutes"),
        "epochs": args.epochs,
        "train_pairs": runs[first][0]["train_pairs"],
        "configs": {},
        "max_abs_dlogit_batch16_vs_32": float(abs(logits(half / "student", held) - ref).max()),
    }
    for name, got in runs.items():
        result["configs"][name] = {
            "samples_per_second_median": statistics.median(g["samples_per_second"] for g in got),
            "steady_samples_per_second_median": statistics.median(g["steady_samples_per_second"] for g in got),
            "first_epoch_seconds_median": statistics.median(g["first_epoch_seconds"] for g in got),
            "runs": got,
            f"max_abs_dlogit_vs_{first}": float(abs(logits(students[name], held) - ref).max()),
        }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
