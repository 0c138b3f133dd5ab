#!/usr/bin/env python3
"""tsd-edge's device side: probe this machine, or build an artifact here and run held-out inputs on it.

The host uploads this one file and runs it with the device's python3. It needs Python >= 3.6, numpy
and the target's runtime (onnxruntime, or TensorRT's Python bindings with the CUDA runtime library);
it never imports tsd_edge, which a device does not have.

    python3 - probe < remote_build.py           one JSON object of facts on stdout (nothing is written)
    python3 remote_build.py build request.json   builds, runs, writes response.json beside request.json
    python3 remote_build.py bench request.json   loads a built artifact, measures it, writes response.json

Protocol 1, all files in the folder of request.json:

    request.json   {"protocol": 1, "backend": "onnxruntime" | "tensorrt", "model": "<uploaded ONNX>",
                    "inputs": "inputs.npz", "threads": int | null, "providers": [str] | null,
                    "tensorrt": {"engine", "timing_cache", "min_shape", "opt_shape", "max_shape",
                                 "strongly_typed", "builder_flags", "dla_core", "workspace_mib"} | null}
    inputs.npz     count (scalar), and per batch i: input_ids_<i>, attention_mask_<i> (int64, batch x seq),
                   index_<i> (int64: the rows of the logits those inputs fill)
    logits.npy     float32, count x labels, in input order
    response.json  {"protocol": 1, "ok": true, "artifact": name, "files": {name: sha256}, "logits": "logits.npy",
                    "build": {...}, "run": {"runtime", "providers", "inputs", "batches", "seconds"}}
                   or {"protocol": 1, "ok": false, "error": "<one line>"}

bench (same protocol, `tsd-edge bench --device`): request.json is {"protocol": 1, "backend", "model": the
artifact (model.onnx or model.engine), "threads", "providers", "inputs": "<npz>", "plan": [{"single": n,
"batches": [parts, ...]}, ...] (one entry per repeat), "power_root": str | null}; the npz holds, already
tokenized on the host, s<r>_<i>_input_ids / _attention_mask (batch-1 query i of repeat r) and
b<r>_<g>_<p>_input_ids / _attention_mask (part p of batch g: the batch sorted by length and cut into
sub-batches, as toolkit/infer.predict_logits runs it). response.json: {"protocol": 1, "ok": true, "load_s",
"rss_mib", "runtime", "providers", "machine": {...}, "power": {"source", "rail", "rails"} | null,
"runs": [{"single_ms", "batch_s", "batch_queries", "model_s", "cpu_single", "cpu_batch", "joules_single",
"joules_batch", "hwm_mib"}, ...]}: the figures of tsd_edge.bench.worker, per repeat. Energy comes from the
board's INA3221 power monitors where the kernel exposes them (`power_rails`), sampled through each phase and
integrated; null otherwise (the host then estimates it from the CPU time).

onnxruntime: the uploaded ONNX is the artifact (the host built it: portable, byte for byte what the
host would ship); this side loads it with the requested execution providers that are installed, in
the requested order, and records the ones the session registered. tensorrt: the engine is built
here with TensorRT's Python API from the settings in the request (strongly typed for TensorRT >= 10,
builder flags otherwise, one optimization profile, DLA with GPU fallback, timing cache), then run
with execute_async_v3 (TensorRT >= 8.5) or execute_async_v2 (8.2), buffers from libcudart by ctypes.
"""

import ctypes
import ctypes.util
import glob
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import Any  # noqa: F401 (in type comments: this file runs on Python 3.6)

PROTOCOL = 1
TEGRA_RELEASE = "/etc/nv_tegra_release"
TRTEXEC = "/usr/src/tensorrt/bin/trtexec"


class DeviceError(Exception):
    """A failure this script explains in one line (sent back as response.error)."""


# -- probe ----------------------------------------------------------------------------------------


def _version_of(module_name):
    try:
        module = __import__(module_name)
    except Exception as exc:  # an installed but broken runtime says why
        return None, "{}: {}".format(type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
    return module, str(getattr(module, "__version__", "unknown"))


def _gpu():
    """Name and compute capability of GPU 0 from the CUDA driver (libcuda), or None without one."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    if cuda.cuInit(0) != 0:
        return {"error": "cuInit failed: is the NVIDIA driver loaded?"}
    device = ctypes.c_int()
    if cuda.cuDeviceGet(ctypes.byref(device), 0) != 0:
        return None
    name = ctypes.create_string_buffer(256)
    major, minor = ctypes.c_int(), ctypes.c_int()
    cuda.cuDeviceGetName(name, 256, device)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)  # ..._MINOR
    return {"name": name.value.decode(errors="replace"), "compute_capability": f"{major.value}.{minor.value}"}


def _l4t():
    """Jetson Linux (L4T) release from /etc/nv_tegra_release: '# R36 (release), REVISION: 4.3, ...' -> 36.4.3."""
    try:
        with open(TEGRA_RELEASE, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    found = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{found.group(1)}.{found.group(2)}" if found else text.strip().splitlines()[0][:80]


def _jetpack_package():
    """The version of the nvidia-jetpack meta-package ('6.1+b123' -> '6.1'), where it is installed."""
    try:
        out = subprocess.check_output(
            ["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"], stderr=subprocess.DEVNULL, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.match(r"[\d.]+", out.decode(errors="replace").strip())
    return found.group(0).rstrip(".") if found else None


def probe():
    facts = {
        "protocol": PROTOCOL,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "system": platform.system(),
        "hostname": socket.gethostname(),
        "cwd": os.getcwd(),
        "disk_free_bytes": shutil.disk_usage(".").free,
    }
    numpy, facts["numpy"] = _version_of("numpy")
    if numpy is None:
        facts["numpy_error"], facts["numpy"] = facts["numpy"], None
    ort, version = _version_of("onnxruntime")
    facts["onnxruntime"] = (
        {"version": version, "providers": list(ort.get_available_providers())} if ort else {"error": version}
    )
    trt, version = _version_of("tensorrt")
    if trt is not None and not hasattr(trt, "Builder"):
        trt, version = None, "the 'tensorrt' module has no Builder (an empty namespace package?)"
    facts["tensorrt"] = {"version": version} if trt else {"error": version}
    facts["trtexec"] = TRTEXEC if os.path.isfile(TRTEXEC) else shutil.which("trtexec")
    facts["gpu"] = _gpu()
    facts["l4t"] = _l4t()
    facts["jetpack"] = _jetpack_package()
    return facts


# -- inputs, outputs ------------------------------------------------------------------------------


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _batches(np, path):
    data = np.load(path)
    count = int(data["count"])
    i = 0
    while f"index_{i}" in data.files:
        yield (
            count,
            data[f"index_{i}"],
            {
                "input_ids": data[f"input_ids_{i}"],
                "attention_mask": data[f"attention_mask_{i}"],
            },
        )
        i += 1


def _run_all(np, run, inputs_path):
    """Run every batch, logits back in input order; (logits, batches, seconds)."""
    logits, batches, start = None, 0, time.perf_counter()
    for count, index, batch in _batches(np, inputs_path):
        out = np.asarray(run(batch), dtype=np.float32)
        if logits is None:
            logits = np.zeros((count, out.shape[1]), dtype=np.float32)
        logits[index] = out
        batches += 1
    if logits is None:
        raise DeviceError("inputs.npz holds no batch")
    return logits, batches, time.perf_counter() - start


# -- onnxruntime ----------------------------------------------------------------------------------


def choose_providers(requested, available):
    """The requested providers this onnxruntime has, in the requested order (CPU when none was requested)."""
    wanted = list(requested or ["CPUExecutionProvider"])
    chosen = [p for p in wanted if p in available]
    if not chosen:
        raise DeviceError(
            "none of the profile's execution providers {} is in this onnxruntime (it has {}): install the "
            "onnxruntime build that has them, or list CPUExecutionProvider last in the profile's providers".format(
                ", ".join(wanted), ", ".join(available)
            )
        )
    return chosen


def build_onnxruntime(np, request, here):
    import onnxruntime as ort

    model = os.path.join(here, request["model"])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if request.get("threads"):
        options.intra_op_num_threads = int(request["threads"])
        options.inter_op_num_threads = 1
    chosen = choose_providers(request.get("providers"), ort.get_available_providers())
    session = ort.InferenceSession(model, options, providers=chosen)
    names = [i.name for i in session.get_inputs()]
    used = list(session.get_providers())
    build = {"onnxruntime": ort.__version__, "providers": used}
    run = {"runtime": f"onnxruntime {ort.__version__}", "providers": used}

    def infer(batch):
        return session.run(None, {k: batch[k] for k in names})[0]

    return request["model"], [], build, run, infer


# -- tensorrt -------------------------------------------------------------------------------------


class Cuda:
    """The few CUDA runtime calls a TensorRT run needs, through ctypes (no cuda-python, no torch)."""

    H2D, D2H = 1, 2

    def __init__(self):
        self.lib = self._load()
        self.lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        self.lib.cudaFree.argtypes = [ctypes.c_void_p]
        self.lib.cudaMemcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.lib.cudaStreamCreate.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        self.lib.cudaStreamSynchronize.argtypes = [ctypes.c_void_p]
        self.lib.cudaStreamDestroy.argtypes = [ctypes.c_void_p]

    @staticmethod
    def _load():
        names = [ctypes.util.find_library("cudart")]
        names += ["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so.10.2"]
        for name in [*names, "/usr/local/cuda/lib64/libcudart.so"]:
            if name:
                try:
                    return ctypes.CDLL(name)
                except OSError:
                    continue
        raise DeviceError("libcudart (the CUDA runtime) is not found: add /usr/local/cuda/lib64 to LD_LIBRARY_PATH")

    def check(self, code, what):
        if code != 0:
            raise DeviceError(f"{what} failed with CUDA error {code}: check the GPU and its driver")

    def malloc(self, nbytes):
        ptr = ctypes.c_void_p()
        self.check(self.lib.cudaMalloc(ctypes.byref(ptr), max(int(nbytes), 1)), "cudaMalloc")
        return ptr.value

    def stream(self):
        handle = ctypes.c_void_p()
        self.check(self.lib.cudaStreamCreate(ctypes.byref(handle)), "cudaStreamCreate")
        return handle.value or 0


def build_engine(model, settings, engine_path, cache_path):
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    if settings["strongly_typed"]:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif major >= 10:
        flags = 0  # explicit batch is the only mode in TensorRT 10
    else:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(model):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DeviceError(f"TensorRT could not parse {os.path.basename(model)}: {errors}")
    config = builder.create_builder_config()
    workspace = int(settings["workspace_mib"]) << 20
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:  # TensorRT 8.2 (not in the TensorRT 10 API that mypy checks this file against)
        legacy = config  # type: Any
        legacy.max_workspace_size = workspace
    for flag in settings["builder_flags"]:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if settings["dla_core"] is not None:
        if builder.num_DLA_cores <= settings["dla_core"]:
            raise DeviceError(
                "the profile asks for DLA core {}; this device has {}: set `dla: false` in the profile".format(
                    settings["dla_core"], builder.num_DLA_cores
                )
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = settings["dla_core"]
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    shapes = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        shapes.set_shape(
            network.get_input(i).name,
            trt.Dims2(*settings["min_shape"]),
            trt.Dims2(*settings["opt_shape"]),
            trt.Dims2(*settings["max_shape"]),
        )
    config.add_optimization_profile(shapes)
    cached = b""
    if os.path.isfile(cache_path):
        with open(cache_path, "rb") as fh:
            cached = fh.read()
    config.set_timing_cache(config.create_timing_cache(cached), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DeviceError("TensorRT could not build an engine: its log is in the device's stderr above")
    with open(engine_path, "wb") as fh:
        fh.write(bytes(serialized))
    with open(cache_path, "wb") as fh:
        fh.write(bytes(config.get_timing_cache().serialize()))


class TensorRTRun:
    """Run an engine: tensor addresses + execute_async_v3 (TensorRT >= 8.5) or bindings + v2 (8.2)."""

    def __init__(self, np, engine_path):
        import tensorrt as trt

        self.np, self.trt, self.cuda = np, trt, Cuda()
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        with open(engine_path, "rb") as fh:
            self.engine = self.runtime.deserialize_cuda_engine(fh.read())
        if self.engine is None:
            raise DeviceError("TensorRT could not load the engine it just built")
        self.context = self.engine.create_execution_context()
        # TensorRT 8.2's bindings API, gone in TensorRT 10 (whose API mypy checks this file against)
        self.legacy_engine = self.engine  # type: Any
        self.legacy_context = self.context  # type: Any
        self.stream = self.cuda.stream()
        self.v3 = hasattr(self.context, "execute_async_v3")
        if self.v3:
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        else:
            engine = self.legacy_engine  # type: Any
            names = [engine.get_binding_name(i) for i in range(engine.num_bindings)]
            self.inputs = [n for i, n in enumerate(names) if engine.binding_is_input(i)]
        self.names = names
        self.outputs = [n for n in names if n not in self.inputs]
        self.buffers = {}  # name -> (pointer, bytes)

    def _dtype(self, name):
        if self.v3:
            return self.trt.nptype(self.engine.get_tensor_dtype(name))
        return self.trt.nptype(self.legacy_engine.get_binding_dtype(self.names.index(name)))

    def _buffer(self, name, nbytes):
        ptr, size = self.buffers.get(name, (None, 0))
        if ptr is None or size < nbytes:
            if ptr is not None:
                self.cuda.lib.cudaFree(ptr)
            ptr, size = self.cuda.malloc(nbytes), nbytes
            self.buffers[name] = (ptr, size)
        return ptr

    def __call__(self, batch):
        np, cuda = self.np, self.cuda
        for name in self.inputs:
            host = np.ascontiguousarray(batch[name], dtype=self._dtype(name))  # TensorRT 8 wants int32 ids
            ptr = self._buffer(name, host.nbytes)
            cuda.check(cuda.lib.cudaMemcpy(ptr, host.ctypes.data, host.nbytes, Cuda.H2D), "cudaMemcpy")
            if self.v3:
                self.context.set_input_shape(name, host.shape)
                self.context.set_tensor_address(name, ptr)
            else:
                self.legacy_context.set_binding_shape(self.names.index(name), host.shape)
        results = {}
        for name in self.outputs:
            if self.v3:
                dims = self.context.get_tensor_shape(name)
            else:
                dims = self.legacy_context.get_binding_shape(self.names.index(name))
            results[name] = np.empty(tuple(dims[i] for i in range(len(dims))), dtype=self._dtype(name))
            ptr = self._buffer(name, results[name].nbytes)
            if self.v3:
                self.context.set_tensor_address(name, ptr)
        if self.v3:
            ok = self.context.execute_async_v3(self.stream)
        else:
            ok = self.legacy_context.execute_async_v2([self.buffers[n][0] for n in self.names], self.stream)
        if not ok:
            raise DeviceError("TensorRT could not run the engine: its log is in the device's stderr above")
        cuda.check(cuda.lib.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        for name, host in results.items():
            code = cuda.lib.cudaMemcpy(host.ctypes.data, self.buffers[name][0], host.nbytes, Cuda.D2H)
            cuda.check(code, "cudaMemcpy")
        return results[self.outputs[0]]


def build_tensorrt(np, request, here):
    try:
        import tensorrt as trt
    except ImportError:
        raise DeviceError(
            "TensorRT's Python bindings are not installed: on JetPack, apt install python3-libnvinfer"
        ) from None
    settings = request["tensorrt"]
    engine = os.path.join(here, settings["engine"])
    cache = os.path.join(here, settings["timing_cache"])
    start = time.perf_counter()
    build_engine(os.path.join(here, request["model"]), settings, engine, cache)
    seconds = time.perf_counter() - start
    gpu = _gpu() or {}
    build = {
        "tensorrt": str(trt.__version__),
        "device_name": gpu.get("name"),
        "compute_capability": gpu.get("compute_capability"),
        "onnx_sha256": _sha256(os.path.join(here, request["model"])),
        "strongly_typed": settings["strongly_typed"],
        "builder_flags": settings["builder_flags"],
        "dla_core": settings["dla_core"],
        "shapes": {"min": settings["min_shape"], "opt": settings["opt_shape"], "max": settings["max_shape"]},
        "build_seconds": round(seconds, 1),
    }
    l4t = _l4t()
    if l4t:
        build["l4t"] = l4t
    run = {"runtime": f"tensorrt {trt.__version__}", "providers": None}
    return settings["engine"], [settings["timing_cache"]], build, run, TensorRTRun(np, engine)


# -- build ----------------------------------------------------------------------------------------


def build(request_path):
    import numpy as np

    here = os.path.dirname(os.path.abspath(request_path))
    request = _read_request(request_path)
    builders = {"onnxruntime": build_onnxruntime, "tensorrt": build_tensorrt}
    if request["backend"] not in builders:
        raise DeviceError("no device build for backend {}".format(request["backend"]))
    artifact, extra, build_meta, run, infer = builders[request["backend"]](np, request, here)
    logits, batches, seconds = _run_all(np, infer, os.path.join(here, request["inputs"]))
    np.save(os.path.join(here, "logits.npy"), logits)
    run.update({"inputs": int(logits.shape[0]), "batches": batches, "seconds": round(seconds, 3)})
    build_meta.update({"hostname": socket.gethostname(), "machine": platform.machine()})
    files = {name: _sha256(os.path.join(here, name)) for name in [artifact, *extra, "logits.npy"]}
    return {"artifact": artifact, "files": files, "logits": "logits.npy", "build": build_meta, "run": run}


# -- bench ----------------------------------------------------------------------------------------

POWER_ROOT = "/sys/bus/i2c/drivers"
# the module's (or board's) input rail, by the names the device trees give it; without one, every rail is summed
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0", "VIN")


def _read_number(path):
    with open(path, encoding="ascii", errors="replace") as fh:
        return float(fh.read().strip())


def _read_label(path):
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read().strip()


def power_rails(root=POWER_ROOT):
    """The INA3221 power monitors' rails under `root`: [(label, [power_mW_file] or [voltage_mV_file, current_mA_file])].

    JetPack 5 and 6 (L4T 34+, the kernel's hwmon driver `ina3221`): <root>/ina3221/<bus>-<addr>/hwmon/hwmon*/
    in<N>_label, in<N>_input (bus voltage, mV) and curr<N>_input (current, mA), N = 1..3; power = V x I.
    JetPack 4 (L4T 32, NVIDIA's IIO driver `ina3221x`): <root>/ina3221x/<bus>-<addr>/iio:device*/rail_name_<N>
    and in_power<N>_input (mW), or in_voltage<N>_input x in_current<N>_input. Unconnected channels
    ('NC') and files that cannot be read are left out."""
    rails = []
    for folder in sorted(glob.glob(os.path.join(root, "ina3221*", "*", "hwmon", "hwmon*"))):
        for label_file in sorted(glob.glob(os.path.join(folder, "in*_label"))):
            n = re.match(r"in(\d+)_label$", os.path.basename(label_file))
            volt = os.path.join(folder, f"in{n.group(1)}_input") if n else ""
            curr = os.path.join(folder, f"curr{n.group(1)}_input") if n else ""
            if n and os.path.isfile(volt) and os.path.isfile(curr):
                rails.append((_read_label(label_file), [volt, curr]))
    for folder in sorted(glob.glob(os.path.join(root, "ina3221*", "*", "iio:device*"))):
        for name_file in sorted(glob.glob(os.path.join(folder, "rail_name_*"))):
            k = name_file.rsplit("_", 1)[1]
            power = os.path.join(folder, f"in_power{k}_input")
            volt = os.path.join(folder, f"in_voltage{k}_input")
            curr = os.path.join(folder, f"in_current{k}_input")
            if os.path.isfile(power):
                rails.append((_read_label(name_file), [power]))
            elif os.path.isfile(volt) and os.path.isfile(curr):
                rails.append((_read_label(name_file), [volt, curr]))
    readable = []
    for label, files in rails:
        try:
            for f in files:
                _read_number(f)
        except (OSError, ValueError):
            continue
        if label and label.upper() != "NC":
            readable.append((label, files))
    return readable


def rail_watts(files):
    """One rail's power now, in watts: mW, or mV x mA."""
    if len(files) == 1:
        return _read_number(files[0]) / 1e3
    return _read_number(files[0]) * _read_number(files[1]) / 1e6


class PowerMeter:
    """Energy over a phase from the INA3221 rails: the power sampled every `interval` seconds by a thread
    (and at the phase's start and end), integrated over time (trapezoids). The input rail when the board has
    one (TOTAL_RAILS), else the sum of every rail."""

    def __init__(self, rails, interval=0.01):
        total = [r for r in rails if r[0].upper() in TOTAL_RAILS]
        self.rails = total[:1] or rails
        self.rail = self.rails[0][0] if total else "+".join(r[0] for r in rails)
        self.interval = interval
        self.samples = []  # type: list
        self.stop_event = threading.Event()
        self.thread = None  # type: Any
        self.begin = self.seconds = 0.0

    def watts(self):
        return sum(rail_watts(files) for _, files in self.rails)

    def _sample(self):
        self.samples.append((time.perf_counter(), self.watts()))

    def _loop(self):
        while not self.stop_event.wait(self.interval):
            self._sample()

    def start(self):
        self.samples, self.stop_event = [], threading.Event()
        self.thread = threading.Thread(target=self._loop)
        self.thread.daemon = True
        self.thread.start()
        self.begin = time.perf_counter()  # last: the phase starts now
        self.samples.append((self.begin, self.watts()))

    def stop(self):
        """Joules from start() to now (samples outside that window, taken while the thread started or
        stopped, are left out)."""
        end = (time.perf_counter(), self.watts())  # first: the phase ended now
        self.stop_event.set()
        self.thread.join()
        self.seconds = end[0] - self.begin
        points = [*sorted(p for p in self.samples if self.begin <= p[0] <= end[0]), end]
        return sum(
            (points[i][0] - points[i - 1][0]) * (points[i][1] + points[i - 1][1]) / 2 for i in range(1, len(points))
        )


def _status_mib(field):
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _bench_inputs(np, path, plan):
    """The plan's pre-tokenized inputs, all read into memory before anything is measured."""
    data = np.load(path)

    def pair(key):
        return {"input_ids": data[key + "_input_ids"], "attention_mask": data[key + "_attention_mask"]}

    repeats = []
    for r, step in enumerate(plan):
        single = [pair(f"s{r}_{i}") for i in range(step["single"])]
        batches = [[pair(f"b{r}_{g}_{p}") for p in range(parts)] for g, parts in enumerate(step["batches"])]
        repeats.append((single, batches))
    return repeats


def _measure(infer, meter, single, batches):
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


def bench(request_path):
    """Load the artifact with the runtime code the build uses, warm it up, and measure every repeat of the plan."""
    import numpy as np

    here = os.path.dirname(os.path.abspath(request_path))
    request = _read_request(request_path)
    repeats = _bench_inputs(np, os.path.join(here, request["inputs"]), request["plan"])
    start = time.perf_counter()
    if request["backend"] == "onnxruntime":
        _, _, _, run, infer = build_onnxruntime(np, request, here)
    elif request["backend"] == "tensorrt":
        try:
            import tensorrt as trt
        except ImportError:
            raise DeviceError(
                "TensorRT's Python bindings are not installed: on JetPack, apt install python3-libnvinfer"
            ) from None
        infer = TensorRTRun(np, os.path.join(here, request["model"]))
        run = {"runtime": f"tensorrt {trt.__version__}", "providers": None}
    else:
        raise DeviceError("no device bench for backend {}".format(request["backend"]))
    single, batches = repeats[0]
    for batch in single[:4]:
        infer(batch)
    for part in batches[0] if batches else []:
        infer(part)
    load_s = time.perf_counter() - start
    rss = _status_mib("VmRSS")
    rails = power_rails(request.get("power_root") or POWER_ROOT)
    meter = PowerMeter(rails) if rails else None
    runs = [_measure(infer, meter, single, batches) for single, batches in repeats]
    power = None
    if meter:
        power = {"source": "ina3221", "rail": meter.rail, "rails": [label for label, _ in rails]}
    machine = {
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "l4t": _l4t(),
    }
    return {"load_s": load_s, "rss_mib": rss, "machine": machine, "power": power, "runs": runs, **run}


def _read_request(request_path):
    with open(request_path, encoding="utf-8") as fh:
        request = json.load(fh)
    if request.get("protocol") != PROTOCOL:
        raise DeviceError(
            "request protocol {} but this script speaks {}: use the same tsd-edge version".format(
                request.get("protocol"), PROTOCOL
            )
        )
    return request


# -- main -----------------------------------------------------------------------------------------


def main(argv):
    if argv[:1] == ["probe"]:
        sys.stdout.write(json.dumps(probe()) + "\n")
        return 0
    actions = {"build": build, "bench": bench}
    if len(argv) != 2 or argv[0] not in actions:
        sys.stderr.write("usage: remote_build.py probe | build request.json | bench request.json\n")
        return 2
    response_path = os.path.join(os.path.dirname(os.path.abspath(argv[1])), "response.json")
    try:
        response = {"protocol": PROTOCOL, "ok": True}  # type: dict
        response.update(actions[argv[0]](argv[1]))
        code = 0
    except Exception as exc:
        message = str(exc) if isinstance(exc, DeviceError) else f"{type(exc).__name__}: {exc}"
        response = {"protocol": PROTOCOL, "ok": False, "error": " ".join(message.split())}
        code = 1
    with open(response_path, "w", encoding="utf-8") as fh:
        json.dump(response, fh, indent=2)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
