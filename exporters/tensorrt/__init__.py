"""TensorRT backend: lower the ONNX on the host, build the engine where it will run.

    lower(onnx, profile, calibration, workdir)   host: model.<precision>.onnx (FP16 / INT8 Q/DQ) + trtexec.txt
    build(onnx, profile, calibration, workdir)   where it runs: model.engine + timing.cache, metadata in the artifact
    (building it: tsd_edge.runtime.backends.tensorrt_build, the one builder, on the host and on the device)
    (running it: tsd_edge.runtime.backends.tensorrt, the one TensorRT runner)

An engine runs only on the GPU model and TensorRT version that built it, so a `build_on: device`
profile (every Jetson) is built on the device itself; the host refuses with the reason and the
command to run there (`refusal`). The engine's metadata records the TensorRT version, the GPU's
name and compute capability, the profile and the SHA-256 of the ONNX it was built from.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from pathlib import Path

from ...digest import sha256_file
from ...errors import InputError
from ...targets import Profile
from ..base import Artifact, Backend, Batch
from ..lowering import Lowered, lower
from .loader import BuildSettings, build_engine, import_tensorrt, trtexec_line

TEGRA_RELEASE = Path("/etc/nv_tegra_release")


class TensorRTBackend(Backend):
    name = "tensorrt"

    def available(self) -> bool:
        try:
            import_tensorrt()
        except Exception:
            return False
        return True

    def lower(self, onnx_path: Path, profile: Profile, calibration: Sequence[Batch], workdir: Path) -> Lowered:
        """The ONNX at the target's precision, plus the trtexec line that builds it by hand."""
        lowered = lower(onnx_path, profile.precision, calibration, workdir)
        (workdir / "lowered.json").write_text(json.dumps(lowered.details, indent=2) + "\n", encoding="utf-8")
        line = trtexec_line(
            Path(lowered.path.name), Path("model.engine"), BuildSettings.from_profile(profile), Path("timing.cache")
        )
        (workdir / "trtexec.txt").write_text(line + "\n", encoding="utf-8")
        return lowered

    def refusal(self, profile: Profile) -> str | None:
        """Why this machine may not build the profile's engine, or None when it may."""
        if profile.build_on != "device":
            return None
        if TEGRA_RELEASE.is_file() and platform.machine() == profile.device.architecture:
            return None
        sm = (profile.device.compute_capability or "").replace(".", "")
        return (
            f"a TensorRT engine runs only on the GPU model and TensorRT version that built it, and this "
            f"{platform.machine()} host is not the target ({profile.device.gpu or 'GPU'} sm_{sm}, "
            f"TensorRT {profile.tensorrt})"
        )

    def build(self, onnx_path: Path, profile: Profile, calibration: Sequence[Batch], workdir: Path) -> Artifact:
        import_tensorrt()
        import tensorrt as trt

        from ...runtime.backends.tensorrt import device_facts

        why = self.refusal(profile)
        if why:
            raise InputError(f"{profile.name}: {why}: build on the device")
        version = str(trt.__version__)
        if profile.tensorrt is not None and version not in profile.tensorrt:
            raise InputError(
                f"{profile.name}: TensorRT {version} is installed; the profile needs {profile.tensorrt}: "
                "use a device with a matching JetPack, or a profile for this version"
            )
        facts = device_facts()
        if profile.build_on == "device" and facts["compute_capability"] != profile.device.compute_capability:
            raise InputError(
                f"{profile.name}: this GPU ({facts['device_name']}) is sm_{facts['compute_capability']}, the profile "
                f"is for sm_{profile.device.compute_capability}: pick the profile of this device (`tsd-edge profiles`)"
            )
        lowered = self.lower(onnx_path, profile, calibration, workdir)
        settings = BuildSettings.from_profile(profile, int(version.split(".")[0]))
        engine = workdir / "model.engine"
        build_engine(lowered.path, engine, settings, workdir / "timing.cache")
        meta = {
            "tensorrt": version,
            **facts,
            "profile": profile.name,
            "onnx_sha256": sha256_file(lowered.path),
            **settings.record(),
            **lowered.details,
        }
        return Artifact(backend=self.name, path=engine, precision=profile.precision, build=meta)


__all__ = ["BuildSettings", "TensorRTBackend"]
