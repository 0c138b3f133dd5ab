"""Target profiles: the built-in ones, YAML files given by path, and the errors for both."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from tsd_edge.errors import InputError
from tsd_edge.targets import Profile, ShapeRange, all_profiles, builtin_names, load_profile

GOOD: dict[str, object] = {
    "name": "my-box",
    "description": "a test profile",
    "backend": "onnxruntime",
    "precision": "fp16",
    "batch": {"min": 1, "opt": 4, "max": 8},
    "sequence": {"min": 8, "opt": 32, "max": 128},
    "threads": 2,
    "build_on": "device",
    "latency_budget_ms": 5.0,
    "calibration": {"samples": 64, "method": "entropy"},
    "device": {"architecture": "aarch64", "compute_capability": "8.7", "memory_gb": 8, "dla_cores": 2},
}


def write_profile(folder: Path, data: object, name: str = "my-box.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def profile_error(name_or_path: str | Path) -> str:
    with pytest.raises(InputError) as info:
        load_profile(str(name_or_path))
    message = str(info.value)
    assert "\n" not in message
    return message


def with_changes(**changes: object) -> dict[str, object]:
    data = {**GOOD, **changes}
    return {k: v for k, v in data.items() if v is not None}


# --- built-in profiles ------------------------------------------------------------------------------------


def test_cpu_x86_loads_and_validates() -> None:
    p = load_profile("cpu-x86")
    assert isinstance(p, Profile)
    assert p.name == "cpu-x86"
    assert p.backend == "onnxruntime"
    assert p.precision == "int8"
    assert p.build_on == "host"
    assert (p.batch.min, p.batch.opt, p.batch.max) == (1, 1, 64)
    assert p.batch.min <= p.batch.opt <= p.batch.max
    assert p.sequence.min <= p.sequence.opt <= p.sequence.max
    assert p.device.architecture == "x86_64"
    assert p.calibration.samples >= 1


def test_builtin_names_are_sorted_and_include_the_cpu_profiles() -> None:
    names = builtin_names()
    assert names == sorted(names)
    assert {"cpu-x86", "cpu-x86-fp32"} <= set(names)
    assert all(not n.endswith(".yaml") for n in names)
    assert "__init__" not in names


def test_all_profiles_load_and_match_their_file_names() -> None:
    profiles = all_profiles()
    assert [p.name for p in profiles] == builtin_names()
    assert all(isinstance(p, Profile) for p in profiles)


@pytest.mark.parametrize(
    ("typo", "meant"), [("cpu-x68", "cpu-x86"), ("cpu_x86", "cpu-x86"), ("cpu-x86-fp3", "cpu-x86-fp32")]
)
def test_unknown_name_suggests_the_closest(typo: str, meant: str) -> None:
    message = profile_error(typo)
    assert f"unknown target '{typo}'" in message
    assert f"did you mean '{meant}'?" in message


def test_unknown_name_far_from_any_lists_the_known_ones() -> None:
    message = profile_error("zzzzzzzzzzzzzzzzzzzzqqq")
    assert "did you mean" not in message
    assert "known:" in message
    assert "cpu-x86" in message


def test_a_name_is_not_a_path() -> None:
    # without a .yaml suffix it is a name, so a path to a built-in file is not read as one
    assert "unknown target" in profile_error("../profiles/cpu-x86")


# --- profiles from a file ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_profile_from_a_yaml_file(tmp_path: Path, suffix: str) -> None:
    p = load_profile(str(write_profile(tmp_path, GOOD, "my-box" + suffix)))
    assert p.name == "my-box"
    assert p.precision == "fp16"
    assert p.build_on == "device"
    assert p.latency_budget_ms == 5.0
    assert p.calibration.method == "entropy"
    assert p.device.dla_cores == 2
    assert p.device.compute_capability == "8.7"


def test_profile_file_defaults(tmp_path: Path) -> None:
    data = with_changes(threads=None, build_on=None, latency_budget_ms=None, calibration=None)
    data["device"] = {"architecture": "x86_64"}
    p = load_profile(str(write_profile(tmp_path, data)))
    assert p.threads is None and p.build_on == "host" and p.latency_budget_ms is None
    assert (p.calibration.samples, p.calibration.method) == (256, "minmax")
    assert p.device.isa == [] and p.device.dla_cores == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"precision": "int4"}, "precision"),
        ({"build_on": "cloud"}, "build_on"),
        ({"threads": 0}, "threads"),
        ({"latency_budget_ms": 0}, "latency_budget_ms"),
        ({"calibration": {"samples": 0}}, "calibration.samples"),
        ({"calibration": {"method": "mse"}}, "calibration.method"),
        ({"batch": {"min": 0, "opt": 1, "max": 2}}, "batch.min"),
        ({"batch": {"min": 1, "opt": 2}}, "batch.max"),
        ({"unknown_key": 1}, "unknown_key"),
        ({"device": {"architecture": "x86_64", "cores": 4}}, "device.cores"),
        ({"description": None}, "description"),
    ],
)
def test_profile_file_with_a_bad_field(tmp_path: Path, changes: dict[str, object], field: str) -> None:
    path = write_profile(tmp_path, with_changes(**changes))
    message = profile_error(path)
    assert message.startswith(f"{path}: invalid profile: ")
    assert f"{field}: " in message


@pytest.mark.parametrize(
    ("section", "values"),
    [("batch", (1, 8, 4)), ("batch", (4, 2, 8)), ("sequence", (64, 32, 128)), ("sequence", (8, 256, 128))],
)
def test_shape_range_order_is_checked(tmp_path: Path, section: str, values: tuple[int, int, int]) -> None:
    lo, opt, hi = values
    path = write_profile(tmp_path, with_changes(**{section: {"min": lo, "opt": opt, "max": hi}}))
    message = profile_error(path)
    assert f"{section}: " in message
    assert "min <= opt <= max" in message
    assert f"{lo}/{opt}/{hi}" in message


@pytest.mark.parametrize("values", [(1, 1, 1), (1, 1, 2), (1, 2, 2), (2, 3, 4)])
def test_shape_range_accepts_ordered_values(values: tuple[int, int, int]) -> None:
    lo, opt, hi = values
    r = ShapeRange(min=lo, opt=opt, max=hi)
    assert (r.min, r.opt, r.max) == values


@pytest.mark.parametrize("values", [(2, 1, 3), (1, 3, 2), (3, 2, 1), (0, 1, 1)])
def test_shape_range_refuses_unordered_or_zero(values: tuple[int, int, int]) -> None:
    lo, opt, hi = values
    with pytest.raises(ValidationError):
        ShapeRange(min=lo, opt=opt, max=hi)


def test_missing_profile_file(tmp_path: Path) -> None:
    message = profile_error(tmp_path / "nope.yaml")
    assert "not found" in message
    assert "nope.yaml" in message


def test_profile_file_with_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nbatch: {min: 1, opt: 2\ndevice: [\n", encoding="utf-8")
    message = profile_error(path)
    assert message.startswith(f"{path}: invalid profile: ")


@pytest.mark.parametrize("content", ["- a\n- b\n", "", "just words\n"])
def test_profile_file_that_is_not_a_mapping(tmp_path: Path, content: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(content, encoding="utf-8")
    assert profile_error(path).startswith(f"{path}: invalid profile")


def test_all_errors_of_a_profile_on_one_line(tmp_path: Path) -> None:
    path = write_profile(tmp_path, with_changes(precision="int4", threads=0))
    message = profile_error(path)
    assert "precision: " in message and "threads: " in message
