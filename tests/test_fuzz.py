"""Fuzzing the two readers of untrusted input: any bytes give success or a one-line InputError /
PackageIntegrityError, never another exception (which the CLI would show as a traceback)."""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tsd_edge.errors import InputError
from tsd_edge.runtime.package import PackageIntegrityError, read_package, write_package
from tsd_edge.task import load_task

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20))
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)
task_keys = st.sampled_from(
    [
        "name",
        "kind",
        "labels",
        "inputs",
        "teacher",
        "relevance",
        "split",
        "student",
        "training",
        "agreement",
        "targets",
        "bogus",
    ]
)


def _valid_task(folder: Path) -> dict:
    (folder / "in.txt").write_text("hello\n")
    return {"name": "t", "labels": ["a", "b"], "inputs": [{"path": "in.txt"}]}


@FUZZ
@given(text=st.text(max_size=400))
def test_task_loader_on_arbitrary_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "task.yaml"
    path.write_text(text, encoding="utf-8")
    with contextlib.suppress(InputError):  # anything else escaping would be a traceback for the user
        load_task(path)


@FUZZ
@given(key=task_keys, value=yaml_values)
def test_task_loader_on_mutated_valid_task(tmp_path: Path, key: str, value: object) -> None:
    data = _valid_task(tmp_path)
    data[key] = value
    path = tmp_path / "task.yaml"
    path.write_text(json.dumps(data), encoding="utf-8")  # JSON is YAML
    try:
        task = load_task(path)
    except InputError:
        return
    assert task.name and len(task.label_names) >= 2


def _package(tmp: Path) -> bytes:
    out = write_package(tmp / "p.tsdpkg", {"a.bin": b"\x00" * 64, "labels.json": b'["a", "b"]'}, {"x": 1})
    return out.read_bytes()


@pytest.fixture(scope="module")
def good_package(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _package(tmp_path_factory.mktemp("pkg"))


@FUZZ
@given(data=st.data())
def test_package_reader_on_corrupted_bytes(tmp_path: Path, good_package: bytes, data: st.DataObject) -> None:
    raw = bytearray(good_package)
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(raw)))
    path = tmp_path / "fuzzed.tsdpkg"
    path.write_bytes(bytes(raw[:cut]))
    dest = tmp_path / "out"
    with contextlib.suppress(InputError, PackageIntegrityError):
        read_package(path, dest)
    outside = {p for p in tmp_path.rglob("*") if not p.is_relative_to(dest)} - {path, dest}
    assert outside == set()


@FUZZ
@given(
    members=st.lists(st.tuples(st.text(min_size=1, max_size=30), st.binary(max_size=64)), max_size=5),
    manifest=yaml_values,
)
def test_package_reader_on_arbitrary_members(
    tmp_path: Path, members: list[tuple[str, bytes]], manifest: object
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in [("manifest.json", json.dumps(manifest).encode()), *members]:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    path = tmp_path / "crafted.tsdpkg"
    path.write_bytes(buf.getvalue())
    with pytest.raises((InputError, PackageIntegrityError)):
        read_package(path, tmp_path / "out")
