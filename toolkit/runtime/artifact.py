"""A compiled model on disk (`Artifact`) and what runs it (`Runner`): the contract between the build side
(tsd_edge.exporters) and the run side (tsd_edge.runtime.backends)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict

import numpy as np

try:  # Python 3.8 has Protocol in typing already; keep the import where mypy expects it
    from typing import Protocol
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol  # type: ignore[assignment]

Batch = Dict[str, np.ndarray]  # typing.Dict, not dict[...]: this module runs on Python 3.8


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
    """Runs an artifact: a context manager with one inference method returning logits (or embeddings)."""

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc: object) -> None: ...

    def run(self, batch: Batch) -> np.ndarray: ...
