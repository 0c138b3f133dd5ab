"""The build-side protocol: `build(onnx, profile, calibration, workdir) -> Artifact`, with two optional steps
declared here with their defaults (a backend overrides what it has):

    lower(onnx, profile, calibration, workdir) -> Lowered | None   the ONNX at the target's precision, run on the
                                                                   host to predict the artifact's agreement
                                                                   (default None: nothing to predict)
    refusal(profile) -> str | None                                 why this machine may not build for the profile
                                                                   (default None: it may)

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
    from .lowering import Lowered


class Backend(Protocol):
    """What the compile stage calls. Backends subclass it, so the defaults below are theirs unless overridden."""

    name: str

    def available(self) -> bool: ...

    def build(self, onnx_path: Path, profile: Profile, calibration: Sequence[Batch], workdir: Path) -> Artifact: ...

    def lower(self, onnx_path: Path, profile: Profile, calibration: Sequence[Batch], workdir: Path) -> Lowered | None:
        """The ONNX lowered to the target's precision in `workdir`, or None when the backend has no such step."""
        return None

    def refusal(self, profile: Profile) -> str | None:
        """Why this machine may not build `profile`'s artifact, or None when it may."""
        return None


__all__ = ["Artifact", "Backend", "Batch", "Runner"]
