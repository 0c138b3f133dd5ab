"""The `trtexec` line that builds the engine tsd-edge's own builder builds, for building by hand on a device.

The builder itself (`build_engine`, `BuildSettings`) is tsd_edge.runtime.backends.tensorrt_build: one copy,
used here on the host and shipped to the device in the runtime's zipapp. `trtexec_command` needs nothing.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from ...runtime.backends.tensorrt import import_tensorrt
from ...runtime.backends.tensorrt_build import WORKSPACE_MIB, BuildSettings, build_engine

TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # where JetPack puts it (not on PATH)
INPUTS = ("input_ids", "attention_mask")


def trtexec_command(onnx: Path, engine: Path, settings: BuildSettings, timing_cache: Path | None = None) -> list[str]:
    """The trtexec argv that builds the engine `build_engine` would build (for building by hand on the device)."""

    def shapes(shape: tuple[int, int]) -> str:
        return ",".join(f"{name}:{shape[0]}x{shape[1]}" for name in INPUTS)

    argv = [
        TRTEXEC,
        f"--onnx={onnx}",
        f"--saveEngine={engine}",
        f"--minShapes={shapes(settings.min_shape)}",
        f"--optShapes={shapes(settings.opt_shape)}",
        f"--maxShapes={shapes(settings.max_shape)}",
    ]
    # --memPoolSize arrived in TensorRT 8.4; 8.2 (Jetson Nano) still has --workspace (MiB)
    if settings.trt_major >= 10:
        argv.append(f"--memPoolSize=workspace:{settings.workspace_mib}M")
    else:
        argv.append(f"--workspace={settings.workspace_mib}")
    if settings.strongly_typed:
        argv.append("--stronglyTyped")
    argv += [f"--{flag.lower()}" for flag in settings.precision_flags]
    if settings.dla_core is not None:
        argv += [f"--useDLACore={settings.dla_core}", "--allowGPUFallback"]
    if timing_cache is not None:
        argv.append(f"--timingCacheFile={timing_cache}")
    return argv


def trtexec_line(*args: object, **kwargs: object) -> str:
    return shlex.join(trtexec_command(*args, **kwargs))  # type: ignore[arg-type]


__all__ = ["INPUTS", "TRTEXEC", "WORKSPACE_MIB", "BuildSettings", "build_engine", "import_tensorrt", "trtexec_command"]
