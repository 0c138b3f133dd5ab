"""The backend protocol: `build(onnx, profile, calibration, workdir) -> Artifact`, `load(artifact) -> Runner`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # pydantic costs ~15 MiB; a device that runs a package never needs it
    from ..targets import Profile

Batch = dict[str, np.ndarray]


@dataclass
class Artifact:
    """A compiled model on disk: its file, and how it was built (recorded in the package manifest).
    `extra_files` are other files the artifact needs beside `path`, by name (OpenVINO's model.bin)."""

    backend: str
    path: Path
    precision: str
    build: dict[str, Any] = field(default_factory=dict)
    extra_files: list[str] = field(default_factory=list)

    def save_meta(self, path: Path) -> None:
        data = {**asdict(self), "path": self.path.name}
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load_meta(cls, path: Path) -> Artifact:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["path"] = path.parent / data["path"]
        return cls(**data)


class Runner(Protocol):
    """Runs an artifact: a context manager with one inference method returning logits."""

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc: object) -> None: ...

    def run(self, batch: Batch) -> np.ndarray: ...


class Backend(Protocol):
    """A backend may also have `lower(onnx, profile, calibration, workdir) -> Lowered` (the ONNX at the
    target's precision, checked on the host) and `refusal(profile) -> str | None` (why this machine
    may not build for the profile); the compile stage uses them where they exist."""

    name: str

    def available(self) -> bool: ...

    def build(self, onnx_path: Path, profile: Profile, calibration: Sequence[Batch], workdir: Path) -> Artifact: ...

    def load(self, artifact: Artifact, threads: int | None = None) -> Runner: ...
