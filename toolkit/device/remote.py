"""Build on a device over SSH and run the held-out inputs there.

    connect -> probe (python3 - probe, nothing written) -> compare with the profile (InputError on a mismatch)
    -> the host's part (`prepare`: lowering, or ONNX Runtime's host build) -> upload script, request, model, inputs
    -> python3 remote_build.py build request.json -> fetch response, artifact, logits (SHA-256 checked)
    -> remove the device's build folder

Everything is fetched into `staging`; the caller moves it into place only when all of it arrived.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..digest import sha256_file
from ..errors import InputError
from . import protocol
from .probe import describe, mismatches
from .ssh import Connection, SshDevice

if TYPE_CHECKING:
    from ..targets import Profile

REMOTE_ROOT = ".cache/tsd-edge/builds"  # relative to the login's home folder, on the device

Prepare = Callable[[], tuple[Path, dict[str, Any]]]
Batches = Sequence[tuple[Sequence[int], dict[str, np.ndarray]]]


class _OnDevice:
    """What DeviceBuild and DeviceBench share: the device, its probe facts, and a line naming both."""

    device: SshDevice
    facts: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.device.url} ({describe(self.facts)})"


@dataclass
class DeviceBuild(_OnDevice):
    """What came back: the artifact (and its extra files) in the staging folder, the logits computed on the
    device, the device's record of the build and the run, its probe facts, and the host's build record."""

    device: SshDevice
    facts: dict[str, Any]
    artifact: Path
    extra_files: list[Path]
    logits: np.ndarray
    build: dict[str, Any]
    run: dict[str, Any]
    host_build: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def build_on_device(
    device: SshDevice,
    profile: Profile,
    prepare: Prepare,
    batches: Batches,
    count: int,
    staging: Path,
    *,
    need_bytes: int,
    timing_cache: Path | None = None,
) -> DeviceBuild:
    """Probe, check, build and run on `device`; `prepare()` (the host's part) runs only once the device fits."""
    return asyncio.run(_session(device, profile, prepare, batches, count, staging, need_bytes, timing_cache))


async def probe(ssh: Connection) -> dict[str, Any]:
    """The device's facts, from the script fed to `python3 -` (nothing is written on the device)."""
    ran = await ssh.run("python3 - probe", stdin=protocol.script_text())
    where = ssh.device.url
    if ran.code == 127:
        raise InputError(f"{where}: python3 is not on the device's PATH: install python3 and numpy there")
    try:
        facts = json.loads(ran.out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        last = (ran.err.strip().splitlines() or ["no output"])[-1]
        raise InputError(f"{where}: the device probe failed (exit {ran.code}: {last}): run with --debug") from None
    if facts.get("protocol") != protocol.PROTOCOL:
        raise InputError(f"{where}: the device probe answered protocol {facts.get('protocol')}")
    return dict(facts)


async def _session(
    device: SshDevice,
    profile: Profile,
    prepare: Prepare,
    batches: Batches,
    count: int,
    staging: Path,
    need_bytes: int,
    timing_cache: Path | None,
) -> DeviceBuild:
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now

    async with Connection(device) as ssh:
        facts = await probe(ssh)
        problems = mismatches(profile, facts, need_bytes)
        if problems:
            raise InputError(
                f"{device.url} ({describe(facts)}) does not fit {profile.name}: {'; '.join(problems)}; "
                "nothing was built"
            )
        lap("probe")
        model, host_build = await asyncio.get_running_loop().run_in_executor(None, prepare)
        lap("host")

        upload = staging / "upload"
        upload.mkdir(parents=True, exist_ok=True)
        (upload / protocol.SCRIPT).write_text(protocol.script_text(), encoding="utf-8")
        body = protocol.request(profile, model.name, (facts.get("tensorrt") or {}).get("version"))
        (upload / protocol.REQUEST).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        protocol.write_inputs(upload / protocol.INPUTS, batches, count)
        files = [upload / protocol.SCRIPT, upload / protocol.REQUEST, upload / protocol.INPUTS, model]
        if body["tensorrt"] and timing_cache is not None and timing_cache.is_file():
            files.append(timing_cache)  # the device's own kernel timings from an earlier build

        remote = f"{REMOTE_ROOT}/{profile.name}-{secrets.token_hex(4)}"
        try:
            await ssh.makedirs(remote)
            for local in files:
                await ssh.put(local, f"{remote}/{local.name}")
            lap("upload")
            command = f"cd {shlex.quote(remote)} && python3 {protocol.SCRIPT} build {protocol.REQUEST}"
            ran = await ssh.run(command)
            lap("device")
            fetched = staging / "fetched"
            fetched.mkdir(parents=True, exist_ok=True)
            try:
                await ssh.get(f"{remote}/{protocol.RESPONSE}", fetched / protocol.RESPONSE)
            except (ssh.asyncssh.SFTPError, OSError):
                last = (ran.err.strip().splitlines() or ["no output"])[-1]
                raise InputError(
                    f"{device.url}: the device script stopped without an answer (exit {ran.code}: {last})"
                ) from None
            response = protocol.read_response(fetched / protocol.RESPONSE, device.url)
            for name, digest in response["files"].items():
                if Path(name).name != name:
                    raise InputError(f"{device.url}: the device named a file outside its build folder: {name!r}")
                await ssh.get(f"{remote}/{name}", fetched / name)
                if sha256_file(fetched / name) != digest:
                    raise InputError(f"{device.url}: {name} arrived damaged (SHA-256 differs): run compile again")
            lap("fetch")
        finally:
            await ssh.rmtree(remote)

    logits = np.load(fetched / response["logits"])
    if logits.shape[0] != count:
        raise InputError(f"{device.url}: the device returned {logits.shape[0]} rows of logits for {count} inputs")
    extra = [fetched / n for n in response["files"] if n not in (response["artifact"], response["logits"])]
    return DeviceBuild(
        device=device,
        facts=facts,
        artifact=fetched / response["artifact"],
        extra_files=extra,
        logits=logits,
        build=response["build"],
        run=response["run"],
        host_build=host_build,
        seconds=seconds,
    )


# -- bench: measure built artifacts on the device -------------------------------------------------


@dataclass
class BenchJob:
    """One artifact to measure on the device: its files (the artifact first) and how to load it."""

    name: str
    backend: str
    files: list[Path]
    threads: int
    providers: list[str] | None = None


@dataclass
class DeviceBench(_OnDevice):
    """What came back: the device's probe facts, each job's response.json (its figures per repeat), and each
    job that could not be measured there with the reason."""

    device: SshDevice
    facts: dict[str, Any]
    responses: dict[str, dict[str, Any]]
    errors: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)


def bench_on_device(
    device: SshDevice, jobs: Sequence[BenchJob], inputs: Path, plan: list, staging: Path
) -> DeviceBench:
    """Probe, upload the script and `inputs` (bench.npz, written with protocol.write_bench_inputs, whose plan
    is `plan`) once, then per job upload its files and run `python3 remote_build.py bench` there, one job at a
    time; fetch each response.json. The device's folder is removed at the end."""
    return asyncio.run(_bench_session(device, jobs, inputs, plan, staging))


def _runtime_missing(backend: str, facts: dict[str, Any]) -> str | None:
    if backend == "onnxruntime" and not (facts.get("onnxruntime") or {}).get("version"):
        return "onnxruntime is not installed on the device: pip install onnxruntime there"
    if backend == "tensorrt" and not (facts.get("tensorrt") or {}).get("version"):
        return "TensorRT's Python bindings are missing on the device: on JetPack, `sudo apt install python3-libnvinfer`"
    return None


async def _bench_session(
    device: SshDevice, jobs: Sequence[BenchJob], inputs: Path, plan: list, staging: Path
) -> DeviceBench:
    seconds: dict[str, float] = {}
    responses: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    staging.mkdir(parents=True, exist_ok=True)
    (staging / protocol.SCRIPT).write_text(protocol.script_text(), encoding="utf-8")
    async with Connection(device) as ssh:
        start = time.perf_counter()
        facts = await probe(ssh)
        if not facts.get("numpy"):
            raise InputError(f"{device.url}: numpy is not installed on the device: pip install numpy there")
        seconds["probe"] = round(time.perf_counter() - start, 3)
        remote = f"{REMOTE_ROOT}/bench-{secrets.token_hex(4)}"
        try:
            await ssh.makedirs(remote)
            await ssh.put(staging / protocol.SCRIPT, f"{remote}/{protocol.SCRIPT}")
            await ssh.put(inputs, f"{remote}/{protocol.BENCH_INPUTS}")
            for job in jobs:
                missing = _runtime_missing(job.backend, facts)
                if missing:
                    errors[job.name] = missing
                    continue
                start = time.perf_counter()
                here, folder = staging / job.name, f"{remote}/{job.name}"
                here.mkdir(parents=True, exist_ok=True)
                body = protocol.bench_request(job.backend, job.files[0].name, job.threads, job.providers, plan)
                (here / protocol.REQUEST).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
                await ssh.makedirs(folder)
                for local in [*job.files, here / protocol.REQUEST]:
                    await ssh.put(local, f"{folder}/{local.name}")
                threads = f"OMP_NUM_THREADS={job.threads} OPENBLAS_NUM_THREADS={job.threads}"
                command = f"cd {shlex.quote(folder)} && {threads} python3 ../{protocol.SCRIPT} bench {protocol.REQUEST}"
                ran = await ssh.run(command)
                try:
                    await ssh.get(f"{folder}/{protocol.RESPONSE}", here / protocol.RESPONSE)
                except (ssh.asyncssh.SFTPError, OSError):
                    last = (ran.err.strip().splitlines() or ["no output"])[-1]
                    errors[job.name] = f"the device script stopped without an answer (exit {ran.code}: {last})"
                    continue
                try:
                    responses[job.name] = protocol.read_response(
                        here / protocol.RESPONSE, device.url, protocol.BENCH_FIELDS, "the bench"
                    )
                except InputError as exc:
                    errors[job.name] = str(exc)
                await ssh.rmtree(folder)  # the next job starts with only its own artifact there
                seconds[job.name] = round(time.perf_counter() - start, 3)
        finally:
            await ssh.rmtree(remote)
    return DeviceBench(device, facts, responses, errors, seconds)
