"""The host's half of the device protocol (version 2): request.json and inputs.npz out, response.json back;
for `bench --device`, a bench request and bench.npz (the pre-tokenized inputs of every repeat); for
`gate --device`, a logits request with the package.

The device's half is tsd_edge.runtime.device, shipped as a zipapp of the runtime (zipapp.py) and run with the
device's python3 (3.8+, numpy and the target runtime); its docstring is the protocol's reference, and the
probe is tsd_edge.runtime.facts fed to `python3 -`. This module writes what the device reads and checks what
it writes back. Python 3.8 (the gate's --device runs from a JetPack or CI Python too).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Sequence

import numpy as np

from ..errors import BuildError, InputError, RuntimeMissingError, TsdEdgeError
from ..runtime import facts
from ..runtime.device import ENGINE, INPUTS, LOGITS, REQUEST, RESPONSE, TIMING_CACHE, ZIPAPP
from ..runtime.facts import PROTOCOL
from ..runtime.package import PackageIntegrityError

if TYPE_CHECKING:
    from ..targets import Profile

BENCH_INPUTS = "bench.npz"
BUILD_FIELDS = ("artifact", "files", "logits", "build", "run")
BENCH_FIELDS = ("runs", "runtime", "load_s", "machine")
LOGITS_FIELDS = ("files", "logits", "run")

Encoded = Dict[str, np.ndarray]


def probe_text() -> str:
    """The probe fed to the device's `python3 -` (standard library only; nothing is written there)."""
    return Path(facts.__file__).read_text(encoding="utf-8")


class DeviceRuntimeMissingError(RuntimeMissingError):
    """The device lacks the artifact's runtime (exit 4; the gate reports the check as not verified)."""

    def __init__(self, message: str, package: str) -> None:
        TsdEdgeError.__init__(self, message)
        self.package = package


def request(profile: Profile, model: str, tensorrt_version: str | None = None) -> dict[str, Any]:
    """What the device builds and how: the backend, the uploaded model's name, and for TensorRT the
    same settings (shapes, typing, flags, DLA, workspace) the host's own build would use, for the
    TensorRT major version the probe found on the device."""
    body: dict[str, Any] = {
        "protocol": PROTOCOL,
        "backend": profile.backend,
        "model": model,
        "inputs": INPUTS,
        "threads": profile.threads,
        "providers": profile.providers,
        "tensorrt": None,
    }
    if profile.backend == "tensorrt":
        from ..runtime.backends.tensorrt_build import BuildSettings

        major = int(tensorrt_version.split(".")[0]) if tensorrt_version else None
        settings = BuildSettings.from_profile(profile, major)
        body["tensorrt"] = {"engine": ENGINE, "timing_cache": TIMING_CACHE, "settings": settings.to_dict()}
    elif profile.backend != "onnxruntime":
        raise InputError(
            f"{profile.name}: building on a device is for the onnxruntime and tensorrt backends, not "
            f"{profile.backend}: build on the host (drop --device)"
        )
    return body


def write_inputs(path: Path, batches: Sequence[tuple[Sequence[int], dict[str, np.ndarray]]], count: int) -> None:
    """The held-out inputs as encoded batches, each with the rows of the logits it fills."""
    arrays: dict[str, np.ndarray] = {"count": np.asarray(count, dtype=np.int64)}
    for i, (index, batch) in enumerate(batches):
        arrays[f"index_{i}"] = np.asarray(index, dtype=np.int64)
        arrays[f"input_ids_{i}"] = np.ascontiguousarray(batch["input_ids"], dtype=np.int64)
        arrays[f"attention_mask_{i}"] = np.ascontiguousarray(batch["attention_mask"], dtype=np.int64)
    with path.open("wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]


def bench_request(
    backend: str, model: str, threads: int, providers: Sequence[str] | None, plan: list[dict[str, Any]]
) -> dict[str, Any]:
    """What the device's `bench` loads and measures: the artifact, how to load it, and the repeats' plan."""
    if backend not in ("onnxruntime", "tensorrt"):
        raise InputError(f"the device side measures onnxruntime and tensorrt artifacts, not {backend}")
    return {
        "protocol": PROTOCOL,
        "backend": backend,
        "model": model,
        "inputs": f"../{BENCH_INPUTS}",  # one copy for every target, in the session's folder
        "threads": threads,
        "providers": list(providers) if providers else None,
        "plan": plan,
        "power_root": None,
    }


def write_bench_inputs(path: Path, repeats: Sequence[tuple[Sequence[Encoded], Sequence[Sequence[Encoded]]]]) -> list:
    """Every repeat's batch-1 queries and batches (each batch already cut into its length-sorted parts),
    encoded; returns the plan that names them: [{"single": n, "batches": [parts, ...]}, ...]."""
    arrays: dict[str, np.ndarray] = {}
    plan: list[dict[str, Any]] = []
    for r, (single, batches) in enumerate(repeats):
        for i, one in enumerate(single):
            for key in ("input_ids", "attention_mask"):
                arrays[f"s{r}_{i}_{key}"] = np.ascontiguousarray(one[key], dtype=np.int64)
        for g, parts in enumerate(batches):
            for k, part in enumerate(parts):
                for key in ("input_ids", "attention_mask"):
                    arrays[f"b{r}_{g}_{k}_{key}"] = np.ascontiguousarray(part[key], dtype=np.int64)
        plan.append({"single": len(single), "batches": [len(parts) for parts in batches]})
    with path.open("wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    return plan


def logits_request(package: str, package_sha256: str, threads: int | None) -> dict[str, Any]:
    """What the device's `logits` verifies and runs for the gate: the uploaded package and the host's hash of it."""
    return {
        "protocol": PROTOCOL,
        "package": package,
        "package_sha256": package_sha256,
        "inputs": INPUTS,
        "threads": threads,
    }


def read_response(
    path: Path, where: str, fields: Sequence[str] = BUILD_FIELDS, what: str = "the build"
) -> dict[str, Any]:
    """response.json, checked: a failure on the device becomes one line, as the error of its kind (a package
    that fails verification there: PackageIntegrityError; a missing runtime: RuntimeMissingError; a build or CUDA
    failure: BuildError; else InputError)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{where}: the device sent no readable {RESPONSE} ({exc}): run with --debug") from None
    if data.get("protocol") != PROTOCOL:
        raise InputError(f"{where}: the device answered protocol {data.get('protocol')}, expected {PROTOCOL}")
    if not data.get("ok"):
        message = f"{where}: {what} on the device failed: {data.get('error', 'no reason given')}"
        if data.get("kind") == "integrity":
            raise PackageIntegrityError(message)
        if data.get("kind") == "runtime_missing":
            raise DeviceRuntimeMissingError(message, str(data.get("package") or "the runtime"))
        if data.get("kind") == "build":
            raise BuildError(message)
        raise InputError(message)
    for field in fields:
        if field not in data:
            raise InputError(f"{where}: the device's {RESPONSE} lacks '{field}'")
    return data


__all__ = [
    "BENCH_FIELDS",
    "BENCH_INPUTS",
    "BUILD_FIELDS",
    "ENGINE",
    "INPUTS",
    "LOGITS",
    "LOGITS_FIELDS",
    "PROTOCOL",
    "REQUEST",
    "RESPONSE",
    "TIMING_CACHE",
    "ZIPAPP",
    "DeviceRuntimeMissingError",
    "bench_request",
    "logits_request",
    "probe_text",
    "read_response",
    "request",
    "write_bench_inputs",
    "write_inputs",
]
