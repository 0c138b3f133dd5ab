"""Target profiles: one YAML file per target (backend, precision, shape ranges, device facts).

Built-in profiles ship in `tsd_edge.profiles`; a path to a YAML file works too. An unknown name
is bad input and suggests the closest known one. A family name (`jetson`) is an alias for that
family's documented default (`ALIASES`).

A profile with `build_on: device` (every Jetson) cannot be built on an x86 host: a TensorRT engine
runs only on the GPU model and TensorRT version that built it. The host still lowers the ONNX
(FP16 / INT8 Q/DQ) and predicts its agreement in ONNX Runtime; the engine is built on the device.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import InputError
from .textfile import read_text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShapeRange(_Strict):
    min: int = Field(ge=1)
    opt: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ShapeRange:
        if not self.min <= self.opt <= self.max:
            raise ValueError(f"need min <= opt <= max, got {self.min}/{self.opt}/{self.max}")
        return self


class Calibration(_Strict):
    samples: int = Field(default=256, ge=1)
    method: Literal["minmax", "percentile", "entropy"] = "minmax"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


class VersionRange(_Strict):
    """An inclusive range of dotted versions; `max: 10.3` admits 10.3.0.30 (only the given parts are compared)."""

    min: str = Field(pattern=r"^\d+(\.\d+)*$")
    max: str | None = Field(default=None, pattern=r"^\d+(\.\d+)*$")

    @model_validator(mode="after")
    def _ordered(self) -> VersionRange:
        if self.max is not None and _version(self.max) < _version(self.min):
            raise ValueError(f"need min <= max, got {self.min}/{self.max}")
        return self

    def __contains__(self, version: object) -> bool:
        v = _version(str(version))
        if v[: len(_version(self.min))] < _version(self.min):
            return False
        return self.max is None or v[: len(_version(self.max))] <= _version(self.max)

    def __str__(self) -> str:
        if self.max is None:
            return f"{self.min}+"
        return self.min if self.max == self.min else f"{self.min}–{self.max}"


class Device(_Strict):
    architecture: str
    isa: list[str] = Field(default_factory=list)
    gpu: str | None = None  # GPU architecture name, e.g. Ampere
    compute_capability: str | None = Field(default=None, pattern=r"^\d+\.\d+$")
    memory_gb: float | None = None
    dla_cores: int = Field(default=0, ge=0)


class Profile(_Strict):
    name: str
    description: str
    backend: str
    precision: Literal["fp32", "fp16", "int8"]
    batch: ShapeRange
    sequence: ShapeRange
    threads: int | None = Field(default=None, ge=1)
    build_on: Literal["host", "device"] = "host"
    latency_budget_ms: float | None = Field(default=None, gt=0)
    calibration: Calibration = Calibration()
    device: Device
    tensorrt: VersionRange | None = None  # the TensorRT versions an engine for this target is built with
    jetpack: VersionRange | None = None
    dla: bool = False  # put the engine on DLA core 0, falling back to the GPU for layers DLA cannot run
    # onnxruntime: execution providers in order of preference; the runner uses those installed, in this order
    providers: list[Annotated[str, Field(pattern=r"^[A-Za-z]+ExecutionProvider$")]] | None = Field(
        default=None, min_length=1
    )

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        problems = []
        if self.backend == "tensorrt":
            if self.tensorrt is None:
                problems.append("tensorrt: a tensorrt profile needs the TensorRT version range")
            if self.device.compute_capability is None:
                problems.append("device.compute_capability: a tensorrt profile needs it")
        if self.dla and self.device.dla_cores < 1:
            problems.append(f"dla: the device has no DLA core (device.dla_cores={self.device.dla_cores})")
        if self.dla and self.precision == "fp32":
            problems.append("dla: DLA runs fp16 or int8 only")
        if self.providers is not None and self.backend != "onnxruntime":
            problems.append(f"providers: execution providers are for the onnxruntime backend, not {self.backend}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def trt_major(self) -> int | None:
        return _version(self.tensorrt.min)[0] if self.tensorrt else None


# family names resolve to a documented default (docs/targets.md)
ALIASES = {"jetson": "jetson-orin-nano", "orin": "jetson-orin-nano", "gpu": "gpu-x86", "openvino": "openvino-cpu"}


def builtin_names() -> list[str]:
    folder = resources.files("tsd_edge.profiles")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_profile(name_or_path: str) -> Profile:
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise InputError(f"profile file not found: {path}")
        text, where = read_text(path, "give a profile YAML file"), str(path)
    else:
        names = builtin_names()
        name_or_path = ALIASES.get(name_or_path, name_or_path)
        if name_or_path not in names:
            close = difflib.get_close_matches(name_or_path, [*names, *ALIASES], n=1, cutoff=0.4)
            hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(names)}"
            raise InputError(f"unknown target '{name_or_path}': {hint} (see `tsd-edge profiles`)")
        text = resources.files("tsd_edge.profiles").joinpath(f"{name_or_path}.yaml").read_text(encoding="utf-8")
        where = f"profile {name_or_path}"
    try:
        return Profile.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        problems = (
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            if isinstance(exc, ValidationError)
            else str(exc).replace("\n", " ")
        )
        raise InputError(f"{where}: invalid profile: {problems}") from None


def all_profiles() -> list[Profile]:
    return [load_profile(name) for name in builtin_names()]
