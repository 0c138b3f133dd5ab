"""Collection throughput of the local teachers vs their model's bare batched throughput, same process.

    python benchmarks/teacher_local.py [--kind embedding hf] [--n 768] [--repeats 5] [--batch-size 32] [--out FILE]

For each kind, n Banking77 training queries, measured interleaved: bare, collect, collect, bare, ...
(the order alternates each repeat, so drift on a shared machine hits both alike); medians.

- `embedding`: bare is `encode` of the queries at the teacher's batch size (sentence-transformers);
  collect is a full `collect` of the same queries into a fresh store (prototypes, soft labels, store
  commits).
- `hf`: a BERT of all-MiniLM-L6-v2's size (6 layers, hidden 384, 12 heads, its tokenizer) with a
  text-classification head over the 77 Banking77 categories, built from a config with **random
  weights** (no model hub here; throughput does not depend on the weights) and saved to a temporary
  folder. Bare is the transformers pipeline itself, `pipeline("text-classification", top_k=None,
  batch_size=B)` over the queries (same truncation as the teacher); collect is a full `collect` with
  `teacher.kind: hf` into a fresh store (label mapping, soft labels, store commits).

Both collections use `relevance: {method: teacher}`, so the kNN pass is not counted, and the model is
loaded (and the embedding prototypes built) once, outside every timing. The goal (issue 3) is
collection ≥ 80% of bare. `--out` adds the figures, the machine and the load average to a JSON file
(`{"runs": [...]}`).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tsd_edge.collect import collect  # noqa: E402
from tsd_edge.store import PairStore  # noqa: E402
from tsd_edge.task import Task, load_task  # noqa: E402
from tsd_edge.teachers import load_teacher  # noqa: E402

DATA = ROOT / "samples" / "banking77" / "data"


def read_texts(n: int) -> list[str]:
    with (DATA / "train.csv").open(encoding="utf-8", newline="") as fh:
        return [r["text"].strip() for r in csv.DictReader(fh)][:n]


def write_task(folder: Path, texts: list[str], teacher: dict[str, Any]) -> Task:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    task = {
        "name": "bench",
        "labels": str(DATA / "categories.json"),
        "inputs": [{"path": "in.txt"}],
        "teacher": teacher,
        "relevance": {"method": "teacher"},
    }
    (folder / "task.yaml").write_text(json.dumps(task), encoding="utf-8")
    return load_task(folder / "task.yaml")


def minilm_classifier(folder: Path) -> Path:
    """A MiniLM-sized BERT classifier over the Banking77 categories, random weights, saved to `folder`."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    from transformers.utils import logging as hf_logging
    from tsd_edge.encoder import encoder_dir

    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    labels = json.loads((DATA / "categories.json").read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir("all-MiniLM-L6-v2")))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def interleaved(systems: dict[str, Callable[[int], int]], repeats: int) -> dict[str, Any]:
    """texts/s of each system, round-robin with a different one first each repeat; medians and ratios to collect."""
    names = list(systems)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            n = systems[name](r)
            rates[name].append(n / (time.perf_counter() - start))
    out: dict[str, Any] = {"texts_per_s": {k: round(statistics.median(v), 1) for k, v in rates.items()}}
    out["runs"] = {k: [round(x, 1) for x in v] for k, v in rates.items()}
    for name in names:
        if name != "collect":
            ratio = statistics.median(rates["collect"]) / statistics.median(rates[name])
            per = [c / b for b, c in zip(rates[name], rates["collect"], strict=True)]
            out[f"collect_over_{name}"] = round(ratio, 3)
            out[f"collect_over_{name}_per_repeat"] = [round(x, 3) for x in per]
    return out


def collector(task: Task, teacher: Any, root: Path, n: int) -> Callable[[int], int]:
    def run(r: int) -> int:
        with PairStore(root / f"store-{r}" / "pairs.sqlite") as store:
            res = collect(task, store, teacher)
        if res.asked != n:
            raise RuntimeError(f"collection asked {res.asked} of {n} inputs")
        return res.asked

    return run


def bench_embedding(texts: list[str], batch: int, repeats: int, root: Path) -> dict[str, Any]:
    from tsd_edge.encoder import embed

    examples = {"path": str(DATA / "train.csv"), "label_field": "category", "per_label": 5}
    task = write_task(root, texts, {"kind": "embedding", "examples": examples, "batch_size": batch})
    teacher = load_teacher(task)
    teacher.prototypes  # noqa: B018  # loads the encoder and builds the prototypes outside the timings

    def bare(_: int) -> int:
        embed("all-MiniLM-L6-v2", texts, batch)
        return len(texts)

    return {
        "model": "all-MiniLM-L6-v2 (sentence-transformers)",
        "bare": "SentenceTransformer.encode (sorts each call's texts by length)",
    } | interleaved({"bare": bare, "collect": collector(task, teacher, root, len(texts))}, repeats)


def bench_hf(texts: list[str], batch: int, repeats: int, root: Path) -> dict[str, Any]:
    from transformers import pipeline

    model = minilm_classifier(root / "model")
    task = write_task(root, texts, {"kind": "hf", "model": str(model), "batch_size": batch})
    teacher = load_teacher(task)
    device = teacher.pipe.device  # loads the teacher's pipeline outside the timings
    pipe = pipeline("text-classification", model=str(model), top_k=None, batch_size=batch, device=device)
    max_length = task.teacher.max_length

    lengths = [len(ids) for ids in pipe.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    by_length = [texts[i] for i in sorted(range(len(texts)), key=lambda i: -lengths[i])]

    def bare(_: int) -> int:
        return len(pipe(texts, truncation=True, max_length=max_length))

    def bare_sorted(_: int) -> int:
        return len(pipe(by_length, truncation=True, max_length=max_length))

    bare(0)  # warm-up, as the collections below share the teacher's warmed pipeline
    systems = {"bare": bare, "bare_sorted": bare_sorted, "collect": collector(task, teacher, root, len(texts))}
    return {
        "model": "BertForSequenceClassification 6 layers, hidden 384, 12 heads, 77 labels, random weights",
        "device": str(device),
        "bare": "transformers pipeline('text-classification', top_k=None) over the texts in input order",
        "bare_sorted": "the same pipeline over the texts sorted longest first (sorted outside the timing)",
    } | interleaved(systems, repeats)


def machine() -> dict[str, Any]:
    try:
        from benchmarks.__main__ import machine as full

        return full()
    except ImportError:
        from tsd_edge.bench import machine as cpu

        return cpu()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", nargs="+", choices=["embedding", "hf"], default=["embedding", "hf"])
    ap.add_argument("--n", type=int, default=768)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's own, one per core)")
    ap.add_argument("--out", type=Path, help="add this run's figures, machine and load to this JSON file")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    texts = read_texts(args.n)
    results: dict[str, Any] = {}
    benches = {"embedding": bench_embedding, "hf": bench_hf}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kind:
            load_before = os.getloadavg()
            results[kind] = benches[kind](texts, args.batch_size, args.repeats, Path(tmp) / kind)
            results[kind]["load_average"] = [round(x, 2) for x in load_before + os.getloadavg()]
    threads = torch.get_num_threads()
    print(f"n = {len(texts)}, batch size {args.batch_size}, {threads} torch threads, {args.repeats} repeats, medians")
    print("| teacher | bare (texts/s) | bare, sorted by length (texts/s) | collect (texts/s) | collect / bare |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for kind, r in results.items():
        rate = r["texts_per_s"]
        sort = f"{rate['bare_sorted']:.1f}" if "bare_sorted" in rate else "(encode sorts)"
        ratio = f"{r['collect_over_bare']:.0%}"
        if "bare_sorted" in rate:
            ratio += f" ({r['collect_over_bare_sorted']:.0%} of sorted)"
        print(f"| {kind} | {rate['bare']:.1f} | {sort} | {rate['collect']:.1f} | {ratio} |")
        print(f"<!-- {kind} runs: {r['runs']} load {r['load_average']} -->")
    if args.out:
        from benchmarks.__main__ import versions

        uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        record = {
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": "python benchmarks/teacher_local.py " + " ".join(sys.argv[1:]),
            "machine": machine(),
            "versions": versions() | {"python": platform.python_version()},
            "torch_threads": threads,
            "uptime_after": uptime,
            "n": len(texts),
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "goal": "collect / bare >= 0.80",
            "results": results,
        }
        runs = json.loads(args.out.read_text(encoding="utf-8"))["runs"] if args.out.is_file() else []
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"runs": [*runs, record]}, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
