"""Build, measure or gate on a device over SSH, through the runtime shipped there as a zipapp.

    build   connect -> probe (python3 - probe, nothing written) -> compare with the profile (InputError on a
            mismatch) -> the host's part (`prepare`: lowering, or ONNX Runtime's host build) -> upload the runtime
            (tsd-runtime.pyz), request, model, inputs -> python3 tsd-runtime.pyz build request.json -> fetch
            response, artifact, logits (SHA-256 checked) -> remove the device's build folder
    bench   probe -> upload the runtime and the inputs once -> per artifact: upload, `bench`, fetch the figures
    logits  (`gate --device`) probe -> upload the runtime, the .tsdpkg and the inputs tokenized here with the
            package's own tokenizer -> `logits` (the device verifies the package, runs its artifact) -> fetch

Everything is fetched into a staging folder; the caller moves it into place only when all of it arrived.
Python 3.8 (the gate's --device may run from a JetPack or CI Python).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Sequence, Tuple

import numpy as np

from ..digest import sha256_file
from ..errors import InputError, TsdEdgeError
from . import protocol, zipapp
from .probe import describe, mismatches, runtime_mismatches
from .ssh import Connection, Ran, SshDevice

if TYPE_CHECKING:
    from ..targets import Profile

REMOTE_ROOT = ".cache/tsd-edge/builds"  # relative to the login's home folder, on the device

Prepare = Callable[[], Tuple[Path, Dict[str, Any]]]
Batches = Sequence[Tuple[Sequence[int], Dict[str, np.ndarray]]]


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
    """The device's facts, from tsd_edge.runtime.facts fed to `python3 -` (nothing is written on the device)."""
    ran = await ssh.run("python3 - probe", stdin=protocol.probe_text())
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


# -- what every session does on the device --------------------------------------------------------


async def put_runtime(ssh: Connection, folder: str) -> None:
    """The runtime's zipapp (built once per content, cached) into the device's `folder`."""
    await ssh.put(zipapp.build(), f"{folder}/{protocol.ZIPAPP}")


def runtime_command(folder: str, command: str, zipapp_path: str = protocol.ZIPAPP, env: str = "") -> str:
    """The shell line that runs `python3 tsd-runtime.pyz <command> request.json` in the device's `folder`."""
    prefix = f"{env} " if env else ""
    return f"cd {shlex.quote(folder)} && {prefix}python3 {zipapp_path} {command} {protocol.REQUEST}"


def _no_answer(device: SshDevice, ran: Ran) -> str:
    last = (ran.err.strip().splitlines() or ["no output"])[-1]
    return f"{device.url}: the device side stopped without an answer (exit {ran.code}: {last})"


async def fetch(
    ssh: Connection, folder: str, ran: Ran, fetched: Path, fields: Sequence[str], what: str
) -> dict[str, Any]:
    """The device's response.json from `folder`, checked (a failure there becomes the error of its kind), then
    every file it names, each checked against the SHA-256 the device computed."""
    fetched.mkdir(parents=True, exist_ok=True)
    try:
        await ssh.get(f"{folder}/{protocol.RESPONSE}", fetched / protocol.RESPONSE)
    except (ssh.asyncssh.SFTPError, OSError):
        raise InputError(_no_answer(ssh.device, ran)) from None
    response = protocol.read_response(fetched / protocol.RESPONSE, ssh.device.url, fields, what)
    for name, digest in response.get("files", {}).items():
        if Path(name).name != name:
            raise InputError(f"{ssh.device.url}: the device named a file outside its folder: {name!r}")
        await ssh.get(f"{folder}/{name}", fetched / name)
        if sha256_file(fetched / name) != digest:
            raise InputError(f"{ssh.device.url}: {name} arrived damaged (SHA-256 differs): run it again")
    return response


class Laps:
    """Seconds per phase of a session: `lap("upload")` closes the phase that began at the previous lap."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.clock = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self.clock, 3)
        self.clock = now


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
    lap = Laps()

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
        body = protocol.request(profile, model.name, (facts.get("tensorrt") or {}).get("version"))
        (upload / protocol.REQUEST).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        protocol.write_inputs(upload / protocol.INPUTS, batches, count)
        files = [upload / protocol.REQUEST, upload / protocol.INPUTS, model]
        if body["tensorrt"] and timing_cache is not None and timing_cache.is_file():
            files.append(timing_cache)  # the device's own kernel timings from an earlier build

        remote = f"{REMOTE_ROOT}/{profile.name}-{secrets.token_hex(4)}"
        fetched = staging / "fetched"
        try:
            await ssh.makedirs(remote)
            await put_runtime(ssh, remote)
            for local in files:
                await ssh.put(local, f"{remote}/{local.name}")
            lap("upload")
            ran = await ssh.run(runtime_command(remote, "build"))
            lap("device")
            response = await fetch(ssh, remote, ran, fetched, protocol.BUILD_FIELDS, "the build")
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
        seconds=lap.seconds,
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
    """Probe, upload the runtime's zipapp and `inputs` (bench.npz, written with protocol.write_bench_inputs, whose
    plan is `plan`) once, then per job upload its files and run `python3 tsd-runtime.pyz bench` there, one job at
    a time; fetch each response.json. The device's folder is removed at the end."""
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
    async with Connection(device) as ssh:
        start = time.perf_counter()
        facts = await probe(ssh)
        problems = runtime_mismatches(facts)
        if problems:
            raise InputError(f"{device.url} ({describe(facts)}) cannot run tsd-edge's runtime: {'; '.join(problems)}")
        seconds["probe"] = round(time.perf_counter() - start, 3)
        remote = f"{REMOTE_ROOT}/bench-{secrets.token_hex(4)}"
        try:
            await ssh.makedirs(remote)
            await put_runtime(ssh, remote)
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
                ran = await ssh.run(runtime_command(folder, "bench", f"../{protocol.ZIPAPP}", threads))
                try:
                    responses[job.name] = await fetch(ssh, folder, ran, here, protocol.BENCH_FIELDS, "the bench")
                except TsdEdgeError as exc:
                    errors[job.name] = str(exc)
                await ssh.rmtree(folder)  # the next job starts with only its own artifact there
                seconds[job.name] = round(time.perf_counter() - start, 3)
        finally:
            await ssh.rmtree(remote)
    return DeviceBench(device, facts, responses, errors, seconds)


# -- logits: the gate's re-run on the device ------------------------------------------------------

GATE_BATCH = 16  # the batch of runtime.infer.predict_logits: the device runs the batches the local gate runs
PACKAGE = "package.tsdpkg"  # the uploaded package's name on the device


@dataclass
class DeviceLogits(_OnDevice):
    """What came back from `logits`: the device's logits in input order and its record of the run."""

    device: SshDevice
    facts: dict[str, Any]
    logits: np.ndarray
    run: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def logits_on_device(
    device: SshDevice, package_path: Path, texts: list[str], threads: int | None
) -> tuple[np.ndarray, str]:
    """The package's artifact run on `device` over SSH on `texts`: (logits in input order, the runtime that ran
    them there, e.g. "onnxruntime 1.19.2 on aarch64 Python 3.8.10").

    The texts are tokenized here, with the package's own tokenizer (its tokenizer.json, truncated to its
    max_length, in the length-sorted batches of 16 that the local gate runs): a device may lack the `tokenizers`
    package, and needs only python3 >= 3.8, numpy and the artifact's runtime. The runtime goes with the request
    (tsd-runtime.pyz); the device verifies the uploaded package as the gate does (and that it is byte for byte
    the file verified here) before it runs its artifact through the runtime's runner. Raises
    PackageIntegrityError when the device refuses the package, RuntimeMissingError when the device lacks the
    artifact's runtime, InputError for anything else that went wrong there."""
    from ..runtime.package import read_package
    from ..runtime.tokenizer import TextEncoder, length_batches

    staging = Path(tempfile.mkdtemp(prefix="tsd-gate-device-"))
    try:
        pkg = read_package(Path(package_path), staging / "package")
        encode = TextEncoder(pkg.file("tokenizer.json"), int(pkg.manifest["max_length"]))
        rows = encode.ids(texts)
        batches = [
            (idx, encode.pad([rows[i] for i in idx])) for idx in length_batches([len(r) for r in rows], GATE_BATCH)
        ]
        inputs = staging / protocol.INPUTS
        protocol.write_inputs(inputs, batches, len(texts))
        got = run_logits(device, Path(package_path), inputs, len(texts), threads, staging / "session")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return got.logits, str(got.run.get("describe") or got.run.get("runtime"))


def run_logits(
    device: SshDevice, package: Path, inputs: Path, count: int, threads: int | None, staging: Path
) -> DeviceLogits:
    """Upload the runtime, `package` and `inputs` (inputs.npz, written with protocol.write_inputs: `count` rows),
    run `python3 tsd-runtime.pyz logits` there, fetch the logits (SHA-256 checked); the device's folder is removed."""
    return asyncio.run(_logits_session(device, package, inputs, count, threads, staging))


async def _logits_session(
    device: SshDevice, package: Path, inputs: Path, count: int, threads: int | None, staging: Path
) -> DeviceLogits:
    lap = Laps()

    staging.mkdir(parents=True, exist_ok=True)
    request = staging / protocol.REQUEST
    body = protocol.logits_request(PACKAGE, sha256_file(package), threads)
    request.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    async with Connection(device) as ssh:
        facts = await probe(ssh)
        problems = runtime_mismatches(facts)
        if problems:
            raise InputError(f"{device.url} ({describe(facts)}) cannot run tsd-edge's runtime: {'; '.join(problems)}")
        lap("probe")
        remote = f"{REMOTE_ROOT}/gate-{secrets.token_hex(4)}"
        try:
            await ssh.makedirs(remote)
            await put_runtime(ssh, remote)
            await ssh.put(request, f"{remote}/{protocol.REQUEST}")
            await ssh.put(inputs, f"{remote}/{protocol.INPUTS}")
            await ssh.put(package, f"{remote}/{PACKAGE}")
            lap("upload")
            ran = await ssh.run(runtime_command(remote, "logits"))
            lap("device")
            response = await fetch(ssh, remote, ran, staging / "fetched", protocol.LOGITS_FIELDS, "the gate")
            lap("fetch")
        finally:
            await ssh.rmtree(remote)
    logits = np.load(staging / "fetched" / response["logits"])
    if logits.shape[0] != count:
        raise InputError(f"{device.url}: the device returned {logits.shape[0]} rows of logits for {count} inputs")
    return DeviceLogits(device, facts, logits, dict(response["run"]), lap.seconds)
