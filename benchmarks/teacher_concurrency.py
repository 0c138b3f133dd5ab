"""Throughput of the `openai` teacher vs concurrency, against the test server with a fixed latency.

    python benchmarks/teacher_concurrency.py [--latency 0.2] [--concurrency 1 4 16 64]

For each concurrency c, a full `collect` (requests, parsing, soft labels, store commits) of
max(64, 16·c) inputs against tests/openai_server.py, run in its own process, answering every
request after `latency` seconds. Ideal: c / latency requests per second; the goal is ≥ 90% of it until the client is
CPU-bound. Prints one Markdown table row per concurrency.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tsd_edge.collect import collect
from tsd_edge.store import PairStore
from tsd_edge.task import load_task

LABELS = ["billing", "delivery", "account", "technical"]


def run(url: str, concurrency: int) -> tuple[int, float]:
    n = max(64, 16 * concurrency)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "in.txt").write_text("\n".join(f"benchmark query {i}" for i in range(n)) + "\n")
        task = {
            "name": "bench",
            "labels": LABELS,
            "inputs": [{"path": "in.txt"}],
            "relevance": {"method": "teacher"},
            "teacher": {"kind": "openai", "base_url": url, "model": "m", "concurrency": concurrency},
        }
        (folder / "task.yaml").write_text(json.dumps(task))
        with PairStore(folder / "pairs.sqlite") as store:
            # the first 16 answers go through the smoke test first: answer them outside the timing
            t = load_task(folder / "task.yaml")
            collect(t, store, limit=16)
            start = time.perf_counter()
            res = collect(t, store)
            seconds = time.perf_counter() - start
        return res.asked, seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    args = ap.parse_args()
    print(f"| concurrency | requests | seconds | requests/s | ideal (c / {args.latency:g} s) | share of ideal |")
    print("| --- | --- | --- | --- | --- | --- |")
    server = Path(__file__).resolve().parents[1] / "tests" / "openai_server.py"
    port = 18000 + os.getpid() % 1000
    cmd = [
        sys.executable,
        str(server),
        "--port",
        str(port),
        "--latency",
        str(args.latency),
        "--labels",
        ",".join(LABELS),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()  # type: ignore[union-attr]  # "serving on ..."
        for c in args.concurrency:
            n, seconds = run(f"http://127.0.0.1:{port}/v1", c)
            rate, ideal = n / seconds, c / args.latency
            print(f"| {c} | {n} | {seconds:.2f} | {rate:.1f} | {ideal:.1f} | {rate / ideal:.0%} |", flush=True)
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
