"""Target profiles: one YAML file per target (backend, precision, shape ranges, device facts).

Built-in profiles ship in `tsd_edge.profiles`; a path to a YAML file works too. An unknown name
is bad input and suggests the closest known one.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import InputError


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


class Device(_Strict):
    architecture: str
    isa: list[str] = Field(default_factory=list)
    compute_capability: str | None = None
    memory_gb: float | None = None
    dla_cores: int = 0


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


def builtin_names() -> list[str]:
    folder = resources.files("tsd_edge.profiles")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_profile(name_or_path: str) -> Profile:
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise InputError(f"profile file not found: {path}")
        text, where = path.read_text(encoding="utf-8"), str(path)
    else:
        names = builtin_names()
        if name_or_path not in names:
            close = difflib.get_close_matches(name_or_path, names, n=1, cutoff=0.4)
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
