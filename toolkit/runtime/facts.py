"""What a device is: Python, numpy, the runtimes and their providers, GPU, Jetson Linux release, free disk.

The host feeds this one file to the device's python3 on stdin (`python3 - probe`, nothing is written there)
before anything is uploaded, so it needs only the standard library and parses on any python3 (3.6 too:
the host then says that the runtime needs 3.8). `tsd_edge.runtime.device` imports it for the build record.
"""

import ctypes
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from typing import Any, Dict, Optional, Tuple

# the device protocol's version: the probe's facts, request.json and response.json (tsd_edge.device.protocol)
PROTOCOL = 2
TEGRA_RELEASE = "/etc/nv_tegra_release"
TRTEXEC = "/usr/src/tensorrt/bin/trtexec"


def _version_of(module_name: str) -> Tuple[Any, str]:
    try:
        module = __import__(module_name)
    except Exception as exc:  # an installed but broken runtime says why
        return None, "{}: {}".format(type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
    return module, str(getattr(module, "__version__", "unknown"))


def gpu() -> Optional[Dict[str, str]]:
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


def l4t() -> Optional[str]:
    """Jetson Linux (L4T) release from /etc/nv_tegra_release: '# R36 (release), REVISION: 4.3, ...' -> 36.4.3."""
    try:
        with open(TEGRA_RELEASE, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    found = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{found.group(1)}.{found.group(2)}" if found else text.strip().splitlines()[0][:80]


def jetpack_package() -> Optional[str]:
    """The version of the nvidia-jetpack meta-package ('6.1+b123' -> '6.1'), where it is installed."""
    try:
        out = subprocess.check_output(
            ["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"], stderr=subprocess.DEVNULL, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.match(r"[\d.]+", out.decode(errors="replace").strip())
    return found.group(0).rstrip(".") if found else None


def probe() -> Dict[str, Any]:
    facts = {
        "protocol": PROTOCOL,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "system": platform.system(),
        "hostname": socket.gethostname(),
        "cwd": os.getcwd(),
        "disk_free_bytes": shutil.disk_usage(".").free,
    }  # type: Dict[str, Any]
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
    facts["gpu"] = gpu()
    facts["l4t"] = l4t()
    facts["jetpack"] = jetpack_package()
    return facts


if __name__ == "__main__":
    import json

    if sys.argv[1:] != ["probe"]:
        sys.stderr.write("usage: python3 - probe < facts.py\n")
        sys.exit(2)
    sys.stdout.write(json.dumps(probe()) + "\n")
