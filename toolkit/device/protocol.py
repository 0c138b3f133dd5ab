"""The host's half of the device protocol (version 1): request.json and inputs.npz out, response.json back;
for `bench --device`, a bench request and bench.npz (the pre-tokenized inputs of every repeat).

The device's half is `remote_build.py` in this package, a single file that needs only python3,
numpy and the target runtime; its docstring is the protocol's reference. This module writes what
that script reads and checks what it writes back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from ..targets import Profile

PROTOCOL = 1
SCRIPT = "remote_build.py"
REQUEST, RESPONSE, INPUTS, LOGITS = "request.json", "response.json", "inputs.npz", "logits.npy"
ENGINE, TIMING_CACHE = "model.engine", "timing.cache"
BENCH_INPUTS = "bench.npz"
BUILD_FIELDS = ("artifact", "files", "logits", "build", "run")
BENCH_FIELDS = ("runs", "runtime", "load_s", "machine")

Encoded = dict[str, np.ndarray]


def script_text() -> str:
    """The device-side script, as shipped in the package."""
    return resources.files("tsd_edge.device").joinpath(SCRIPT).read_text(encoding="utf-8")


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
        from ..exporters.tensorrt.loader import BuildSettings

        major = int(tensorrt_version.split(".")[0]) if tensorrt_version else None
        s = BuildSettings.from_profile(profile, major)
        body["tensorrt"] = {
            "engine": ENGINE,
            "timing_cache": TIMING_CACHE,
            "min_shape": list(s.min_shape),
            "opt_shape": list(s.opt_shape),
            "max_shape": list(s.max_shape),
            "strongly_typed": s.strongly_typed,
            "builder_flags": s.precision_flags,
            "dla_core": s.dla_core,
            "workspace_mib": s.workspace_mib,
        }
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
    """What `remote_build.py bench` loads and measures: the artifact, how to load it, and the repeats' plan."""
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


def read_response(
    path: Path, where: str, fields: Sequence[str] = BUILD_FIELDS, what: str = "the build"
) -> dict[str, Any]:
    """response.json, checked: a failure on the device becomes one InputError line."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{where}: the device sent no readable {RESPONSE} ({exc}): run with --debug") from None
    if data.get("protocol") != PROTOCOL:
        raise InputError(f"{where}: the device answered protocol {data.get('protocol')}, expected {PROTOCOL}")
    if not data.get("ok"):
        raise InputError(f"{where}: {what} on the device failed: {data.get('error', 'no reason given')}")
    for field in fields:
        if field not in data:
            raise InputError(f"{where}: the device's {RESPONSE} lacks '{field}'")
    return data
