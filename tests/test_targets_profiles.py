"""The shipped target profiles: every one loads, the device facts are right, aliases and refusals."""

from __future__ import annotations

import pytest
from conftest import tsd
from tsd_edge.errors import InputError
from tsd_edge.targets import ALIASES, Profile, VersionRange, builtin_names, load_profile

REQUIRED = [
    "jetson-orin-nano",
    "jetson-orin-nx",
    "jetson-agx-orin",
    "jetson-thor",
    "jetson-xavier-nx",
    "jetson-nano",
    "gpu-x86",
    "cpu-x86",
    "cpu-arm64",
    "openvino-cpu",
]

# (compute capability, DLA cores, a TensorRT version inside the range, one outside) — DESIGN.md's table
FACTS = {
    "jetson-nano": ("5.3", 0, "8.2.1.8", "8.5.2"),
    "jetson-xavier-nx": ("7.2", 2, "8.5.2.2", "10.3.0"),
    "jetson-orin-nano": ("8.7", 0, "10.3.0.30", "8.5.2"),
    "jetson-agx-orin": ("8.7", 2, "10.16.0", "10.17"),
    "jetson-thor": ("11.0", 0, "10.13.3", "10.3.0"),
}


def test_every_required_profile_ships_and_loads() -> None:
    assert set(REQUIRED) <= set(builtin_names())
    for name in REQUIRED:
        assert isinstance(load_profile(name), Profile)


@pytest.mark.parametrize("name", sorted(FACTS))
def test_jetson_facts(name: str) -> None:
    cc, dla, inside, outside = FACTS[name]
    p = load_profile(name)
    assert p.backend == "tensorrt" and p.build_on == "device" and p.device.architecture == "aarch64"
    assert p.device.compute_capability == cc and p.device.dla_cores == dla
    assert p.tensorrt is not None and inside in p.tensorrt and outside not in p.tensorrt
    assert p.jetpack is not None


def test_trt_majors_and_dla() -> None:
    assert load_profile("jetson-nano").trt_major == 8
    assert load_profile("jetson-orin-nano").trt_major == 10
    assert load_profile("jetson-xavier-nx").dla  # FP16 on DLA with GPU fallback
    assert not load_profile("jetson-thor").dla
    assert load_profile("gpu-x86").build_on == "host"


def test_jetson_alias_resolves_to_the_documented_default() -> None:
    assert ALIASES["jetson"] == "jetson-orin-nano"
    assert load_profile("jetson").name == "jetson-orin-nano"


@pytest.mark.parametrize(("typo", "meant"), [("jetson-orin-nan", "jetson-orin-nano"), ("jetsn", "jetson")])
def test_typos_suggest_the_closest(typo: str, meant: str) -> None:
    with pytest.raises(InputError, match=f"did you mean '{meant}'"):
        load_profile(typo)


def test_version_range() -> None:
    r = VersionRange(min="10.3", max="10.16")
    assert "10.3.0.30" in r and "10.16.1" in r and "10.9" in r
    assert "10.2.9" not in r and "10.17.0" not in r and "8.6" not in r
    assert str(r) == "10.3–10.16" and str(VersionRange(min="10.13")) == "10.13+"
    with pytest.raises(ValueError, match="min <= max"):
        VersionRange(min="10.3", max="8.6")


def _profile(**changes: object) -> dict:
    base = load_profile("jetson-orin-nano").model_dump(mode="json")
    return {**base, **changes}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tensorrt": None}, "needs the TensorRT version range"),
        ({"dla": True}, "no DLA core"),
        (
            {
                "device": {"architecture": "aarch64", "compute_capability": "8.7", "dla_cores": 2},
                "dla": True,
                "precision": "fp32",
            },
            "DLA runs fp16 or int8 only",
        ),
        ({"device": {"architecture": "aarch64", "compute_capability": "sm87"}}, "compute_capability"),
    ],
)
def test_inconsistent_profiles_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Profile.model_validate(_profile(**changes))


def test_profiles_command_prints_one_line_each() -> None:
    ran = tsd("profiles")
    assert ran.code == 0, ran.err
    lines = [line for line in ran.out.splitlines() if line.strip()]
    for name in builtin_names():
        assert sum(line.split()[0] == name for line in lines) == 1, name
    assert any("jetson" in line and "jetson-orin-nano" in line and "alias" in line for line in lines)
