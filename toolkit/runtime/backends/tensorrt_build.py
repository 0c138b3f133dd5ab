"""The one TensorRT engine builder: a lowered ONNX file to a serialized engine, on the host (exporters/tensorrt,
`build_on: host` profiles) and on the device (tsd_edge.runtime.device, shipped there in the zipapp).

TensorRT >= 10: a strongly typed network, so every layer runs at the precision the lowered ONNX
gives it (FP16 casts, INT8 Q/DQ): no precision flags, which TensorRT 10 deprecates and 11 removes.
TensorRT 8.x: an explicit-batch network and the FP16 / INT8 builder flags (INT8 from the Q/DQ nodes,
no calibrator); the workspace is `set_memory_pool_limit` from 8.4, `max_workspace_size` on 8.2.
DLA builds (Xavier) also use the flags, with GPU fallback for what DLA cannot run.
Both: one optimization profile from the target's batch and sequence ranges, and a timing cache
kept next to the engine so a rebuild on the same device reuses its kernel timings.

Plain settings (`BuildSettings`, a dataclass; `from_profile` only reads a profile's attributes), no pydantic:
this module runs on Python 3.8 on a Jetson. Its TensorRT 10 calls are checked with mypy against
tensorrt-stubs (tools/typecheck.py); 8.x-only calls go through `Any`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Tuple

from ...errors import BuildError, InputError
from .tensorrt import import_tensorrt

if TYPE_CHECKING:
    from ...targets import Profile

WORKSPACE_MIB = 1024
Shape = Tuple[int, int]


@dataclass(frozen=True)
class BuildSettings:
    """Everything that decides the engine; the Python build (host or device) and trtexec all read it."""

    trt_major: int
    precision: str
    min_shape: Shape
    opt_shape: Shape
    max_shape: Shape
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

    def to_dict(self) -> dict[str, Any]:
        """As JSON for the device's request.json (`from_dict` reads it back there)."""
        return {
            "trt_major": self.trt_major,
            "precision": self.precision,
            "min_shape": list(self.min_shape),
            "opt_shape": list(self.opt_shape),
            "max_shape": list(self.max_shape),
            "dla_core": self.dla_core,
            "workspace_mib": self.workspace_mib,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuildSettings:
        return cls(
            trt_major=int(data["trt_major"]),
            precision=str(data["precision"]),
            min_shape=(int(data["min_shape"][0]), int(data["min_shape"][1])),
            opt_shape=(int(data["opt_shape"][0]), int(data["opt_shape"][1])),
            max_shape=(int(data["max_shape"][0]), int(data["max_shape"][1])),
            dla_core=None if data.get("dla_core") is None else int(data["dla_core"]),
            workspace_mib=int(data.get("workspace_mib", WORKSPACE_MIB)),
        )

    def record(self) -> dict[str, Any]:
        """What an engine's metadata records of how it was built."""
        return {
            "strongly_typed": self.strongly_typed,
            "builder_flags": self.precision_flags,
            "dla_core": self.dla_core,
            "shapes": {"min": list(self.min_shape), "opt": list(self.opt_shape), "max": list(self.max_shape)},
        }


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
        raise BuildError(f"TensorRT could not parse {onnx.name}: {errors}")

    config = builder.create_builder_config()
    workspace = settings.workspace_mib << 20
    if hasattr(config, "set_memory_pool_limit"):  # TensorRT >= 8.4
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:  # TensorRT 8.2 (Jetson Nano), absent from the TensorRT 10 stubs
        legacy: Any = config
        legacy.max_workspace_size = workspace
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
        raise BuildError(f"TensorRT could not build an engine from {onnx.name} (run with --debug and see its log)")
    engine.write_bytes(bytes(serialized))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
