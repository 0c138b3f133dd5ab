"""Build a TensorRT engine from a lowered ONNX file, and the `trtexec` line that builds the same engine.

TensorRT >= 10: a strongly typed network, so every layer runs at the precision the lowered ONNX
gives it (FP16 casts, INT8 Q/DQ): no precision flags, which TensorRT 10 deprecates and 11 removes.
TensorRT 8.x: an explicit-batch network and the FP16 / INT8 builder flags (INT8 from the Q/DQ nodes,
no calibrator). DLA builds (Xavier) also use the flags, with GPU fallback for what DLA cannot run.
Both: one optimization profile from the target's batch and sequence ranges, and a timing cache
kept next to the engine so a rebuild on the same device reuses its kernel timings.

`tensorrt` is imported inside the functions that need it; `trtexec_command` needs nothing.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ...errors import InputError, RuntimeMissingError
from ...targets import Profile

TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # where JetPack puts it (not on PATH)
INPUTS = ("input_ids", "attention_mask")
WORKSPACE_MIB = 1024


@dataclass(frozen=True)
class BuildSettings:
    """Everything that decides the engine, from the profile; the Python build and trtexec both read it."""

    trt_major: int
    precision: str
    min_shape: tuple[int, int]
    opt_shape: tuple[int, int]
    max_shape: tuple[int, int]
    dla_core: int | None
    workspace_mib: int = WORKSPACE_MIB

    @classmethod
    def from_profile(cls, profile: Profile, trt_major: int | None = None) -> BuildSettings:
        major = trt_major or profile.trt_major
        if major is None:
            raise InputError(f"profile {profile.name}: a TensorRT build needs `tensorrt: {{min: ...}}` in the profile")
        b, s = profile.batch, profile.sequence
        return cls(
            trt_major=major,
            precision=profile.precision,
            min_shape=(b.min, s.min),
            opt_shape=(b.opt, s.opt),
            max_shape=(b.max, s.max),
            dla_core=0 if profile.dla else None,
        )

    @property
    def strongly_typed(self) -> bool:
        return self.trt_major >= 10 and self.dla_core is None

    @property
    def precision_flags(self) -> list[str]:
        """Builder flags for networks that are not strongly typed (TensorRT 8.x, DLA)."""
        if self.strongly_typed:
            return []
        return {"fp32": [], "fp16": ["FP16"], "int8": ["FP16", "INT8"]}[self.precision]


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


def import_tensorrt() -> ModuleType:
    """TensorRT, or RuntimeMissingError naming the package. Callers then `import tensorrt as trt` themselves,
    so mypy checks their calls against the stubs."""
    try:
        import tensorrt
    except ImportError:
        raise RuntimeMissingError("the tensorrt backend", "tensorrt") from None
    if not hasattr(tensorrt, "Builder"):  # a stubs-only or broken install imports as an empty namespace
        raise RuntimeMissingError("the tensorrt backend (found only an empty 'tensorrt' namespace)", "tensorrt")
    return tensorrt


def build_engine(onnx: Path, engine: Path, settings: BuildSettings, timing_cache: Path) -> None:
    """Parse the ONNX, build with the settings, write the engine and the updated timing cache."""
    import_tensorrt()
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if settings.strongly_typed:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif settings.trt_major >= 10:
        flags = 0  # explicit batch is the only mode in TensorRT 10
    else:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"TensorRT could not parse {onnx}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    for flag in settings.precision_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if settings.dla_core is not None:
        if builder.num_DLA_cores <= settings.dla_core:
            raise InputError(
                f"the profile asks for DLA core {settings.dla_core}; this device has {builder.num_DLA_cores}: "
                "set `dla: false` in the profile"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = settings.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    shapes = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        shapes.set_shape(
            name, trt.Dims2(*settings.min_shape), trt.Dims2(*settings.opt_shape), trt.Dims2(*settings.max_shape)
        )
    config.add_optimization_profile(shapes)

    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise InputError(f"TensorRT could not build an engine from {onnx} (run with --debug and see its log above)")
    engine.write_bytes(bytes(serialized))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
