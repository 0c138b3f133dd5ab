"""The parent side of a bench run: pick the systems and inputs, start a worker per system, measure
them round-robin, and summarise each into latency, throughput, memory, energy and cost."""

from __future__ import annotations

import json
import os
import tarfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, TsdEdgeError
from .energy import RAPL, WATTS_PER_CORE, machine
from .flops import flops_fn
from .render import chart
from .results import BenchResult, System
from .worker import Worker


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
    bucket: int = 8,
    price_kwh: float = 0.15,
    price_hour: float = 0.10,
    price_input_mtok: float = 0.15,
    price_output_mtok: float = 0.60,
    progress: Callable[[str], None] | None = None,
    device: Any = None,
) -> BenchResult:
    """Measure every system; write runs/<task>/bench.json and bench.svg. `queries` batch-1 calls and
    `batches` batches of `batch_size` per system per repeat, on held-out inputs (different ones each repeat).
    A teacher whose answers carry token counts (an HTTP endpoint) is also charged per token: USD per million
    prompt / completion tokens. `device` (an SshDevice): compiled artifacts are also, or only, measured there
    (bench/remote.py), as `<target>@<host>` rows; teacher and student run here."""
    from ..agreement import AgreementReport
    from ..store import PairStore
    from ..teachers import load_teacher

    say = progress or (lambda _msg: None)
    if repeats < 1 or queries < 1 or batches < 1 or batch_size < 1 or threads < 1:
        raise InputError("--repeats, --queries, --batches, --batch-size and --threads must be at least 1")
    if not run.pairs.is_file():
        raise InputError(f"no pair store in {run.pairs}: run `tsd-edge run {task.name}` first")
    teacher = load_teacher(task)
    with PairStore(run.pairs) as store:
        texts = [p.input for p in store.pairs(teacher.fingerprint, split="heldout", relevant=True)]
        tokens = tokens_per_query(store.pairs(teacher.fingerprint, status=None))
    if not texts:
        raise InputError(f"no held-out inputs in {run.pairs}: run `tsd-edge collect` first")
    if bucket < 0:
        raise InputError("--bucket must be 0 (run each batch whole) or more")
    specs, skipped = _systems(task, run, targets, threads)
    on_device: list[dict] = []
    if device is not None:
        from . import remote

        specs, on_device, refused = remote.plan(specs, device)
        skipped += refused
    for spec in [*specs, *on_device]:
        if spec["kind"] != "teacher":  # the teacher runs as its users run it
            spec["bucket"] = bucket or None
    per_repeat = queries + batches * batch_size
    slices = [[texts[(r * per_repeat + i) % len(texts)] for i in range(per_repeat)] for r in range(repeats)]
    if on_device:  # first: a device that cannot be reached fails before the local runs
        got, device_groups = remote.measure(
            device, on_device, task, run, slices, queries=queries, batch_size=batch_size, bucket=bucket,
            threads=threads, progress=say,
        )  # fmt: skip

    workers = {s["name"]: Worker(s, texts[:batch_size]) for s in specs}
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
    flops = {s["name"]: flops_fn(s, task, run) for s in specs}
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
        if spec["kind"] == "teacher" and tokens:
            system.tokens_per_query = tokens
            usd = tokens["prompt"] * price_input_mtok + tokens["completion"] * price_output_mtok  # per 1M queries
            system.cost_per_1m_usd["tokens"] = usd
            system.cost_per_1m_usd["total"] += usd
        systems.append(system)
    settings = {
        "threads": threads,
        "repeats": repeats,
        "batch_size": batch_size,
        "queries_b1_per_repeat": queries,
        "batches_per_repeat": batches,
        "bucket": bucket,
        "heldout_inputs": len(texts),
        "price_kwh_usd": price_kwh,
        "price_hour_usd": price_hour,
        "price_input_mtok_usd": price_input_mtok,
        "price_output_mtok_usd": price_output_mtok,
        "watts_per_core_estimate": WATTS_PER_CORE,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if on_device:
        flops_on_device = {s["name"]: flops_fn(s, task, run) for s in on_device}
        params = ready.get("student", {}).get("parameters")
        more, missed = remote.rows(
            got, on_device, device_groups, flops_on_device, params, threads=threads, price_kwh=price_kwh,
            price_hour=price_hour,
        )  # fmt: skip
        systems += more
        skipped += missed
        settings["device"] = remote.settings(got)
    result = BenchResult(task.name, systems, settings, machine(), skipped)
    result.save(run.root / "bench.json")
    (run.root / "bench.svg").write_text(chart(result, task.agreement.threshold), encoding="utf-8")
    return result


def _systems(task: Any, run: Any, targets: list[str] | None, threads: int) -> tuple[list[dict], list[dict]]:
    from ..digest import sha256_file
    from ..runtime.artifact import Artifact
    from ..targets import load_profile

    common = {"task": str(Path(task.source).resolve()) if task.source else "", "threads": threads}
    specs: list[dict] = []
    skipped: list[dict] = []
    if task.teacher.kind == "embedding":
        from ..encoder import encoder_dir

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


def tokens_per_query(pairs: Iterable[Any]) -> dict[str, float] | None:
    """Mean prompt and completion tokens per answer, over the stored answers that report them (None: none do,
    as for a local teacher). Rejected answers count: they were paid for."""
    counted = [(p.tokens_in or 0, p.tokens_out or 0) for p in pairs if p.tokens_in is not None or p.tokens_out]
    if not counted:
        return None
    prompt, completion = np.mean(counted, axis=0)
    return {"prompt": float(prompt), "completion": float(completion), "answers": len(counted)}


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
