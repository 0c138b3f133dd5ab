"""`tsd-edge bench --device ssh://user@host`: compiled artifacts measured on the device, over SSH.

    plan      which systems run here, which on the device (teacher and eager student: here, always)
    measure   tokenize every repeat's inputs here, upload, `tsd-runtime.pyz bench` there, one artifact at a time
    rows      each device's figures as a `System` named `<target>@<host>`, beside the local ones

An artifact built on that device (`compile --device`, its `device_run`) runs there only; another ONNX Runtime
artifact runs both here and there (same bytes, two machines). A TensorRT engine built elsewhere, and OpenVINO
artifacts, are not sent (an engine runs only on the GPU and TensorRT it was built with; the device side speaks
ONNX Runtime and TensorRT).

The device answers pre-tokenized inputs: it has no `tokenizers`, so tokenization is not in its time (it is in
the local systems' time). Each batch is sorted by length and cut into sub-batches of `--bucket`, as
`toolkit/infer.predict_logits` runs it. Energy: the board's INA3221 rails where the device exposes them
("measured"), else its CPU time × DEVICE_WATTS_PER_CORE ("estimated").
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .energy import WATTS_PER_CORE
from .results import System

# The estimate's power per busy core on a device without readable power rails. x86_64: the host's figure
# (energy.py). aarch64: a Jetson Orin Nano's 15 W mode budget over its 6 Cortex-A78AE cores, 2.5 W a core
# (the whole module's budget: an upper bound for the CPU's share). Anything else: the x86 figure.
DEVICE_WATTS_PER_CORE = {"x86_64": WATTS_PER_CORE, "aarch64": 15.0 / 6}
WATTS_SOURCE = {
    "x86_64": "240 W TDP / 64 cores, EPYC 7B13",
    "aarch64": "Jetson Orin Nano 15 W mode / 6 cores",
}


def plan(specs: list[dict], device: Any) -> tuple[list[dict], list[dict], list[dict]]:
    """(systems measured here, systems measured on `device`, skipped). The local ones' runtime says "on this
    host"; each device system is its compiled spec renamed `<target>@<host>`, with the files to upload."""
    from ..runtime.artifact import Artifact

    local: list[dict] = []
    remote: list[dict] = []
    skipped: list[dict] = []
    for spec in specs:
        if spec["kind"] != "compiled":
            local.append({**spec, "runtime": f"{spec['runtime']} on this host"})
            continue
        artifact = Artifact.load_meta(Path(spec["artifact"]))
        built_on = (artifact.build.get("device_run") or {}).get("device")
        name = f"{spec['name']}@{device.host}"
        if built_on != device.url:
            local.append({**spec, "runtime": f"{spec['runtime']} on this host"})
        if built_on is not None and built_on != device.url:
            skipped.append({"name": name, "reason": f"built on {built_on}, not on {device.url}"})
            continue
        if artifact.backend == "tensorrt" and built_on is None:
            reason = "a TensorRT engine runs only where it was built: `tsd-edge compile --target T --device URL`"
            skipped.append({"name": name, "reason": reason})
            continue
        if artifact.backend not in ("onnxruntime", "tensorrt"):
            skipped.append(
                {"name": name, "reason": f"the device side runs onnxruntime and tensorrt, not {artifact.backend}"}
            )
            continue
        files = [artifact.path, *(artifact.path.parent / f for f in artifact.extra_files)]
        if artifact.backend == "tensorrt":
            files = [artifact.path]  # the engine alone (the timing cache is the build's)
        remote.append(
            {
                **spec,
                "name": name,
                "target": spec["name"],
                "backend": artifact.backend,
                "files": [str(f) for f in files],
                "providers": artifact.build.get("providers"),
                "source": f"{device.url}: {spec['artifact']}",
            }
        )
    return local, remote, skipped


def measure(
    device: Any,
    specs: list[dict],
    task: Any,
    run: Any,
    slices: list[list[str]],
    *,
    queries: int,
    batch_size: int,
    bucket: int,
    threads: int,
    progress: Callable[[str], None],
) -> tuple[Any, list[list[list[str]]]]:
    """Run every device system's repeats there: (the DeviceBench, each repeat's groups of texts for the FLOP count)."""
    from ..device.protocol import write_bench_inputs
    from ..device.remote import BenchJob, bench_on_device
    from ..device.ssh import import_asyncssh
    from ..runtime.tokenizer import TextEncoder, length_batches

    import_asyncssh()  # before any work: without it, say which extra to install
    encode = TextEncoder(run.student / "tokenizer.json", task.student.max_length)
    repeats, groups_per_repeat = [], []
    for chunk in slices:
        single = [encode([text]) for text in chunk[:queries]]
        rows = chunk[queries:]
        groups = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
        batches = []
        for texts in groups:
            ids = encode.ids(texts)
            parts = length_batches([len(r) for r in ids], bucket or len(texts))
            batches.append([encode.pad([ids[i] for i in idx]) for idx in parts])
        repeats.append((single, batches))
        groups_per_repeat.append(groups)
    staging = Path(tempfile.mkdtemp(prefix="tsd-bench-device-"))
    try:
        inputs = staging / "bench.npz"
        order = write_bench_inputs(inputs, repeats)
        jobs = [
            BenchJob(s["name"], s["backend"], [Path(f) for f in s["files"]], threads, s["providers"]) for s in specs
        ]
        progress(f"measuring {', '.join(s['name'] for s in specs)} on {device.url}")
        got = bench_on_device(device, jobs, inputs, order, staging / "session")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return got, groups_per_repeat


def rows(
    got: Any,
    specs: list[dict],
    groups: list[list[list[str]]],
    flops: dict[str, Any],
    parameters: int | None,
    *,
    threads: int,
    price_kwh: float,
    price_hour: float,
) -> tuple[list[System], list[dict]]:
    """Each device response as a `System` (figures summarised as the local ones are), and the skipped ones."""
    from ..agreement import AgreementReport
    from .measure import _summarise

    systems: list[System] = []
    skipped = [{"name": n, "reason": r} for n, r in got.errors.items()]
    for spec in specs:
        response = got.responses.get(spec["name"])
        if response is None:
            continue
        report = Path(spec["report"])
        agreement = AgreementReport.load(report) if report.is_file() else None
        providers = response.get("providers")
        runtime = response["runtime"] + (f" ({', '.join(providers)})" if providers else "")
        system = System(
            name=spec["name"],
            kind="compiled",
            runtime=f"{runtime} on {got.device.host} over SSH",
            precision=spec["precision"],
            source=spec["source"],
            size_bytes=spec["size_bytes"],
            parameters=parameters,
            agreement=agreement.agreement if agreement else None,
            agreement_n=agreement.n if agreement else None,
            rss_after_load_mib=response["rss_mib"],
            load_s=response["load_s"],
        )
        runs = [{**r, "groups": g} for r, g in zip(response["runs"], groups, strict=True)]
        machine = response["machine"]
        cores = machine.get("cores") or 1
        _summarise(system, runs, flops.get(spec["name"]), threads=threads, price_kwh=price_kwh, price_hour=price_hour)
        _device_energy(system, runs, response, cores=cores, threads=threads, price_kwh=price_kwh, price_hour=price_hour)
        systems.append(system)
    return systems, skipped


def settings(got: Any) -> dict[str, Any]:
    """The device's record for bench.json's settings: address, description, machine, power rails, timings."""
    machines = [r["machine"] for r in got.responses.values()]
    powers = [r.get("power") for r in got.responses.values()]
    return {
        "url": got.device.url,
        "where": got.where,
        "machine": machines[0] if machines else None,
        "power": powers[0] if powers else None,
        "tokenization": "on this host (the device has no tokenizers): not in the device's time",
        "seconds": got.seconds,
    }


def _device_energy(
    s: System, runs: list[dict], response: dict, *, cores: int, threads: int, price_kwh: float, price_hour: float
) -> None:
    """Energy from the device's rails, or its CPU time × the device's per-core figure; cost on the device's cores."""
    n1 = sum(len(r["single_ms"]) for r in runs)
    n32 = sum(r["batch_queries"] for r in runs)
    power = response.get("power")
    if power and all(r["joules_single"] is not None and r["joules_batch"] is not None for r in runs):
        j1, j32 = sum(r["joules_single"] for r in runs) / n1, sum(r["joules_batch"] for r in runs) / n32
        label = "measured"
        method = f"INA3221 rail {power['rail']} on the device, sampled through each phase and integrated"
        method += " (the whole module, while this system alone ran there)"
    else:
        arch = response["machine"].get("machine") or "x86_64"
        watts = DEVICE_WATTS_PER_CORE.get(arch, WATTS_PER_CORE)
        j1, j32 = (s.cpu_s_per_query[k] * watts for k in ("b1", "b32"))
        label = "estimated"
        method = f"the device's CPU time × {watts:.2f} W per core ({WATTS_SOURCE.get(arch, WATTS_SOURCE['x86_64'])})"
        method += "; no INA3221 power rails readable there"
    s.energy = {"source": label, "method": method, "joules_per_1k_b1": 1e3 * j1, "joules_per_1k_b32": 1e3 * j32}
    energy_usd = j32 * 1e6 / 3.6e6 * price_kwh
    machine_usd = price_hour * min(1.0, threads / cores) * 1e6 / (s.throughput_qps or 1) / 3600
    s.cost_per_1m_usd = {"energy": energy_usd, "machine": machine_usd, "total": energy_usd + machine_usd}
