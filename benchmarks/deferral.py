"""What the hybrid system's deferral decision costs per query: `Model.predict` on the same package with its
deferral rule and with the rule switched off, interleaved, 1 thread, batch 1 and batch 32, medians.

    python -m benchmarks.deferral runs/banking77/dist/banking77-cpu-x86.tsdpkg [--rounds 30] [--out FILE]

Writes benchmarks/results/deferral-<machine>.json (or --out). The decision is the softmax margin (or top
probability) of the logits the model computed anyway, compared with τ: numpy on a (batch × labels) array.
The file also keeps what the package's rule reached (its deferral.json, calibrated by `package` on the
compiled artifact's held-out answers): coverage, answered agreement, system agreement (the teacher answers
the rest) and teacher calls per query, on the calibration half, the half τ never saw, and all of them.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import tsd_edge

    from .__main__ import machine

    model = tsd_edge.load(args.package, threads=1)
    if model.deferral is None:
        raise SystemExit(f"{args.package} has no deferral rule (deploy: in the task file)")
    rule = model.deferral
    shipped = json.loads(model.package.file("deferral.json").read_text(encoding="utf-8"))
    reached = {part: _system(shipped[part]) for part in ("calibration", "evaluation", "overall")}
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
        "machine": {**machine(), "load_average": os.getloadavg()},
        "package": str(args.package),
        "rule": rule,
        "agreement": model.manifest.get("agreement"),
        "reached": reached,  # coverage, answered and system agreement, teacher calls per query
        "aurc": shipped.get("aurc"),
        "bound": shipped.get("bound"),
        "ms_per_query": med,
        "overhead_ms_per_query": {
            "b1": med["b1 with"] - med["b1 without"],
            "b32": med["b32 with"] - med["b32 without"],
        },
        "decision_ms_per_query": decision,
        "rounds": args.rounds,
    }
    out = args.out or HERE / "results" / f"deferral-{platform.machine()}-{os.cpu_count()}c.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["ms_per_query"], indent=2))
    print("overhead per query (ms):", json.dumps(result["overhead_ms_per_query"]))
    print("the decision alone (ms per query):", json.dumps(decision))
    print("reached:", json.dumps(reached, indent=2))


def _system(part: dict) -> dict:
    """A half's figures with the hybrid's: system agreement (the teacher agrees with itself on what it answers)."""
    n, answered, agreement = part["n"], part["answered"], part["answered_agreement"]
    system = None if agreement is None or not n else (answered * agreement + (n - answered)) / n
    return {**part, "system_agreement": system, "teacher_calls_per_query": 1 - part["coverage"]}


if __name__ == "__main__":
    main()
