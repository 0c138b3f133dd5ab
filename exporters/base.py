"""The build-side protocol: `build(onnx, profile, calibration, workdir) -> Artifact`.

Running an artifact is the runtime's job (tsd_edge.runtime.backends.open_runner): a backend builds and
never runs what it built, so there is one runner per backend, used by every stage, the gate and the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..runtime.artifact import Artifact, Batch, Runner

if TYPE_CHECKING:  # pydantic costs ~15 MiB; a device that runs a package never needs it
    from ..targets import Profile


class Backend(Protocol):
    """A backend may also have `lower(onnx, profile, calibration, workdir) -> Lowered` (the ONNX at the
    target's precision, checked on the host) and `refusal(profile) -> str | None` (why this machine
    may not build for the profile); the compile stage uses them where they exist."""

    name: str

    def available(self) -> bool: ...

    def build(self, onnx_path: Path, profile: Profile, calibration: Sequence[Batch], workdir: Path) -> Artifact: ...


__all__ = ["Artifact", "Backend", "Batch", "Runner"]
