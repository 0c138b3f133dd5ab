"""Building on and gating through a device over SSH, for real: an asyncssh server on 127.0.0.1
(tests/ssh_server.py) runs each command as a bash subprocess in a "device" folder whose python3 has numpy and
onnxruntime but no tsd_edge; the device side is tsd-edge's runtime, shipped there as tsd-runtime.pyz. Also: the
probe against profiles, the refusals, what the zipapp holds, and ONNX Runtime's execution providers."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from conftest import Ran, tsd
from tsd_edge.device import SshDevice
from tsd_edge.device.probe import jetpack, mismatches
from tsd_edge.errors import InputError, RuntimeMissingError
from tsd_edge.runtime import facts as device_facts
from tsd_edge.runtime.package import PackageIntegrityError
from tsd_edge.targets import Profile, load_profile

if TYPE_CHECKING:
    from ssh_server import Keys, SshServer

MACHINE = platform.machine()
HERE, OTHER = ("cpu-arm64", "cpu-x86") if MACHINE == "aarch64" else ("cpu-x86", "cpu-arm64")
ROOT = Path(__file__).resolve().parents[1]
PROBE = Path(device_facts.__file__)  # what `python3 - probe` reads on the device

# a device that builds and runs ONNX Runtime INT8 itself, as cpu-x86 does on the host
DEVICE_PROFILE = """\
name: ssh-x86
description: test device over SSH, ONNX Runtime INT8, built and run on the device
backend: onnxruntime
precision: int8
batch: {min: 1, opt: 1, max: 64}
sequence: {min: 1, opt: 32, max: 64}
threads: 1
build_on: device
providers: [CPUExecutionProvider]
calibration: {samples: 256, method: minmax}
device: {architecture: MACHINE}
""".replace("MACHINE", platform.machine())


@dataclass
class Device:
    server: SshServer
    root: Path  # the device's home folder
    keys: Keys
    task: Path
    workdir: Path  # a copy of the pipeline's run folder
    profile: Path  # DEVICE_PROFILE

    @property
    def url(self) -> str:
        return self.server.url

    def options(self) -> list[str | Path]:
        return ["--device", self.url, "--identity", self.keys.identity, "--known-hosts", self.keys.known_hosts]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(*args: str | Path, env: dict[str, str]) -> Ran:
    proc = subprocess.run(
        [sys.executable, "-m", "tsd_edge", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", **env},
    )
    return Ran(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def workcopy(pipeline: tuple[Path, Path, Ran], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(task file, a copy of the pipeline's run folder) to compile into without touching the shared one."""
    task, workdir, ran = pipeline
    assert ran.code == 0, ran.err[-2000:]
    copy = tmp_path_factory.mktemp("ssh-run") / "run"
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("dist"))
    return task, copy


@pytest.fixture(scope="module")
def device(workcopy: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Device]:
    """The SSH server. Its python3 is this venv's (numpy, onnxruntime), with an installed `tsd_edge` made
    unimportable: a device does not have it (the zipapp on sys.path[0] brings the runtime)."""
    from ssh_server import SshServer, make_keys

    base = tmp_path_factory.mktemp("ssh")
    shadow = base / "no-tsd-edge" / "tsd_edge"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("a device has no tsd_edge")\n', encoding="utf-8")
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(shadow.parent)}
    profile = base / "ssh-x86.yaml"
    profile.write_text(DEVICE_PROFILE, encoding="utf-8")
    keys = make_keys(base / "keys")
    with SshServer(base / "device", keys, env) as server:
        yield Device(server, base / "device", keys, *workcopy, profile)


def _files(root: Path) -> list[str]:
    """What tsd-edge left on the device (onnxruntime itself keeps a telemetry id under ~/.cache/Microsoft)."""
    return sorted(str(p.relative_to(root)) for p in (root / ".cache" / "tsd-edge").rglob("*") if p.is_file())


@pytest.mark.network
def test_compile_check_package_gate_through_ssh(device: Device, tmp_path: Path) -> None:
    d, w = device, device.workdir
    ran = tsd("compile", d.task, "--workdir", w, "--target", d.profile, *d.options())
    assert ran.code == 0, ran.out + ran.err
    assert f"built and run on {d.url}" in ran.out
    commands = d.server.commands
    assert commands[-2] == "python3 - probe"  # the probe writes nothing on the device
    assert commands[-1].endswith("python3 tsd-runtime.pyz build request.json")
    assert _files(d.root) == []  # the device's build folder is removed once everything came back

    out = w / "compiled" / "ssh-x86"
    meta = json.loads((out / "artifact.json").read_text())
    run = meta["build"]["device_run"]
    assert run["device"] == d.url and run["providers"] == ["CPUExecutionProvider"]
    assert run["runtime"].startswith("onnxruntime ")
    # the device built what the host path (cpu-x86, same precision and calibration) built, byte for byte,
    # and its logits are the host's for the same inputs
    assert _sha(out / "model.onnx") == _sha(w / "compiled" / "cpu-x86" / "model.onnx")
    device_logits = np.load(out / "device_logits.npy")
    host_logits = _host_logits(d.task, w, out / "model.onnx")
    assert np.abs(device_logits - host_logits).max() < 1e-4

    ran = tsd("check", d.task, "--workdir", w, "--target", d.profile)
    assert ran.code == 0, ran.out + ran.err
    assert f"logits computed on {d.url}" in ran.out
    report = json.loads((w / "reports" / "ssh-x86.json").read_text())
    host = json.loads((w / "reports" / "cpu-x86.json").read_text())
    assert report["agreement"] == pytest.approx(host["agreement"])
    details = report["details"]
    assert details["runtime"] == run["runtime"] and details["device"] == d.url
    assert "over SSH" in details["ran_on"] and MACHINE in details["where"]

    ran = tsd("package", d.task, "--workdir", w, "--target", d.profile)
    assert ran.code == 0, ran.out + ran.err
    package = w / "dist" / "bank-slice-ssh-x86.tsdpkg"
    gate = tsd("gate", package, "--json", tmp_path / "g.json", "--junit", tmp_path / "g.xml")
    assert gate.code == 0, gate.out + gate.err
    assert json.loads((tmp_path / "g.json").read_text())[0]["passed"] is True

    # logits that changed after the device computed them are not scored
    np.save(out / "device_logits.npy", device_logits[::-1])
    ran = tsd("check", d.task, "--workdir", w, "--target", d.profile, "--force")
    # the compile record holds their SHA-256: the check refuses before reading them
    assert ran.code == 2 and "compile --target" in ran.err and "half-made" in ran.err, ran.err
    np.save(out / "device_logits.npy", device_logits)


def _host_logits(task: Path, workdir: Path, model: Path) -> np.ndarray:
    from tsd_edge import RunContext, load_task
    from tsd_edge.runtime.backends.onnxruntime import OnnxRuntimeRunner
    from tsd_edge.runtime.infer import predict_logits

    ctx = RunContext.open(load_task(task), workdir)
    with OnnxRuntimeRunner(model, threads=1) as runner:
        return predict_logits(runner, ctx.encoder, ctx.heldout_texts)


@pytest.mark.network
@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (OTHER, [f"the device is {MACHINE}, the profile is for {load_profile(OTHER).device.architecture}"]),
        (
            "jetson-orin-nano",
            ["the profile is for aarch64", "TensorRT's Python bindings are missing", "no CUDA GPU found"],
        ),
    ],
)
def test_a_device_that_does_not_fit_the_profile_is_refused(device: Device, target: str, expected: list[str]) -> None:
    d, w = device, device.workdir
    before = {p: _sha(p) for p in (w / "compiled" / "cpu-x86").iterdir()}
    ran = tsd("compile", d.task, "--workdir", w, "--target", target, *d.options())
    assert ran.code == 2, ran.out + ran.err
    lines = [ln for ln in ran.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in ran.err, ran.err
    assert f"does not fit {target}" in lines[0] and "nothing was built" in lines[0]
    for text in expected:
        assert text in lines[0]
    assert not (w / "compiled" / target).exists()  # not even the host's lowering ran
    assert _files(d.root) == []  # nothing of tsd-edge's written on the device
    assert {p: _sha(p) for p in (w / "compiled" / "cpu-x86").iterdir()} == before  # nothing lost


@pytest.mark.network
def test_an_unknown_host_key_is_refused(device: Device, tmp_path: Path) -> None:
    d = device
    args = ["compile", d.task, "--workdir", d.workdir, "--target", d.profile, "--device", d.url, "--force"]
    ran = _run(*args, "--identity", d.keys.identity, env={"HOME": str(tmp_path)})
    assert ran.code == 2, ran.out + ran.err
    assert "host key is not known" in ran.err and "--known-hosts" in ran.err
    assert "Traceback" not in ran.err


def test_without_asyncssh_the_device_option_names_the_extra(pipeline: tuple[Path, Path, Ran], tmp_path: Path) -> None:
    task, workdir, _ = pipeline
    shadow = tmp_path / "asyncssh"
    shadow.mkdir()
    (shadow / "__init__.py").write_text('raise ImportError("No module named asyncssh")\n', encoding="utf-8")
    ran = _run(
        "compile", task, "--workdir", workdir, "--target", "cpu-x86", "--device", "ssh://edge@127.0.0.1:9",
        env={"PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert ran.code == 4, ran.out + ran.err
    assert "pip install 'tsd-edge[device]'" in ran.err and "Traceback" not in ran.err


def test_help_does_not_import_asyncssh() -> None:
    code = (
        "import sys\nfrom tsd_edge.cli import main\nsys.argv=['tsd-edge','compile','--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\nprint('LOADED', 'asyncssh' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "--device" in proc.stdout and "LOADED False" in proc.stdout, proc.stdout + proc.stderr


# -- the device address, the probe and the profile ------------------------------------------------


def test_device_addresses() -> None:
    d = SshDevice.parse("ssh://nvidia@orin.local:2222")
    assert (d.user, d.host, d.port, d.url) == ("nvidia", "orin.local", 2222, "ssh://nvidia@orin.local:2222")
    assert SshDevice.parse("ssh://10.0.0.7").port == 22
    for bad in ("orin.local", "http://orin", "ssh://u:pw@orin", "ssh://orin:99999", "ssh://orin/path"):
        with pytest.raises(InputError, match="ssh://user@host"):
            SshDevice.parse(bad)


ORIN = {
    "python": "3.10.12",
    "machine": "aarch64",
    "hostname": "orin",
    "numpy": "1.26.4",
    "onnxruntime": {"error": "ModuleNotFoundError"},
    "tensorrt": {"version": "10.3.0.30"},
    "gpu": {"name": "Orin", "compute_capability": "8.7"},
    "l4t": "36.4.0",
    "jetpack": None,
    "disk_free_bytes": 20 << 30,
}


def test_the_probe_matches_a_jetson_against_its_profiles() -> None:
    assert mismatches(load_profile("jetson-orin-nano"), ORIN, 1 << 20) == []
    old = {**ORIN, "tensorrt": {"version": "8.5.2.2"}, "gpu": {"name": "Xavier", "compute_capability": "7.2"}}
    problems = " ".join(mismatches(load_profile("jetson-orin-nano"), {**old, "l4t": "35.3.1"}, 1 << 20))
    assert "TensorRT 8.5.2.2 is on the device, the profile needs 10.3–10.16" in problems
    assert "sm_7.2, the profile is for sm_8.7" in problems and "JetPack 5.1.1" in problems
    assert mismatches(load_profile("jetson-xavier-nx"), {**old, "l4t": "35.3.1"}, 1 << 20) == []
    full = " ".join(mismatches(load_profile("jetson-orin-nano"), ORIN, 40 << 30))
    assert "MiB free" in full and "free some disk" in full


@pytest.mark.parametrize(
    ("facts", "version"),
    [
        ({"l4t": "36.4.0"}, "6.1"),
        ({"l4t": "36.4.3"}, "6.2"),
        ({"l4t": "35.3.1"}, "5.1.1"),
        ({"l4t": "32.7.1"}, "4.6.1"),
        ({"l4t": "38.2.1"}, "7.0"),
        ({"l4t": "36.4.0", "jetpack": "6.1"}, "6.1"),
        ({"l4t": None}, None),
    ],
)
def test_jetpack_from_l4t(facts: dict, version: str | None) -> None:
    assert jetpack(facts) == version


def test_the_real_probe_of_this_machine() -> None:
    ran = subprocess.run([sys.executable, "-", "probe"], input=PROBE.read_bytes(), capture_output=True, check=True)
    facts = json.loads(ran.stdout)
    assert facts["protocol"] == device_facts.PROTOCOL
    assert (
        facts["machine"] == "x86_64" and facts["numpy"] and "CPUExecutionProvider" in facts["onnxruntime"]["providers"]
    )
    assert mismatches(load_profile("cpu-x86"), facts, 1 << 20) == []
    assert any("aarch64" in m for m in mismatches(load_profile("cpu-arm64"), facts, 1 << 20))
    old = " ".join(mismatches(load_profile("cpu-x86"), {**facts, "python": "3.6.9"}, 1 << 20))
    assert "python3 is 3.6.9, tsd-edge's runtime needs >= 3.8" in old


def test_the_probe_parses_on_python36_and_needs_only_the_standard_library() -> None:
    """It runs before anything is uploaded, on whatever python3 the device has, to say what is missing."""
    tree = ast.parse(PROBE.read_text(encoding="utf-8"), feature_version=(3, 6))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module != "__future__", "no relative or __future__ imports"
            imported.add((node.module or "").split(".")[0])
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


# what a module in the zipapp may import besides the standard library and the zipapp's own modules
DEVICE_THIRD_PARTY = {"numpy", "onnxruntime", "openvino", "tensorrt", "tokenizers", "typing_extensions"}


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """The modules `module`'s code imports, relative imports resolved (`from . import x` imports module .x);
    not those under `if TYPE_CHECKING:`, which never run."""
    out: set[str] = set()
    checking = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in checking:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = module.split(".")
            base = base[: len(base) - node.level + (1 if is_package else 0)]
            if node.module:
                out.add(".".join([*base, node.module]))
            else:
                out |= {".".join([*base, a.name]) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            out.add(node.module or "")
    return out


# runtime.package imports tsd_edge.signing (cryptography) only inside read_package's `trust` branch: the device
# never checks a signature (the host did, and the device checks the file is byte for byte the one it verified)
LAZY_OUTSIDE = {("tsd_edge.runtime.package", "tsd_edge.signing")}


def test_the_zipapp_holds_the_runtime_and_nothing_that_needs_pydantic_or_typer(tmp_path: Path) -> None:
    """Every import of every module in tsd-runtime.pyz is the standard library, numpy / the backend runtimes,
    or a module inside the zipapp itself: no pydantic, typer, torch, teacher or trainer is reachable."""
    from tsd_edge.device import zipapp

    pyz = zipapp.build(tmp_path / "cache")
    assert pyz.name.startswith("tsd-runtime-") and zipapp.build(tmp_path / "cache") == pyz  # cached by content
    with zipfile.ZipFile(pyz) as z:
        names = [n for n in z.namelist() if n.endswith(".py")]
        sources = {n: z.read(n).decode("utf-8") for n in names}
    assert "__main__.py" in sources and "tsd_edge/runtime/device.py" in sources
    assert "tsd_edge/runtime/backends/tensorrt_build.py" in sources  # the one engine builder goes along
    modules = {
        (n[: -len("/__init__.py")] if n.endswith("/__init__.py") else n[:-3]).replace("/", "."): n for n in names
    }
    allowed = DEVICE_THIRD_PARTY | set(sys.stdlib_module_names)
    outside = set()
    for module, name in modules.items():
        for imported in _imports(ast.parse(sources[name]), module, name.endswith("__init__.py")):
            if imported.split(".")[0] == "tsd_edge":
                if imported not in modules:
                    outside.add((module, imported))
            else:
                assert imported.split(".")[0] in allowed, f"{module} imports {imported}"
    assert outside == LAZY_OUTSIDE


def test_the_zipapp_runs_the_probe_on_this_python(tmp_path: Path) -> None:
    from tsd_edge.device import zipapp

    ran = subprocess.run([sys.executable, str(zipapp.build(tmp_path)), "probe"], capture_output=True, check=True)
    assert json.loads(ran.stdout)["protocol"] == device_facts.PROTOCOL
    usage = subprocess.run([sys.executable, str(zipapp.build(tmp_path)), "nonsense"], capture_output=True)
    assert usage.returncode == 2 and b"usage: tsd-runtime.pyz" in usage.stderr


# -- ONNX Runtime execution providers -------------------------------------------------------------


def test_providers_are_chosen_in_order_from_those_installed(pipeline: tuple[Path, Path, Ran]) -> None:
    from tsd_edge.runtime.backends.onnxruntime import OnnxRuntimeRunner, choose_providers

    wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(wanted, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(wanted, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == wanted[1:]
    assert choose_providers(None, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(RuntimeMissingError, match="onnxruntime-gpu"):
        choose_providers(["CUDAExecutionProvider"], ["CPUExecutionProvider"])
    _, workdir, ran = pipeline
    assert ran.code == 0
    with OnnxRuntimeRunner(workdir / "onnx" / "model.onnx", 1, wanted) as runner:
        assert runner.providers == ["CPUExecutionProvider"]
    with pytest.raises(RuntimeMissingError, match="list CPUExecutionProvider last"):
        OnnxRuntimeRunner(workdir / "onnx" / "model.onnx", 1, ["CUDAExecutionProvider"])


def test_providers_belong_to_onnxruntime_profiles() -> None:
    base = load_profile("gpu-x86-ort").model_dump(mode="json")
    assert base["providers"][-1] == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="providers: execution providers are for the onnxruntime backend"):
        Profile.model_validate({**load_profile("gpu-x86").model_dump(mode="json"), "providers": base["providers"]})
    with pytest.raises(ValueError, match="providers"):
        Profile.model_validate({**base, "providers": ["CUDA"]})


def test_the_gpu_profile_falls_back_to_the_cpu_and_says_so(workcopy: tuple[Path, Path]) -> None:
    task, w = workcopy
    for stage in ("compile", "check"):
        ran = tsd(stage, task, "--workdir", w, "--target", "gpu-x86-ort")
        assert ran.code == 0, ran.out + ran.err
    details = json.loads((w / "reports" / "gpu-x86-ort.json").read_text())["details"]
    assert details["providers"] == ["CPUExecutionProvider"] and details["ran_on"] == "this host"


def test_the_device_side_typechecks_against_tensorrt_stubs() -> None:
    """The device entry and what it runs there — the runtime's TensorRT runner and the one engine builder —
    checked with mypy against tensorrt-stubs (TensorRT 8.2's APIs go through `Any`: the stubs are 10.13's).
    tests/test_tensorrt.py runs the same tool over every TensorRT module, exporters/tensorrt included."""
    tool = ROOT / "tools" / "typecheck.py"
    modules = [
        "tsd_edge.runtime.device",
        "tsd_edge.runtime.backends.tensorrt",
        "tsd_edge.runtime.backends.tensorrt_build",
    ]
    ran = subprocess.run([sys.executable, str(tool), *modules], capture_output=True, text=True, timeout=300)
    if ran.returncode != 0 and "mypy" not in ran.stdout and "error" in ran.stderr.lower() and "pip" in ran.stderr:
        pytest.skip(f"could not install tensorrt-stubs: {ran.stderr.strip().splitlines()[-1]}")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Success: no issues found in 3 source files" in ran.stdout


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_a_tensorrt_request_without_tensorrt_fails_in_one_line(tmp_path: Path) -> None:
    """The device side of a TensorRT build, run from the zipapp here where TensorRT is missing: the failure comes
    back in response.json as a missing runtime and becomes one RuntimeMissingError line on the host. The request
    carries the host's build settings for the TensorRT version the probe found."""
    from tsd_edge.device import protocol, zipapp
    from tsd_edge.runtime.backends.tensorrt_build import BuildSettings

    body = protocol.request(load_profile("jetson-orin-nano"), "model.fp16.onnx", "10.3.0.30")
    settings = BuildSettings.from_dict(body["tensorrt"]["settings"])
    assert settings.strongly_typed and settings.max_shape == (16, 128)
    assert settings == BuildSettings.from_profile(load_profile("jetson-orin-nano"), 10)
    legacy = BuildSettings.from_dict(
        protocol.request(load_profile("jetson-nano"), "m.onnx", "8.2.1.8")["tensorrt"]["settings"]
    )
    assert not legacy.strongly_typed and legacy.precision_flags == ["FP16"]
    (tmp_path / protocol.REQUEST).write_text(json.dumps(body), encoding="utf-8")
    pyz = zipapp.build(tmp_path / "cache")
    ran = subprocess.run([sys.executable, str(pyz), "build", str(tmp_path / protocol.REQUEST)], capture_output=True)
    assert ran.returncode == 1, ran.stderr
    with pytest.raises(RuntimeMissingError, match=r"the build on the device failed: .*python3-libnvinfer") as info:
        protocol.read_response(tmp_path / protocol.RESPONSE, "ssh://orin")
    assert info.value.exit_code == 4 and info.value.package == "tensorrt"


# -- the gate, re-run on the device ---------------------------------------------------------------


def _package(pipeline: tuple[Path, Path, Ran]) -> Path:
    _, workdir, ran = pipeline
    assert ran.code == 0, ran.err[-2000:]
    (package,) = (workdir / "dist").glob("*.tsdpkg")
    return package


@pytest.mark.network
def test_gate_on_the_device_holds_as_the_local_gate_does(
    device: Device, pipeline: tuple[Path, Path, Ran], tmp_path: Path
) -> None:
    """`tsd-edge gate PKG --device ssh://...`: the package and the runtime go to the device (which has no
    tsd_edge and never tokenizes), it verifies the package, runs its artifact; the host judges its logits."""
    package = _package(pipeline)
    local = tsd("gate", package, "--json", tmp_path / "local.json", "--junit", tmp_path / "local.xml")
    assert local.code == 0, local.out + local.err
    ran = tsd("gate", package, *device.options(), "--json", tmp_path / "device.json", "--junit", tmp_path / "g.xml")
    assert ran.code == 0, ran.out + ran.err
    assert device.server.commands[-2] == "python3 - probe"
    assert device.server.commands[-1].endswith("python3 tsd-runtime.pyz logits request.json")
    assert _files(device.root) == []  # the package, the runtime and the inputs are removed from the device
    here, there = (json.loads((tmp_path / f).read_text())[0] for f in ("local.json", "device.json"))
    assert there["passed"] is True and there["ran_on"].startswith(f"{device.url} (onnxruntime ")
    assert f"Python {platform.python_version()}" in there["ran_on"] and MACHINE in there["ran_on"]
    assert there["report"]["agreement"] == here["report"]["agreement"] and there["report"]["n"] == here["report"]["n"]
    agreement = {c["name"]: c for c in there["checks"]}["agreement"]
    assert agreement["passed"] and f"re-run on {device.url}" in agreement["message"]


def _tamper(package: Path, out: Path) -> Path:
    """The package with one byte of its artifact changed and the manifest left as it was."""
    with tarfile.open(package, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]
    model = bytearray(members["model.onnx"])
    model[len(model) // 2] ^= 0xFF
    members["model.onnx"] = bytes(model)
    with tarfile.open(out, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


@pytest.mark.network
def test_a_tampered_package_is_refused_on_the_device_too(
    device: Device, pipeline: tuple[Path, Path, Ran], tmp_path: Path
) -> None:
    """The host refuses it before anything is sent; the device, sent it anyway (the session without the host's
    check), refuses it as well: its artifact never runs there, and the refusal comes back as one integrity line."""
    from tsd_edge.device import SshDevice, protocol
    from tsd_edge.device.remote import run_logits
    from tsd_edge.runtime.tokenizer import TextEncoder

    bad = _tamper(_package(pipeline), tmp_path / "tampered.tsdpkg")
    ran = tsd("gate", bad, *device.options(), "--json", tmp_path / "g.json", "--junit", tmp_path / "g.xml")
    assert ran.code == 1 and "model.onnx does not match its SHA-256" in ran.out, ran.out + ran.err
    before = len(device.server.commands)

    _, workdir, _ = pipeline
    encode = TextEncoder(workdir / "student" / "tokenizer.json", 64)
    inputs = tmp_path / protocol.INPUTS
    protocol.write_inputs(inputs, [([0, 1], encode(["how do I top up my card", "my card was declined"]))], 2)
    url = SshDevice.parse(device.url, device.keys.identity, device.keys.known_hosts)
    with pytest.raises(PackageIntegrityError, match=r"the gate on the device failed: .*model\.onnx does not match"):
        run_logits(url, bad, inputs, 2, 1, tmp_path / "session")
    assert device.server.commands[before:][-1].endswith("python3 tsd-runtime.pyz logits request.json")
    assert _files(device.root) == []
