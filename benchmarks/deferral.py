"""What the hybrid system's deferral decision costs per query: `Model.predict` on the same package with its
deferral rule and with the rule switched off, interleaved, 1 thread, batch 1 and batch 32, medians.

    python -m benchmarks.deferral runs/banking77/dist/banking77-cpu-x86.tsdpkg [--rounds 30]

Writes benchmarks/results/deferral-<machine>.json. The decision is the softmax margin (or top probability)
of the logits the model computed anyway, compared with τ: numpy on a (batch × labels) array.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()

    import tsd_edge

    model = tsd_edge.load(args.package, threads=1)
    if model.deferral is None:
        raise SystemExit(f"{args.package} has no deferral rule (deploy: in the task file)")
    rule = model.deferral
    texts = [
        json.loads(x)["input"] for x in model.package.file("heldout.jsonl").read_text(encoding="utf-8").split("\n") if x
    ]
    single, batch = texts[:64], [texts[i : i + 32] for i in range(0, 32 * 16, 32)]
    timings: dict[str, list[float]] = {"b1 with": [], "b1 without": [], "b32 with": [], "b32 without": []}
    for _ in range(args.rounds):
        for mode in ("with", "without"):  # interleaved, so drift in the machine's load hits both alike
            model.deferral = rule if mode == "with" else None
            t0 = time.perf_counter()
            for text in single:
                model.predict([text])
            timings[f"b1 {mode}"].append((time.perf_counter() - t0) / len(single) * 1e3)
            t0 = time.perf_counter()
            for chunk in batch:
                model.predict(chunk)
            timings[f"b32 {mode}"].append((time.perf_counter() - t0) / (32 * len(batch)) * 1e3)
    # the decision alone, on logits the model gave: what the end-to-end difference above is made of
    from tsd_edge.runtime.confidence import from_probabilities
    from tsd_edge.runtime.model import softmax

    decision = {}
    for name, rows in (("b1", model.logits(single[:1])), ("b32", model.logits(batch[0]))):
        reps, probs = 2000, softmax(rows)  # predict has the probabilities already, for the scores
        t0 = time.perf_counter()
        for _ in range(reps):
            _ = from_probabilities(probs, rule["measure"]) >= (rule["threshold"] or 0.0)
        decision[name] = (time.perf_counter() - t0) / reps / len(rows) * 1e3
    model.close()
    med = {k: statistics.median(v) for k, v in timings.items()}
    result = {
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "load_average": os.getloadavg()},
        "package": str(args.package),
        "rule": rule,
        "ms_per_query": med,
        "overhead_ms_per_query": {
            "b1": med["b1 with"] - med["b1 without"],
            "b32": med["b32 with"] - med["b32 without"],
        },
        "rounds": args.rounds,
    }
    out = HERE / "results" / f"deferral-{platform.machine()}-{os.cpu_count()}c.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["ms_per_query"], indent=2))
    print("overhead per query (ms):", json.dumps(result["overhead_ms_per_query"]))
    print("the decision alone (ms per query):", json.dumps(decision))


if __name__ == "__main__":
    main()
