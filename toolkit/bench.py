"""`tsd-edge bench`: speed, size, memory, energy and cost of the teacher, the student and each compiled
artifact, side by side, on the same held-out inputs, in one run.

Every system answers text → label, as its users run it: the teacher through its own adapter (for the
embedding teacher, sentence-transformers in PyTorch), the student in PyTorch eager (`StudentRunner`),
each compiled artifact through its backend's runner, loaded from its package when that package holds
the current artifact (so the memory figure is that of a process that loads the package and answers).
Tokenization is part of every system's time.

Each system runs in its own worker process (`python -m tsd_edge.bench SPEC`) so its peak memory is its
own (VmHWM from /proc/self/status; ru_maxrss would carry the parent's size across exec). The workers
are started together and then measured one at a time, round-robin, a different one first each repeat:
noise on a shared machine hits every system alike. Figures are medians over repeats.

Energy: RAPL package counters from /sys/class/powercap when readable ("measured", the whole socket);
otherwise CPU time × WATTS_PER_CORE, labelled "estimated" wherever it appears.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, TsdEdgeError

# The estimate's power per busy core: an AMD EPYC 7B13 (Zen 3, the CPU these machines report) is
# 240 W TDP for 64 cores, 3.75 W a core. A dynamic share of TDP: idle power, DRAM and the rest of
# the machine are left out, so the ratio between systems is the ratio of their CPU time.
WATTS_PER_CORE = 240.0 / 64
RAPL = Path("/sys/class/powercap/intel-rapl:0")
SCHEMA = "tsd-edge/bench/1"


@dataclass
class System:
    name: str
    kind: str  # teacher | student | compiled
    runtime: str
    precision: str
    source: str
    size_bytes: int | None = None
    parameters: int | None = None
    agreement: float | None = None
    agreement_n: int | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    throughput_qps: float | None = None
    throughput_runs: list[float] = field(default_factory=list)
    model_ms_per_batch: float | None = None
    gflops: float | None = None
    mflop_per_query: float | None = None
    peak_rss_mib: float | None = None
    rss_after_load_mib: float | None = None
    load_s: float | None = None
    cpu_s_per_query: dict[str, float] = field(default_factory=dict)
    energy: dict[str, Any] = field(default_factory=dict)
    cost_per_1m_usd: dict[str, float] = field(default_factory=dict)


@dataclass
class BenchResult:
    task: str
    systems: list[System]
    settings: dict[str, Any]
    machine: dict[str, Any]
    skipped: list[dict[str, str]] = field(default_factory=list)
    schema: str = SCHEMA

    @property
    def ratios(self) -> dict[str, dict[str, float]]:
        """Each non-teacher system against the teacher (× faster, × less energy) and against the eager student."""
        by = {s.name: s for s in self.systems}
        teacher, eager = by.get("teacher"), by.get("student")
        out: dict[str, dict[str, float]] = {}
        for s in self.systems:
            if s.kind == "teacher":
                continue
            r: dict[str, float] = {}
            if teacher and teacher.throughput_qps and s.throughput_qps:
                r["throughput_vs_teacher"] = s.throughput_qps / teacher.throughput_qps
            if teacher and teacher.latency_ms and s.latency_ms:
                r["latency_b1_vs_teacher"] = teacher.latency_ms["p50"] / s.latency_ms["p50"]
            if eager and eager is not s and eager.latency_ms and s.latency_ms:
                r["latency_b1_vs_eager"] = eager.latency_ms["p50"] / s.latency_ms["p50"]
            for regime in ("b1", "b32"):
                key = f"joules_per_1k_{regime}"
                if teacher and teacher.energy.get(key) and s.energy.get(key):
                    r[f"energy_{regime}_vs_teacher"] = teacher.energy[key] / s.energy[key]
            out[s.name] = r
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratios": self.ratios}

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path


# -- the parent: pick systems and inputs, start workers, measure round-robin ------------------------


def bench(
    task: Any,
    run: Any,
    *,
    targets: list[str] | None = None,
    threads: int = 1,
    repeats: int = 5,
    batch_size: int = 32,
    queries: int = 32,
    batches: int = 4,
    price_kwh: float = 0.15,
    price_hour: float = 0.10,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Measure every system; write runs/<task>/bench.json and bench.svg. `queries` batch-1 calls and
    `batches` batches of `batch_size` per system per repeat, on held-out inputs (different ones each repeat)."""
    from .agreement import AgreementReport
    from .store import PairStore
    from .teachers import load_teacher

    say = progress or (lambda _msg: None)
    if repeats < 1 or queries < 1 or batches < 1 or batch_size < 1 or threads < 1:
        raise InputError("--repeats, --queries, --batches, --batch-size and --threads must be at least 1")
    if not run.pairs.is_file():
        raise InputError(f"no pair store in {run.pairs}: run `tsd-edge run {task.name}` first")
    teacher = load_teacher(task)
    with PairStore(run.pairs) as store:
        texts = [p.input for p in store.pairs(teacher.fingerprint, split="heldout", relevant=True)]
    if not texts:
        raise InputError(f"no held-out inputs in {run.pairs}: run `tsd-edge collect` first")
    specs, skipped = _systems(task, run, targets, threads)
    per_repeat = queries + batches * batch_size
    slices = [[texts[(r * per_repeat + i) % len(texts)] for i in range(per_repeat)] for r in range(repeats)]

    workers = {s["name"]: _Worker(s, texts[:batch_size]) for s in specs}
    results: dict[str, list[dict]] = {name: [] for name in workers}
    systems: list[System] = []
    try:
        ready: dict[str, dict] = {}
        for name, w in workers.items():
            say(f"loading {name}")
            msg = w.receive()
            if "error" in msg:
                skipped.append({"name": name, "reason": msg["error"]})
                w.stop()
            else:
                ready[name] = msg
        live = [n for n in workers if n in ready]
        if not live:
            raise TsdEdgeError(f"no system could be loaded: {skipped}")
        for r, chunk in enumerate(slices):
            single, rows = chunk[:queries], chunk[queries:]
            groups = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
            order = live[r % len(live) :] + live[: r % len(live)]
            for name in order:
                say(f"repeat {r + 1}/{repeats}: {name}")
                reply = workers[name].ask({"single": single, "batches": groups})
                if "error" in reply:
                    raise TsdEdgeError(f"{name} failed while measured: {reply['error']}")
                results[name].append({**reply, "groups": groups})
    finally:
        for w in workers.values():
            w.stop()
    flops = {s["name"]: _flops_fn(s, task, run) for s in specs}
    for spec in specs:
        name = spec["name"]
        if name not in ready:
            continue
        report = Path(spec["report"])
        agreement = AgreementReport.load(report) if report.is_file() else None
        system = System(
            name=name,
            kind=spec["kind"],
            runtime=spec["runtime"],
            precision=spec["precision"],
            source=spec["source"],
            size_bytes=spec["size_bytes"],
            parameters=ready[name].get("parameters") or ready.get("student", {}).get("parameters"),
            agreement=agreement.agreement if agreement else None,
            agreement_n=agreement.n if agreement else None,
            rss_after_load_mib=ready[name]["rss_mib"],
            load_s=ready[name]["load_s"],
        )
        _summarise(system, results[name], flops[name], threads=threads, price_kwh=price_kwh, price_hour=price_hour)
        systems.append(system)
    settings = {
        "threads": threads,
        "repeats": repeats,
        "batch_size": batch_size,
        "queries_b1_per_repeat": queries,
        "batches_per_repeat": batches,
        "heldout_inputs": len(texts),
        "price_kwh_usd": price_kwh,
        "price_hour_usd": price_hour,
        "watts_per_core_estimate": WATTS_PER_CORE,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    result = BenchResult(task.name, systems, settings, machine(), skipped)
    result.save(run.root / "bench.json")
    (run.root / "bench.svg").write_text(chart(result, task.agreement.threshold), encoding="utf-8")
    return result


def _systems(task: Any, run: Any, targets: list[str] | None, threads: int) -> tuple[list[dict], list[dict]]:
    from .digest import sha256_file
    from .exporters.base import Artifact
    from .targets import load_profile

    common = {"task": str(Path(task.source).resolve()) if task.source else "", "threads": threads}
    specs: list[dict] = []
    skipped: list[dict] = []
    if task.teacher.kind == "embedding":
        from .encoder import encoder_dir

        weights = encoder_dir(task.teacher.model) / "model.safetensors"
        size, runtime = (weights.stat().st_size if weights.is_file() else None), "pytorch (sentence-transformers)"
    else:
        size, runtime = None, f"{task.teacher.kind} teacher"
    specs.append(
        {**common, "name": "teacher", "kind": "teacher", "runtime": runtime, "precision": "fp32", "size_bytes": size}
    )
    specs[-1].update(source=getattr(task.teacher, "model", task.teacher.kind), report=str(run.report("teacher")))
    if not (run.student / "model.safetensors").is_file():
        raise InputError(f"no student in {run.student}: run `tsd-edge distill` first")
    specs.append(
        {
            **common,
            "name": "student",
            "kind": "student",
            "runtime": "pytorch eager",
            "precision": "fp32",
            "source": str(run.student),
            "student": str(run.student),
            "max_length": task.student.max_length,
            "size_bytes": (run.student / "model.safetensors").stat().st_size,
            "report": str(run.report("student")),
        }
    )
    if targets:
        names = [load_profile(t).name for t in targets]
    else:
        names = sorted(p.parent.name for p in (run.root / "compiled").glob("*/artifact.json"))
    for name in names:
        meta = run.compiled(name) / "artifact.json"
        if not meta.is_file():
            if targets:
                raise InputError(f"no compiled artifact for {name}: run `tsd-edge compile --target {name}`")
            continue
        artifact = Artifact.load_meta(meta)
        package = run.dist / f"{task.name}-{name}.tsdpkg"
        shipped = _packaged_sha(package, artifact.path.name) == sha256_file(artifact.path)
        files = [artifact.path, *(artifact.path.parent / f for f in artifact.extra_files)]
        specs.append(
            {
                **common,
                "name": name,
                "kind": "compiled",
                "runtime": artifact.backend,
                "precision": artifact.precision,
                "source": str(package if shipped else meta),
                "package": str(package) if shipped else None,
                "artifact": str(meta),
                "student": str(run.student),
                "max_length": task.student.max_length,
                "size_bytes": sum(f.stat().st_size for f in files),
                "report": str(run.report(name)),
            }
        )
    return specs, skipped


def _packaged_sha(package: Path, member: str) -> str | None:
    """The SHA-256 the package's manifest gives `member`, without unpacking (None: no such package)."""
    try:
        with tarfile.open(package, "r:gz") as tar:
            fh = tar.extractfile("manifest.json")
            manifest = json.loads(fh.read()) if fh else {}
    except (OSError, KeyError, tarfile.TarError, ValueError):
        return None
    return manifest.get("files", {}).get(member, {}).get("sha256")


class _Worker:
    """One system in its own process, driven by JSON lines over a pipe."""

    def __init__(self, spec: dict, warmup: list[str]) -> None:
        self.name = spec["name"]
        self.tmp = tempfile.TemporaryDirectory(prefix="tsd-bench-")
        path = Path(self.tmp.name) / "spec.json"
        path.write_text(json.dumps({**spec, "warmup": warmup, "scratch": self.tmp.name}), encoding="utf-8")
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(spec["threads"])
        self.stderr = open(Path(self.tmp.name) / "stderr.txt", "w", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tsd_edge.bench", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=env,
        )

    def receive(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = (Path(self.tmp.name) / "stderr.txt").read_text(encoding="utf-8").strip().splitlines()[-3:]
            return {"error": f"worker exited with {self.proc.returncode}: {' / '.join(tail)}"}
        return json.loads(line)

    def ask(self, command: dict) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.receive()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        self.tmp.cleanup()


# -- figures -----------------------------------------------------------------------------------------


def _summarise(s: System, runs: list[dict], flops: Callable[[list[str]], float] | None, **prices: Any) -> None:
    latencies = [ms for r in runs for ms in r["single_ms"]]
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    s.latency_ms = {"p50": float(p50), "p90": float(p90), "p99": float(p99), "n": len(latencies)}
    s.throughput_runs = [r["batch_queries"] / r["batch_s"] for r in runs]
    s.throughput_qps = float(np.median(s.throughput_runs))
    s.peak_rss_mib = max(r["hwm_mib"] for r in runs)
    if runs[0].get("model_s") is not None:
        s.model_ms_per_batch = float(np.median([1e3 * r["model_s"] / len(r["groups"]) for r in runs]))
    if flops is not None:
        done = sum(flops(texts) for r in runs for texts in r["groups"])
        s.mflop_per_query = done / sum(r["batch_queries"] for r in runs) / 1e6
        time_key = "model_s" if runs[0].get("model_s") is not None else "batch_s"
        s.gflops = float(np.median([sum(flops(texts) for texts in r["groups"]) / r[time_key] / 1e9 for r in runs]))
    measured = all(r["joules_single"] is not None for r in runs)
    n1 = sum(len(r["single_ms"]) for r in runs)
    n32 = sum(r["batch_queries"] for r in runs)
    s.cpu_s_per_query = {"b1": sum(r["cpu_single"] for r in runs) / n1, "b32": sum(r["cpu_batch"] for r in runs) / n32}
    if measured:
        j1, j32 = sum(r["joules_single"] for r in runs) / n1, sum(r["joules_batch"] for r in runs) / n32
        label, method = "measured", f"RAPL {RAPL}/energy_uj (whole package, while this system alone ran)"
    else:
        j1, j32 = (s.cpu_s_per_query[k] * WATTS_PER_CORE for k in ("b1", "b32"))
        label, method = "estimated", f"CPU time × {WATTS_PER_CORE:.2f} W per core (240 W TDP / 64 cores, EPYC 7B13)"
    s.energy = {"source": label, "method": method, "joules_per_1k_b1": 1e3 * j1, "joules_per_1k_b32": 1e3 * j32}
    share = prices["threads"] / (os.cpu_count() or 1)  # a `threads`-thread process rents that share of the machine
    energy_usd = j32 * 1e6 / 3.6e6 * prices["price_kwh"]
    machine_usd = prices["price_hour"] * share * 1e6 / s.throughput_qps / 3600
    s.cost_per_1m_usd = {"energy": energy_usd, "machine": machine_usd, "total": energy_usd + machine_usd}


def _flops_fn(spec: dict, task: Any, run: Any) -> Callable[[list[str]], float] | None:
    """FLOPs of one forward pass over a batch of texts, padded to its longest (as every system pads it):
    2 × the weights of every MatMul that has one (read from the student's ONNX graph) × tokens, plus
    2 × L² × hidden per sequence for each MatMul of two activations (attention scores, and their product
    with V), plus each Gemm (the head) once per sequence. The teacher's terms come from its config.json by
    the same rule, its lengths from its own tokenizer. Integer ops count as FLOPs."""
    from .tokenization import TextEncoder

    if spec["kind"] == "teacher":
        if task.teacher.kind != "embedding":
            return None
        from .encoder import encoder_dir

        folder = encoder_dir(task.teacher.model)
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        st = folder / "sentence_bert_config.json"
        longest = json.loads(st.read_text(encoding="utf-8"))["max_seq_length"] if st.is_file() else 512
        encode = TextEncoder(folder / "tokenizer.json", longest)
        h, inner, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
        per_token, per_seq, per_l2 = 2 * (4 * h * h + 2 * h * inner) * layers, 0, 2 * 2 * h * layers
    else:
        if not run.onnx.is_file():
            return None
        try:
            per_token, per_seq, per_l2 = onnx_flop_terms(run.onnx)
        except ImportError:
            return None
        encode = TextEncoder(run.student / "tokenizer.json", task.student.max_length)

    def flops(texts: list[str]) -> float:
        width = max(encode.lengths(texts), default=0)
        return len(texts) * (width * per_token + per_seq + width * width * per_l2)

    return flops


def onnx_flop_terms(path: Path) -> tuple[int, int, int]:
    """(FLOPs per token, per sequence, per sequence per L²) from a BERT-like ONNX graph (see `_flops_fn`)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {i.name: list(i.dims) for i in graph.initializer}
    per_token = per_seq = attention = 0
    hidden = 0
    for node in graph.node:
        dims = next((weights[x] for x in node.input[1:2] if x in weights), None)
        if node.op_type == "MatMul" and dims and len(dims) == 2:
            per_token += 2 * dims[0] * dims[1]
            hidden = hidden or dims[0]
        elif node.op_type == "MatMul":
            attention += 1
        elif node.op_type == "Gemm" and dims:
            per_seq += 2 * dims[0] * dims[1]
    return per_token, per_seq, 2 * hidden * attention


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "cpu": "unknown", "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and info["cpu"] == "unknown":
            info["cpu"] = value.strip()
        if key.strip() == "flags" and not info["flags"]:
            wanted = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
            info["flags"] = [f for f in wanted if f in value.split()]
    info["energy_counter"] = "rapl" if _rapl_uj() is not None else "none"
    return info


def _rapl_uj() -> int | None:
    try:
        return int((RAPL / "energy_uj").read_text())
    except (OSError, ValueError):
        return None


def _joules(start: int | None, end: int | None) -> float | None:
    if start is None or end is None:
        return None
    if end < start:  # the counter wrapped
        end += int((RAPL / "max_energy_range_uj").read_text())
    return (end - start) / 1e6


# -- outputs -----------------------------------------------------------------------------------------


def table(result: BenchResult) -> Any:
    from rich.table import Table

    estimated = any(s.energy.get("source") == "estimated" for s in result.systems)
    title = f"bench {result.task}: {result.machine['cpu']}, {result.settings['threads']} thread(s)"
    t = Table(title=title, title_justify="left")
    heads = ["system", "runtime", "b1 p50/p90/p99 ms", f"b{result.settings['batch_size']} q/s", "peak MiB"]
    heads += ["size MB", "params M", "agreement", "J/1k q" + (" (estimated)" if estimated else ""), "$/1M q"]
    for h in heads:
        t.add_column(h, justify="left" if h in ("system", "runtime") else "right")
    for s in result.systems:
        lat = s.latency_ms
        t.add_row(
            s.name,
            f"{s.runtime} {s.precision}",
            f"{lat['p50']:.2f}/{lat['p90']:.2f}/{lat['p99']:.2f}",
            f"{s.throughput_qps:,.0f}",
            f"{s.peak_rss_mib:.0f}",
            "" if s.size_bytes is None else f"{s.size_bytes / 1e6:.1f}",
            "" if s.parameters is None else f"{s.parameters / 1e6:.2f}",
            "—" if s.kind == "teacher" else ("" if s.agreement is None else f"{s.agreement:.4f}"),
            f"{s.energy['joules_per_1k_b32']:.1f}",
            f"{s.cost_per_1m_usd['total']:.3f}",
        )
    return t


def chart(result: BenchResult, threshold: float | None = None) -> str:
    """Latency at batch 1 (p50, log scale) against agreement with the teacher: one point per system."""
    import html
    import math

    points = [s for s in result.systems if s.latency_ms]
    width, height, left, right, top, bottom = 640, 360, 60, 150, 20, 50
    xs = [math.log10(max(s.latency_ms["p50"], 1e-3)) for s in points]
    lo_x, hi_x = math.floor(min(xs, default=0)), math.ceil(max(xs, default=1))
    hi_x = max(hi_x, lo_x + 1)
    ys = [1.0 if s.kind == "teacher" else (s.agreement or 0.0) for s in points] + ([threshold] if threshold else [])
    lo_y = max(0.0, math.floor((min(ys, default=0.5) - 0.02) * 20) / 20)

    def x(v: float) -> float:
        return left + (width - left - right) * (v - lo_x) / (hi_x - lo_x)

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1.0 - (v - lo_y) / (1.0 - lo_y or 1.0))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" role="img" '
        f'aria-label="latency against agreement" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        f'<line x1="{left}" x2="{width - right}" y1="{y(lo_y):.1f}" y2="{y(lo_y):.1f}" stroke="#000"/>',
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{y(lo_y):.1f}" stroke="#000"/>',
    ]
    for d in range(lo_x, hi_x + 1):
        parts.append(f'<text x="{x(d):.1f}" y="{y(lo_y) + 16:.1f}" text-anchor="middle">{10.0**d:g}</text>')
    parts.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 8}" text-anchor="middle">latency at batch 1, '
        "p50 (ms, log scale)</text>"
    )
    steps = round((1.0 - lo_y) / 0.05)
    for i in range(steps + 1):
        v = lo_y + i * 0.05
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    parts.append(f'<text x="14" y="{top + 120}" transform="rotate(-90 14 {top + 120})">agreement with teacher</text>')
    if threshold:
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
            'stroke="#1565c0" stroke-dasharray="6 4"/>'
        )
        parts.append(
            f'<text x="{width - right + 4}" y="{y(threshold) + 4:.1f}" fill="#1565c0">threshold {threshold}</text>'
        )
    placed: list[tuple[float, float, float]] = []  # (x0, x1, baseline) of labels drawn so far
    for s, lx, ay in sorted(zip(points, xs, ys, strict=False), key=lambda t: (-t[2], t[1])):
        colour = {"teacher": "#6a1b9a", "student": "#ef6c00"}.get(s.kind, "#2e7d32")
        label = f"{s.name} ({s.latency_ms['p50']:.2f} ms)"
        x0, ly = x(lx) + 8, y(ay) - 6
        x1 = x0 + 7 * len(label)  # about 7 px a character at 12 px
        while any(a < x1 and x0 < b and abs(ly - base) < 14 for a, b, base in placed):
            ly += 15  # move down until it overlaps no other label
        placed.append((x0, x1, ly))
        parts.append(f'<circle cx="{x(lx):.1f}" cy="{y(ay):.1f}" r="5" fill="{colour}"/>')
        parts.append(f'<text x="{x0:.1f}" y="{ly:.1f}">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# -- the worker: one system in its own process ----------------------------------------------------


def _status_mib(field_: str) -> float:
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(field_ + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _load(spec: dict) -> tuple[Callable[[list[str]], Any], Callable[[list[str]], dict] | None, Any, int | None]:
    """(answer texts → labels, encode, forward, parameters). encode/forward are None where the model's time
    cannot be separated from its input pipeline (the teacher)."""
    threads = spec["threads"]
    if spec["kind"] in ("teacher", "student"):
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
    if spec["kind"] == "teacher":
        from .task import load_task
        from .teachers import load_teacher

        teacher = load_teacher(load_task(Path(spec["task"])))
        params = None
        if hasattr(teacher, "prototypes"):
            from .encoder import load_encoder

            _ = teacher.prototypes
            params = sum(p.numel() for p in load_encoder(teacher.model).parameters())
        return (lambda texts: [r.label for r in teacher.answer(texts)]), None, None, params
    from .tokenization import TextEncoder

    if spec["kind"] == "student":
        from .student import StudentRunner, count_parameters

        folder = Path(spec["student"])
        runner: Any = StudentRunner.load(folder)
        params: int | None = count_parameters(runner.model)
        encode = TextEncoder(folder / "tokenizer.json", spec["max_length"])
        labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
    else:
        from .exporters import get_backend
        from .exporters.base import Artifact

        params = None
        if spec.get("package"):
            from .package import read_package

            pkg = read_package(Path(spec["package"]), Path(spec["scratch"]) / "package")  # removed by the parent
            artifact = Artifact.load_meta(pkg.file("artifact.json"))
            artifact.path = pkg.file(artifact.path.name)
            tokenizer, label_file = pkg.file("tokenizer.json"), pkg.file("labels.json")
        else:
            artifact = Artifact.load_meta(Path(spec["artifact"]))
            tokenizer, label_file = Path(spec["student"]) / "tokenizer.json", Path(spec["student"]) / "labels.json"
        runner = get_backend(artifact.backend).load(artifact, threads)
        encode = TextEncoder(tokenizer, spec["max_length"])
        labels = json.loads(label_file.read_text(encoding="utf-8"))
    return (lambda texts: [labels[i] for i in runner.run(encode(texts)).argmax(1)]), encode, runner.run, params


def _measure(answer: Callable, encode: Callable | None, forward: Callable | None, command: dict) -> dict:
    single_ms = []
    cpu0, e0 = time.process_time(), _rapl_uj()
    for text in command["single"]:
        t0 = time.perf_counter()
        answer([text])
        single_ms.append(1e3 * (time.perf_counter() - t0))
    cpu1, e1 = time.process_time(), _rapl_uj()
    model_s, queries = 0.0, 0
    start = time.perf_counter()
    for texts in command["batches"]:
        if encode is not None and forward is not None:
            batch = encode(texts)
            t0 = time.perf_counter()
            logits = forward(batch)
            model_s += time.perf_counter() - t0
            logits.argmax(1)
        else:
            answer(texts)
        queries += len(texts)
    batch_s = time.perf_counter() - start
    cpu2, e2 = time.process_time(), _rapl_uj()
    return {
        "single_ms": single_ms,
        "batch_s": batch_s,
        "batch_queries": queries,
        "model_s": model_s if encode is not None else None,
        "cpu_single": cpu1 - cpu0,
        "cpu_batch": cpu2 - cpu1,
        "joules_single": _joules(e0, e1),
        "joules_batch": _joules(e1, e2),
        "hwm_mib": _status_mib("VmHWM"),
    }


def _worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # anything a library writes to stdout goes to stderr, not into the protocol

    def send(msg: dict) -> None:
        channel.write(json.dumps(msg) + "\n")
        channel.flush()

    start = time.perf_counter()
    try:
        answer, encode, forward, params = _load(spec)
        for text in spec["warmup"][:4]:
            answer([text])
        answer(spec["warmup"])
    except Exception as exc:  # reported to the parent, which skips this system and says why
        send({"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"})
        return
    send({"load_s": time.perf_counter() - start, "rss_mib": _status_mib("VmRSS"), "parameters": params})
    for line in sys.stdin:
        try:
            send(_measure(answer, encode, forward, json.loads(line)))
        except Exception as exc:
            send({"error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    _worker(sys.argv[1])
