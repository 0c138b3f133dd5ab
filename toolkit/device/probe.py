"""What a device is, against what a profile needs: the probe's facts, and every mismatch in one line.

The facts come from tsd_edge.runtime.facts fed to the device's `python3 - probe` (python3 version, numpy,
onnxruntime and its providers, TensorRT, GPU name and compute capability from the CUDA driver, Jetson Linux
release from /etc/nv_tegra_release, the nvidia-jetpack package, architecture, free disk).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..targets import Profile

MIN_PYTHON = (3, 8)  # what tsd_edge.runtime, shipped to the device as a zipapp, runs on

# Jetson Linux (L4T) release -> JetPack, for devices without the nvidia-jetpack meta-package
# (NVIDIA's JetPack archive pages). The longest matching prefix wins.
L4T_JETPACK = {
    "32.6": "4.6",
    "32.7.1": "4.6.1",
    "32.7.2": "4.6.2",
    "32.7.3": "4.6.3",
    "32.7.4": "4.6.4",
    "32.7.5": "4.6.5",
    "32.7.6": "4.6.6",
    "35.1": "5.0.2",
    "35.2": "5.1",
    "35.3": "5.1.1",
    "35.4": "5.1.2",
    "35.5": "5.1.3",
    "35.6.0": "5.1.4",
    "35.6.1": "5.1.5",
    "36.2": "6.0",
    "36.3": "6.0",
    "36.4": "6.1",
    "36.4.3": "6.2",
    "36.4.4": "6.2.1",
    "38.2": "7.0",
    "38.4": "7.1",
}

ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64"}


def jetpack(facts: dict[str, Any]) -> str | None:
    """The device's JetPack version: the nvidia-jetpack package's, else from its L4T release."""
    if facts.get("jetpack"):
        return str(facts["jetpack"])
    l4t = str(facts.get("l4t") or "")
    parts = l4t.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in L4T_JETPACK:
            return L4T_JETPACK[".".join(parts[:n])]
    return None


def _arch(name: str) -> str:
    return ARCH_ALIASES.get(name.lower(), name.lower())


def _python_ok(version: str) -> bool:
    try:
        return tuple(int(p) for p in version.split(".")[:2]) >= MIN_PYTHON
    except ValueError:
        return False


def runtime_mismatches(facts: dict[str, Any]) -> list[str]:
    """What keeps the device from running tsd-edge's runtime at all (python3 >= 3.8 and numpy), with the fix."""
    out: list[str] = []
    if not _python_ok(str(facts.get("python", "0"))):
        out.append(
            f"python3 is {facts.get('python')}, tsd-edge's runtime needs >= {'.'.join(map(str, MIN_PYTHON))}: "
            "install a newer python3 (with the target runtime's bindings for it)"
        )
    if not facts.get("numpy"):
        out.append(f"numpy is missing ({facts.get('numpy_error', 'not importable')}): pip3 install numpy")
    return out


def mismatches(profile: Profile, facts: dict[str, Any], need_bytes: int) -> list[str]:
    """Everything that keeps this device from building and running the profile's artifact, each with its fix."""
    out = runtime_mismatches(facts)
    machine = _arch(str(facts.get("machine", "?")))
    if machine != _arch(profile.device.architecture):
        out.append(
            f"the device is {machine}, the profile is for {profile.device.architecture}: "
            "pick the profile of this device (`tsd-edge profiles`)"
        )
    if profile.backend == "onnxruntime":
        ort = facts.get("onnxruntime") or {}
        if "version" not in ort:
            out.append(f"onnxruntime is missing ({ort.get('error', 'not importable')}): pip3 install onnxruntime")
        elif profile.providers and not set(profile.providers) & set(ort.get("providers", [])):
            out.append(
                f"onnxruntime {ort['version']} has {', '.join(ort.get('providers', []))}, none of the profile's "
                f"providers {', '.join(profile.providers)}: install the onnxruntime build that has them"
            )
    elif profile.backend == "tensorrt":
        out += _tensorrt_mismatches(profile, facts)
    free = int(facts.get("disk_free_bytes", 0))
    if free < need_bytes:
        out.append(
            f"{free / 2**20:.0f} MiB free in {facts.get('cwd', '~')}, the build needs about "
            f"{need_bytes / 2**20:.0f} MiB: free some disk on the device"
        )
    return out


def _tensorrt_mismatches(profile: Profile, facts: dict[str, Any]) -> list[str]:
    out: list[str] = []
    trt = facts.get("tensorrt") or {}
    if "version" not in trt:
        hint = " (trtexec is there, but the held-out check needs the bindings)" if facts.get("trtexec") else ""
        out.append(
            f"TensorRT's Python bindings are missing{hint}: on JetPack, `sudo apt install python3-libnvinfer`; "
            "elsewhere `pip install tensorrt`"
        )
    elif profile.tensorrt is not None and trt["version"] not in profile.tensorrt:
        out.append(
            f"TensorRT {trt['version']} is on the device, the profile needs {profile.tensorrt}: use a device "
            "with a matching JetPack, or a profile for this version"
        )
    gpu = facts.get("gpu") or {}
    if "compute_capability" not in gpu:
        out.append(f"no CUDA GPU found ({gpu.get('error', 'no libcuda.so.1')}): is this the right device?")
    elif profile.build_on == "device" and gpu["compute_capability"] != profile.device.compute_capability:
        out.append(
            f"the GPU ({gpu.get('name')}) is sm_{gpu['compute_capability']}, the profile is for "
            f"sm_{profile.device.compute_capability}: pick the profile of this device (`tsd-edge profiles`)"
        )
    if profile.jetpack is not None:
        version = jetpack(facts)
        if version is None:
            why = f"L4T {facts['l4t']} is not in tsd-edge's table" if facts.get("l4t") else "no /etc/nv_tegra_release"
            out.append(
                f"cannot tell the device's JetPack ({why}), the profile needs {profile.jetpack}: "
                "install the nvidia-jetpack package, or use a profile without `jetpack:`"
            )
        elif version not in profile.jetpack:
            out.append(
                f"JetPack {version} (L4T {facts.get('l4t')}) is on the device, the profile needs {profile.jetpack}: "
                "flash a matching JetPack, or use a profile for this one"
            )
    return out


def describe(facts: dict[str, Any]) -> str:
    """'host: architecture, GPU, runtime versions, JetPack' in one line."""
    parts = [str(facts.get("machine"))]
    gpu = facts.get("gpu") or {}
    if gpu.get("name"):
        parts.append(f"{gpu['name']} sm_{gpu.get('compute_capability')}")
    for runtime in ("tensorrt", "onnxruntime"):
        if (facts.get(runtime) or {}).get("version"):
            parts.append(f"{runtime} {facts[runtime]['version']}")
    if jetpack(facts):
        parts.append(f"JetPack {jetpack(facts)}")
    return f"{facts.get('hostname')}: {', '.join(parts)}"
