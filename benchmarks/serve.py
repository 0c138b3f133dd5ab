"""`predict` and `serve` measured side by side, on one package, at 1 and 2 threads, in one run.

    python -m benchmarks.serve run runs/banking77/dist/banking77-cpu-x86.tsdpkg --task samples/banking77/task.yaml

- predict cold start: `tsd-edge predict PKG TEXT` as a fresh process, from its start to its first answer line
  (median of N), and its peak RSS (the kernel's ru_maxrss for that child, from wait4);
- in-process, in a fresh process per thread count: `Model.predict` on 32 held-out texts a call (throughput)
  and on one (latency p50/p99) — the same code path the server's batches take;
- serve: `tsd-edge serve PKG` in its own process, loaded from another process with C concurrent keep-alive
  connections (C = 1, 8, 32, 128), one text per request, closed loop, bounded request counts, dynamic
  batching on and off; throughput, p50/p99 latency, and the server's peak RSS (VmHWM);
- the teacher behind the same server code (`tsd_edge.serve.build_app` with an adapter), on the same load.

The load process is a minimal asyncio HTTP/1.1 client (raw streams: it spends ~20 µs of CPU a request, so on
a 2-core machine it takes as little as possible from the server); `--client httpx` uses httpx.AsyncClient
instead, and `run` measures that too at concurrency 32 for comparison.

Subcommands used by `run` (each in its own process): `load`, `inprocess`, `teacher` (a server), `table`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONCURRENCY = (1, 8, 32, 128)
STUDENT_REQUESTS = {1: 500, 8: 2000, 32: 3000, 128: 3000}
TEACHER_REQUESTS = {1: 60, 8: 200, 32: 400, 128: 400}
GOALS = {
    "cold_start_s": 1.0,
    "cold_start_rss_mib": 120.0,
    "serve_c32_vs_inprocess_b32": 0.8,
    "serve_p99_c1_over_inprocess_b1_ms": 2.0,
    "serve_rss_mib": 150.0,
}


# --- the load generator --------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def _raw_phase(host: str, port: int, requests: list[bytes], concurrency: int) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    counter = itertools.count()

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (i := next(counter)) < len(requests):
                started = time.perf_counter()
                writer.write(requests[i])
                status = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if not status.startswith(b"HTTP/1.1 200"):
                    errors += 1
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - began


async def _httpx_phase(
    url: str, bodies: list[bytes], concurrency: int, headers: dict
) -> tuple[list[float], int, float]:
    import httpx

    latencies: list[float] = []
    errors = 0
    counter = itertools.count()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def worker() -> None:
            nonlocal errors
            while (i := next(counter)) < len(bodies):
                started = time.perf_counter()
                try:
                    r = await client.post(url, content=bodies[i], headers=headers)
                except httpx.HTTPError:  # e.g. a pool timeout when the client itself is the bottleneck
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)
                errors += r.status_code != 200

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - began


def load(url: str, texts: list[str], concurrency: int, requests: int, client: str = "raw") -> dict[str, Any]:
    """Closed-loop load: `concurrency` connections, each sending its next request when the last is answered."""
    match = re.fullmatch(r"http://([^:/]+):(\d+)(/.*)", url)
    assert match, url
    host, port, path = match.group(1), int(match.group(2)), match.group(3)
    warmup = max(50, 2 * concurrency)
    bodies = [json.dumps({"texts": [texts[i % len(texts)]]}).encode() for i in range(warmup + requests)]
    head = "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n"
    raw = [head.format(path, host, len(b)).encode() + b for b in bodies]

    async def both() -> tuple[list[float], int, float]:
        if client == "raw":
            await _raw_phase(host, port, raw[:warmup], concurrency)
            return await _raw_phase(host, port, raw[warmup:], concurrency)
        await _httpx_phase(url, bodies[:warmup], concurrency, {"Content-Type": "application/json"})
        return await _httpx_phase(url, bodies[warmup:], concurrency, {"Content-Type": "application/json"})

    latencies, errors, seconds = asyncio.run(both())
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "client": client,
        "seconds": round(seconds, 3),
        "throughput_rps": round(len(latencies) / seconds, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 99) * 1000, 3),
    }


# --- in-process reference ------------------------------------------------------------------------------------


def _mib(field: str, pid: str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def inprocess(package: Path, threads: int, texts: list[str]) -> dict[str, Any]:
    from tsd_edge.runtime import load as load_model

    with load_model(package, threads=threads) as model:
        chunks = [texts[i : i + 32] for i in range(0, len(texts) - 31, 32)]
        for chunk in chunks[:5]:
            model.predict(chunk)
        rates = []
        for _ in range(5):  # passes over the held-out texts; the median pass
            began = time.perf_counter()
            n = 0
            for chunk in chunks[:60]:
                model.predict(chunk)
                n += len(chunk)
            rates.append(n / (time.perf_counter() - began))
        for text in texts[:50]:
            model.predict([text])
        single = []
        for text in texts[:1000]:
            began = time.perf_counter()
            model.predict([text])
            single.append(time.perf_counter() - began)
    return {
        "threads": threads,
        "b32_texts_per_s": round(statistics.median(rates), 1),
        "b32_passes": [round(r, 1) for r in rates],
        "b1_p50_ms": round(percentile(single, 50) * 1000, 3),
        "b1_p99_ms": round(percentile(single, 99) * 1000, 3),
        "peak_rss_mib": round(_mib("VmHWM"), 1),
    }


# --- the teacher behind the same server ----------------------------------------------------------------------


class TeacherModel:
    """The task's teacher with the interface the server batches: predict(texts, top_k), describe(), name."""

    def __init__(self, task_path: Path, threads: int) -> None:
        import torch
        from tsd_edge.task import load_task
        from tsd_edge.teachers import load_teacher

        torch.set_num_threads(threads)
        task = load_task(task_path)
        self.teacher = load_teacher(task)
        self.labels = list(task.label_names)
        self.name = f"{task.name}-teacher"
        self.kind = task.teacher.kind

    def predict(self, texts: list[str], top_k: int = 1) -> list[Any]:
        import numpy as np
        from tsd_edge.runtime import Prediction

        out = []
        for response in self.teacher.answer(list(texts)):
            probs = np.asarray(response.probs, dtype=np.float64)
            order = np.argsort(-probs, kind="stable")[: max(1, top_k)]
            top = [(self.labels[int(i)], float(probs[int(i)])) for i in order]
            out.append(Prediction(response.label or top[0][0], float(probs[self.labels.index(top[0][0])]), top))
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "target": "teacher", "kind": "classify", "backend": f"teacher-{self.kind}"}


def teacher_server(task_path: Path, threads: int, max_batch: int) -> None:
    from tsd_edge.serve import Batching, bind, build_app, serve, url_of

    model = TeacherModel(task_path, threads)
    model.predict(["warm up the teacher"])
    sock = bind("127.0.0.1", 0)
    app = build_app({model.name: model}, batching=Batching(max_batch=max_batch))
    url = url_of(sock)
    serve(app, sock, on_started=lambda: print(f"teacher on {url}", file=sys.stderr, flush=True))


# --- the run -------------------------------------------------------------------------------------------------


def _py(*args: Any) -> list[str]:
    return [sys.executable, "-m", *map(str, args)]


def _texts(package: Path) -> list[str]:
    from tsd_edge.runtime import read_package

    with tempfile.TemporaryDirectory() as tmp:
        pkg = read_package(package, Path(tmp))
        lines = pkg.file("heldout.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["input"] for line in lines]


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cold_start(package: Path, threads: int, text: str) -> dict[str, Any]:
    """`tsd-edge predict PKG TEXT` from process start to its first answer line, and its peak RSS."""
    exe = Path(sys.executable).with_name("tsd-edge")
    began = time.perf_counter()
    proc = subprocess.Popen(
        [str(exe), "predict", str(package), text, "--threads", str(threads)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    answered = time.perf_counter() - began
    proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0 and first.startswith(b"{"), (proc.returncode, first)
    return {"seconds": answered, "peak_rss_mib": usage.ru_maxrss / 1024}


class Running:
    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT)
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 300
        self.url = ""
        while not self.url:
            line = self.proc.stderr.readline()
            found = re.search(r"(http://127\.0\.0\.1:\d+)", line)
            if found:
                self.url = found.group(1)
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {line}{self.proc.stderr.read()}")

    def metrics(self) -> dict[str, float]:
        import httpx

        text = httpx.get(self.url + "/metrics", timeout=30).text
        out: dict[str, float] = {}
        for name in ("tsd_serve_batch_size_sum", "tsd_serve_batch_size_count"):
            out[name] = sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(name + "{"))
        return out

    def memory(self) -> dict[str, float]:
        pid = str(self.proc.pid)
        return {"peak_rss_mib": round(_mib("VmHWM", pid), 1), "rss_mib": round(_mib("VmRSS", pid), 1)}

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def measure_server(
    cmd: list[str], path: str, texts_file: Path, requests: dict[int, int], extra_clients: tuple[str, ...] = ()
) -> dict[str, Any]:
    server = Running(cmd)
    try:
        rows = []
        for c in CONCURRENCY:
            before = server.metrics()
            for client in ("raw", *(extra_clients if c == 32 else ())):
                n = requests[c] if client == "raw" else min(requests[c], 1000)
                out = subprocess.run(
                    _py(
                        "benchmarks.serve",
                        "load",
                        server.url + path,
                        texts_file,
                        "--concurrency",
                        c,
                        "--requests",
                        n,
                        "--client",
                        client,
                    ),
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                    check=client == "raw",
                )
                if out.returncode != 0:  # the comparison client failed: say so, keep the run
                    rows.append({"concurrency": c, "client": client, "failed": out.stderr.strip().splitlines()[-1]})
                    continue
                row = json.loads(out.stdout)
                after = server.metrics()
                calls = after["tsd_serve_batch_size_count"] - before["tsd_serve_batch_size_count"]
                texts = after["tsd_serve_batch_size_sum"] - before["tsd_serve_batch_size_sum"]
                row["mean_batch"] = round(texts / calls, 2) if calls else None
                row["loadavg"] = _loadavg()
                rows.append(row)
                before = after
                print(
                    f"    c={c:<4} {client:5} {row['throughput_rps']:>8} req/s  p50 {row['p50_ms']:>7} ms  "
                    f"p99 {row['p99_ms']:>7} ms  batch {row['mean_batch']}",
                    file=sys.stderr,
                )
        return {"rows": rows, **server.memory()}
    finally:
        code = server.stop()
        if code != 0:
            print(f"    (server exited {code})", file=sys.stderr)


def run(package: Path, task: Path, threads_list: list[int], repeats: int, out: Path, teacher: bool) -> dict[str, Any]:
    texts = _texts(package)
    texts_file = Path(tempfile.mkstemp(suffix=".json", prefix="serve-bench-")[1])
    texts_file.write_text(json.dumps(texts), encoding="utf-8")
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?")
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpu": model_name,
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_start": _loadavg(),
        },
        "versions": {
            p: metadata.version(p)
            for p in ("tsd-edge", "onnxruntime", "tokenizers", "starlette", "uvicorn", "httpx", "torch")
        },
        "package": str(package),
        "held_out_texts": len(texts),
        "goals": GOALS,
        "threads": {},
    }
    try:
        for threads in threads_list:
            entry: dict[str, Any] = {}
            print(f"threads={threads}: predict cold start x{repeats}", file=sys.stderr)
            runs = [cold_start(package, threads, texts[i]) for i in range(repeats)]
            entry["predict_cold_start"] = {
                "median_s": round(statistics.median(r["seconds"] for r in runs), 3),
                "max_s": round(max(r["seconds"] for r in runs), 3),
                "median_peak_rss_mib": round(statistics.median(r["peak_rss_mib"] for r in runs), 1),
                "loadavg": _loadavg(),
            }
            print(f"  {entry['predict_cold_start']}", file=sys.stderr)
            proc = subprocess.run(
                _py("benchmarks.serve", "inprocess", package, texts_file, "--threads", threads),
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=True,
            )
            entry["inprocess"] = {**json.loads(proc.stdout), "loadavg": _loadavg()}
            print(f"  in-process {entry['inprocess']}", file=sys.stderr)
            for batching in ("on", "off"):
                print(f"  serve, batching {batching}", file=sys.stderr)
                cmd = _py("tsd_edge", "serve", package, "--port", 0, "--threads", threads)
                if batching == "off":
                    cmd.append("--no-batching")
                extra = ("httpx",) if batching == "on" else ()
                entry[f"serve_batching_{batching}"] = measure_server(
                    cmd, "/v1/classify", texts_file, STUDENT_REQUESTS, extra
                )
            if teacher:
                print("  teacher behind the same server, batching on", file=sys.stderr)
                cmd = _py("benchmarks.serve", "teacher", task, "--threads", threads)
                entry["serve_teacher"] = measure_server(cmd, "/v1/classify", texts_file, TEACHER_REQUESTS)
            entry["verdict"] = verdict(entry)
            result["threads"][str(threads)] = entry
    finally:
        texts_file.unlink(missing_ok=True)
    result["machine"]["loadavg_end"] = _loadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _row(section: dict[str, Any], c: int, client: str = "raw") -> dict[str, Any]:
    return next(r for r in section["rows"] if r["concurrency"] == c and r["client"] == client)


def verdict(entry: dict[str, Any]) -> dict[str, Any]:
    cold, ip, on = entry["predict_cold_start"], entry["inprocess"], entry["serve_batching_on"]
    c32, c1 = _row(on, 32), _row(on, 1)
    out: dict[str, Any] = {
        "cold_start_s": [cold["median_s"], cold["median_s"] <= GOALS["cold_start_s"]],
        "cold_start_rss_mib": [cold["median_peak_rss_mib"], cold["median_peak_rss_mib"] <= GOALS["cold_start_rss_mib"]],
        "serve_c32_vs_inprocess_b32": [
            round(c32["throughput_rps"] / ip["b32_texts_per_s"], 3),
            c32["throughput_rps"] / ip["b32_texts_per_s"] >= GOALS["serve_c32_vs_inprocess_b32"],
        ],
        "serve_p99_c1_over_inprocess_b1_p99_ms": [
            round(c1["p99_ms"] - ip["b1_p99_ms"], 3),
            c1["p99_ms"] - ip["b1_p99_ms"] <= GOALS["serve_p99_c1_over_inprocess_b1_ms"],
        ],
        "serve_p99_c1_over_inprocess_b1_p50_ms": [
            round(c1["p99_ms"] - ip["b1_p50_ms"], 3),
            c1["p99_ms"] - ip["b1_p50_ms"] <= GOALS["serve_p99_c1_over_inprocess_b1_ms"],
        ],
        "serve_rss_mib": [
            max(entry["serve_batching_on"]["peak_rss_mib"], entry["serve_batching_off"]["peak_rss_mib"]),
            max(entry["serve_batching_on"]["peak_rss_mib"], entry["serve_batching_off"]["peak_rss_mib"])
            <= GOALS["serve_rss_mib"],
        ],
    }
    if "serve_teacher" in entry:
        t = entry["serve_teacher"]
        out["student_vs_teacher_server_throughput_c32"] = round(
            c32["throughput_rps"] / _row(t, 32)["throughput_rps"], 1
        )
        out["student_vs_teacher_server_p50_c1"] = round(_row(t, 1)["p50_ms"] / c1["p50_ms"], 1)
    return out


def table(result: dict[str, Any]) -> str:
    """The Markdown tables for benchmarks/README.md."""
    lines = []
    for threads, e in result["threads"].items():
        ip, cold = e["inprocess"], e["predict_cold_start"]
        lines += [
            f"**{threads} thread{'s' if threads != '1' else ''}** — in-process `Model.predict`: "
            f"{ip['b32_texts_per_s']:,.0f} texts/s at 32 a call, batch-1 p50 {ip['b1_p50_ms']} ms / p99 "
            f"{ip['b1_p99_ms']} ms; `predict` cold start {cold['median_s']} s (median), peak RSS "
            f"{cold['median_peak_rss_mib']} MiB",
            "",
            "| server | concurrency | req/s | p50 ms | p99 ms | texts per model call | load avg (1 min) |",
            "|---|---|---|---|---|---|---|",
        ]
        for key, name in (
            ("serve_batching_on", "student, batching"),
            ("serve_batching_off", "student, no batching"),
            ("serve_teacher", "teacher, batching"),
        ):
            if key not in e:
                continue
            for r in e[key]["rows"]:
                if "failed" in r:
                    lines.append(f"| {name} ({r['client']} client) | {r['concurrency']} | failed: {r['failed']} |||||")
                    continue
                label = name + (" (httpx client)" if r["client"] == "httpx" else "")
                lines.append(
                    f"| {label} | {r['concurrency']} | {r['throughput_rps']:,.0f} | {r['p50_ms']} | {r['p99_ms']} | "
                    f"{r['mean_batch']} | {r['loadavg'][0]} |"
                )
        mem = ", ".join(
            f"{k.removeprefix('serve_').replace('_', ' ')} {e[k]['peak_rss_mib']} MiB"
            for k in ("serve_batching_on", "serve_batching_off", "serve_teacher")
            if k in e
        )
        lines += ["", f"Server peak RSS: {mem}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="the whole measurement; writes the results JSON")
    p.add_argument("package", type=Path)
    p.add_argument("--task", type=Path, default=ROOT / "samples" / "banking77" / "task.yaml")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-teacher", action="store_true")
    p.add_argument("--out", type=Path, default=HERE / "results" / "serve.json")
    p = sub.add_parser("load", help="closed-loop HTTP load; prints one JSON line")
    p.add_argument("url")
    p.add_argument("texts", type=Path)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--client", choices=["raw", "httpx"], default="raw")
    p = sub.add_parser("inprocess", help="Model.predict in this process; prints one JSON line")
    p.add_argument("package", type=Path)
    p.add_argument("texts", type=Path)
    p.add_argument("--threads", type=int, default=1)
    p = sub.add_parser("teacher", help="the task's teacher behind the serve app (prints its URL on stderr)")
    p.add_argument("task", type=Path)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-batch", type=int, default=32)
    p = sub.add_parser("table", help="Markdown tables from a results JSON")
    p.add_argument("results", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.cmd == "run":
        result = run(args.package, args.task, args.threads, args.repeats, args.out, not args.no_teacher)
        print(table(result))
        print(json.dumps({t: e["verdict"] for t, e in result["threads"].items()}, indent=2))
    elif args.cmd == "load":
        texts = json.loads(args.texts.read_text(encoding="utf-8"))
        print(json.dumps(load(args.url, texts, args.concurrency, args.requests, args.client)))
    elif args.cmd == "inprocess":
        texts = json.loads(args.texts.read_text(encoding="utf-8"))
        print(json.dumps(inprocess(args.package, args.threads, texts)))
    elif args.cmd == "teacher":
        teacher_server(args.task, args.threads, args.max_batch)
    else:
        print(table(json.loads(args.results.read_text(encoding="utf-8"))))


if __name__ == "__main__":
    main()
