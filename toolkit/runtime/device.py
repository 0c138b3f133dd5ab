"""tsd-edge's device side: build, measure or re-run an artifact on the machine it is for, through the runtime.

The host (tsd_edge.device) ships this package to the device as a zipapp with the request — a device reached
over SSH need not have tsd-edge installed — and runs it with the device's python3 (3.8+; the standard
library, numpy and the target's runtime: onnxruntime, or TensorRT's Python bindings with libcudart):

    python3 - probe < facts.py                 one JSON object of facts on stdout (nothing is written)
    python3 tsd-runtime.pyz build request.json    builds, runs the held-out inputs, writes response.json beside it
    python3 tsd-runtime.pyz bench request.json    loads a built artifact, measures it, writes response.json
    python3 tsd-runtime.pyz logits request.json   verifies a .tsdpkg, runs its artifact (the gate's --device)

Every artifact runs through `tsd_edge.runtime.backends.open_runner`, the runner the gate, `predict` and
`serve` use; a TensorRT engine is built by `tsd_edge.runtime.backends.tensorrt_build`, the builder the host
uses. Protocol 2, all files in the folder of request.json:

    request.json   {"protocol": 2, "backend": "onnxruntime" | "tensorrt", "model": "<uploaded ONNX>",
                    "inputs": "inputs.npz", "threads": int | null, "providers": [str] | null,
                    "tensorrt": {"engine", "timing_cache", "settings": BuildSettings.to_dict()} | null}
    inputs.npz     count (scalar), and per batch i: input_ids_<i>, attention_mask_<i> (int64, batch x seq),
                   index_<i> (int64: the rows of the logits those inputs fill)
    logits.npy     float32, count x labels, in input order
    response.json  {"protocol": 2, "ok": true, "artifact": name, "files": {name: sha256}, "logits": "logits.npy",
                    "build": {...}, "run": {"runtime", "providers", "inputs", "batches", "seconds"}}
                   or {"protocol": 2, "ok": false, "error": "<one line>", "kind": "integrity" | "runtime_missing" |
                   "input" | "error", "package": "<pip package>" (runtime_missing only)}

logits (`tsd-edge gate PKG --device`): request.json is {"protocol": 2, "package": "<uploaded .tsdpkg>",
"package_sha256": the host's SHA-256 of it, "inputs": "inputs.npz" (as above, tokenized on the host with the
package's own tokenizer), "threads"}. The package is verified here as the gate verifies it (read_package: every
member's SHA-256 against the manifest) before its artifact runs. response.json: {"protocol": 2, "ok": true,
"files": {"logits.npy": sha256}, "logits": "logits.npy", "run": {"runtime", "describe", "providers", "inputs",
"batches", "seconds", "python", "machine"}, "package": {"task", "target", "backend"}}.

bench (`tsd-edge bench --device`): request.json is {"protocol": 2, "backend", "model": the artifact (model.onnx
or model.engine), "threads", "providers", "inputs": "<npz>", "plan": [{"single": n, "batches": [parts, ...]},
...] (one entry per repeat), "power_root": str | null}; the npz holds, already tokenized on the host,
s<r>_<i>_input_ids / _attention_mask (batch-1 query i of repeat r) and b<r>_<g>_<p>_input_ids / _attention_mask
(part p of batch g: the batch sorted by length and cut into sub-batches, as runtime.infer.predict_logits runs
it). response.json: {"protocol": 2, "ok": true, "load_s", "rss_mib", "runtime", "providers", "machine": {...},
"power": {"source", "rail", "rails"} | null, "runs": [{"single_ms", "batch_s", "batch_queries", "model_s",
"cpu_single", "cpu_batch", "joules_single", "joules_batch", "hwm_mib"}, ...]}: the figures of
tsd_edge.bench.worker, per repeat. Energy comes from the board's INA3221 power monitors where the kernel exposes
them (tsd_edge.runtime.power), sampled through each phase and integrated; null otherwise (the host then
estimates it from the CPU time).

onnxruntime: the uploaded ONNX is the artifact (the host built it: portable, byte for byte what the
host would ship); it is loaded with the requested execution providers that are installed, in the
requested order, and the response records the ones the session registered. tensorrt: the engine is built
here from the host's settings for this device's TensorRT, then run by the runtime's TensorRT runner.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

from ..digest import sha256_file
from ..errors import BuildError, InputError, RuntimeMissingError, TsdEdgeError
from . import facts
from .facts import PROTOCOL

REQUEST, RESPONSE, INPUTS, LOGITS = "request.json", "response.json", "inputs.npz", "logits.npy"
ENGINE, TIMING_CACHE = "model.engine", "timing.cache"
ZIPAPP = "tsd-runtime.pyz"

Response = Dict[str, Any]


class DeviceError(TsdEdgeError):
    """A failure the device side explains in one line (sent back as response.error)."""


# -- inputs and the run ---------------------------------------------------------------------------


def _batches(path: Path) -> Iterator[tuple[int, Any, dict[str, Any]]]:
    import numpy as np

    data = np.load(path)
    count = int(data["count"])
    i = 0
    while f"index_{i}" in data.files:
        yield (
            count,
            data[f"index_{i}"],
            {"input_ids": data[f"input_ids_{i}"], "attention_mask": data[f"attention_mask_{i}"]},
        )
        i += 1


def run_all(run: Callable[[dict[str, Any]], Any], inputs: Path) -> tuple[Any, int, float]:
    """Every batch of `inputs` through a runner's `run`, logits back in input order: (logits, batches, seconds)."""
    import numpy as np

    logits, batches, start = None, 0, time.perf_counter()
    for count, index, batch in _batches(inputs):
        out = np.asarray(run(batch), dtype=np.float32)
        if logits is None:
            logits = np.zeros((count, out.shape[1]), dtype=np.float32)
        logits[index] = out
        batches += 1
    if logits is None:
        raise DeviceError(f"{inputs.name} holds no batch")
    return logits, batches, time.perf_counter() - start


def _save_logits(logits: Any, here: Path) -> dict[str, str]:
    import numpy as np

    np.save(here / LOGITS, logits)
    return {LOGITS: sha256_file(here / LOGITS)}


def _open(backend: str, path: Path, threads: int | None, providers: list[str] | None) -> Any:
    """The runtime's runner for an artifact file (the one runner per backend the gate and predict use)."""
    from .artifact import Artifact
    from .backends import open_runner

    if backend not in ("onnxruntime", "tensorrt"):
        raise DeviceError(f"the device side builds and measures onnxruntime and tensorrt artifacts, not {backend}")
    build = {"providers": list(providers)} if providers else {}
    return open_runner(Artifact(backend=backend, path=path, precision="", build=build), threads)


# -- build ----------------------------------------------------------------------------------------


def build(request: dict[str, Any], here: Path) -> Response:
    """Build the artifact here (TensorRT: the engine; ONNX Runtime: the host's ONNX as it is), run the held-out
    inputs through it, and say what was built and how it ran."""
    backend, model = request["backend"], here / request["model"]
    extra: list[str] = []
    record: dict[str, Any] = {}
    if backend == "tensorrt":
        from .backends.tensorrt import import_tensorrt
        from .backends.tensorrt_build import BuildSettings, build_engine

        trt = import_tensorrt()
        spec = request["tensorrt"]
        settings = BuildSettings.from_dict(spec["settings"])
        engine, cache = here / spec["engine"], here / spec["timing_cache"]
        start = time.perf_counter()
        build_engine(model, engine, settings, cache)
        gpu = facts.gpu() or {}
        record = {
            "tensorrt": str(trt.__version__),
            "device_name": gpu.get("name"),
            "compute_capability": gpu.get("compute_capability"),
            "onnx_sha256": sha256_file(model),
            **settings.record(),
            "build_seconds": round(time.perf_counter() - start, 1),
        }
        l4t = facts.l4t()
        if l4t:
            record["l4t"] = l4t
        artifact, extra = engine, [spec["timing_cache"]]
    elif backend == "onnxruntime":
        artifact = model
    else:
        raise DeviceError(f"no device build for backend {backend}: build it on the host (drop --device)")
    with _open(backend, artifact, request.get("threads"), request.get("providers")) as runner:
        if backend == "onnxruntime":
            record = {"onnxruntime": runner.runtime.split(" ", 1)[-1], "providers": runner.providers}
        logits, batches, seconds = run_all(runner.run, here / request["inputs"])
        run = {"runtime": runner.runtime, "providers": runner.providers}
    files = {name: sha256_file(here / name) for name in [artifact.name, *extra]}
    files.update(_save_logits(logits, here))
    run.update({"inputs": int(logits.shape[0]), "batches": batches, "seconds": round(seconds, 3)})
    record.update({"hostname": socket.gethostname(), "machine": platform.machine()})
    return {"artifact": artifact.name, "files": files, "logits": LOGITS, "build": record, "run": run}


# -- logits: the gate, re-run on the device -------------------------------------------------------


def logits(request: dict[str, Any], here: Path) -> Response:
    """Verify the uploaded package as the gate does, run its artifact on the pre-tokenized held-out inputs."""
    from .artifact import Artifact
    from .backends import open_runner
    from .package import PackageIntegrityError, read_package

    path = here / request["package"]
    if request.get("package_sha256") and sha256_file(path) != request["package_sha256"]:
        raise PackageIntegrityError(f"{path.name} arrived changed (its SHA-256 is not the host's): run the gate again")
    pkg = read_package(path, here / "package")
    artifact = Artifact.load_meta(pkg.file("artifact.json"))
    artifact.path = pkg.file(artifact.path.name)
    labels = json.loads(pkg.file("labels.json").read_text(encoding="utf-8"))
    with open_runner(artifact, request.get("threads")) as runner:
        out, batches, seconds = run_all(runner.run, here / request["inputs"])
        runtime = str(getattr(runner, "runtime", artifact.backend))
        providers = getattr(runner, "providers", None)
    if out.shape[1] != len(labels):
        raise DeviceError(f"the artifact gave {out.shape[1]} outputs for {len(labels)} labels: the package is unsound")
    python = platform.python_version()
    return {
        "files": _save_logits(out, here),
        "logits": LOGITS,
        "run": {
            "runtime": runtime,
            "describe": f"{runtime} on {platform.machine()} Python {python}",
            "providers": providers,
            "inputs": int(out.shape[0]),
            "batches": batches,
            "seconds": round(seconds, 3),
            "python": python,
            "machine": platform.machine(),
        },
        "package": {
            "task": pkg.manifest.get("task"),
            "target": pkg.manifest.get("target"),
            "backend": artifact.backend,
        },
    }


# -- bench ----------------------------------------------------------------------------------------


def _status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


Batch = Dict[str, Any]
Repeat = Tuple[List[Batch], List[List[Batch]]]


def _bench_inputs(path: Path, plan: list[dict[str, Any]]) -> list[Repeat]:
    """The plan's pre-tokenized inputs, all read into memory before anything is measured."""
    import numpy as np

    data = np.load(path)

    def pair(key: str) -> Batch:
        return {"input_ids": data[key + "_input_ids"], "attention_mask": data[key + "_attention_mask"]}

    repeats = []
    for r, step in enumerate(plan):
        single = [pair(f"s{r}_{i}") for i in range(step["single"])]
        batches = [[pair(f"b{r}_{g}_{p}") for p in range(parts)] for g, parts in enumerate(step["batches"])]
        repeats.append((single, batches))
    return repeats


def _measure(infer: Callable[[Batch], Any], meter: Any, single: list[Batch], batches: list[list[Batch]]) -> Response:
    """One repeat, as tsd_edge.bench.worker measures it: batch-1 queries one at a time, then the batches
    (each run part by part, its sub-batches in length order); CPU time and energy per phase."""
    single_ms = []
    cpu0 = time.process_time()
    if meter:
        meter.start()
    for batch in single:
        t0 = time.perf_counter()
        infer(batch)
        single_ms.append(1e3 * (time.perf_counter() - t0))
    joules_single = meter.stop() if meter else None
    cpu1 = time.process_time()
    if meter:
        meter.start()
    queries, start = 0, time.perf_counter()
    for parts in batches:
        for part in parts:
            infer(part)
            queries += int(part["input_ids"].shape[0])
    batch_s = time.perf_counter() - start
    joules_batch = meter.stop() if meter else None
    cpu2 = time.process_time()
    return {
        "single_ms": single_ms,
        "batch_s": batch_s,
        "batch_queries": queries,
        "model_s": batch_s,  # no tokenization here: the batches' time is the model's
        "cpu_single": cpu1 - cpu0,
        "cpu_batch": cpu2 - cpu1,
        "joules_single": joules_single,
        "joules_batch": joules_batch,
        "hwm_mib": _status_mib("VmHWM"),
    }


def bench(request: dict[str, Any], here: Path) -> Response:
    """Load the artifact with the runtime's runner, warm it up, and measure every repeat of the plan."""
    from .power import POWER_ROOT, PowerMeter, power_rails

    repeats = _bench_inputs(here / request["inputs"], request["plan"])
    start = time.perf_counter()
    runner = _open(request["backend"], here / request["model"], request.get("threads"), request.get("providers"))
    with runner:
        single, batches = repeats[0]
        for batch in single[:4]:
            runner.run(batch)
        for part in batches[0] if batches else []:
            runner.run(part)
        load_s = time.perf_counter() - start
        rss = _status_mib("VmRSS")
        rails = power_rails(request.get("power_root") or POWER_ROOT)
        meter = PowerMeter(rails) if rails else None
        runs = [_measure(runner.run, meter, single, batches) for single, batches in repeats]
        run = {"runtime": runner.runtime, "providers": runner.providers}
    power = None
    if meter:
        power = {"source": "ina3221", "rail": meter.rail, "rails": [label for label, _ in rails]}
    machine = {
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "l4t": facts.l4t(),
    }
    return {"load_s": load_s, "rss_mib": rss, "machine": machine, "power": power, "runs": runs, **run}


# -- main -----------------------------------------------------------------------------------------

COMMANDS: dict[str, Callable[[dict[str, Any], Path], Response]] = {"build": build, "bench": bench, "logits": logits}


def _read_request(path: Path) -> dict[str, Any]:
    request = json.loads(path.read_text(encoding="utf-8"))
    if request.get("protocol") != PROTOCOL:
        raise InputError(
            f"request protocol {request.get('protocol')} but this runtime speaks {PROTOCOL}: use the same tsd-edge "
            "version on both sides"
        )
    return dict(request)


def failure(exc: BaseException) -> Response:
    """An exception as response.json's one-line error, with its kind (the host raises the matching error)."""
    from .package import PackageIntegrityError

    message = str(exc) if isinstance(exc, TsdEdgeError) else f"{type(exc).__name__}: {exc}"
    out: Response = {"error": " ".join(message.split()), "kind": "error"}
    if isinstance(exc, PackageIntegrityError):
        out["kind"] = "integrity"
    elif isinstance(exc, RuntimeMissingError):
        out.update(kind="runtime_missing", package=exc.package)
    elif isinstance(exc, ImportError) and exc.name in ("numpy", "onnxruntime", "openvino", "tensorrt"):
        out.update(kind="runtime_missing", package=exc.name)
        out["error"] = f"this device's python3 has no {exc.name}: pip install {exc.name}"
    elif isinstance(exc, InputError):
        out["kind"] = "input"
    elif isinstance(exc, BuildError):
        out["kind"] = "build"
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["probe"]:
        sys.stdout.write(json.dumps(facts.probe()) + "\n")
        return 0
    if len(argv) != 2 or argv[0] not in COMMANDS:
        sys.stderr.write(f"usage: {ZIPAPP} probe | {' | '.join(f'{c} request.json' for c in COMMANDS)}\n")
        return 2
    request_path = Path(argv[1]).resolve()
    here = request_path.parent
    try:
        response: Response = {"protocol": PROTOCOL, "ok": True}
        response.update(COMMANDS[argv[0]](_read_request(request_path), here))
        code = 0
    except Exception as exc:
        response = {"protocol": PROTOCOL, "ok": False, **failure(exc)}
        code = 1
    (here / RESPONSE).write_text(json.dumps(response, indent=2) + "\n", encoding="utf-8")
    return code
