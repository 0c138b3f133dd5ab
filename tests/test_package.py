"""Packages: the happy round trip, and a tamper matrix of real tar files that `read_package` must refuse.

Every bad package is built here with `tarfile`, from the members of a good one. A refusal must leave
`dest` empty and write nothing anywhere else.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import tsd_edge.runtime.package as package_module
from tsd_edge.errors import InputError, TsdEdgeError
from tsd_edge.runtime.package import (
    MANIFEST,
    SCHEMA,
    Package,
    PackageIntegrityError,
    read_package,
    sha256_bytes,
    versions,
    write_package,
)

FILES: dict[str, bytes] = {
    "model.onnx": bytes(range(256)) * 8,
    "tokenizer.json": b'{"version": "1.0", "model": {"type": "WordPiece"}}',
    "labels.json": b'["refund", "card_lost", "balance"]',
    "agreement.json": b'{"agreement": 0.93}\n',
}
META = {"task": "demo", "target": "cpu-x86", "versions": {"python": "3.11"}}


@dataclass
class Member:
    """One tar member to write: a TarInfo and, for regular files, its bytes."""

    info: tarfile.TarInfo
    data: bytes | None = None


def regular(name: str, data: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    return Member(info, data)


def link(name: str, target: str, kind: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, target, 0o777
    return Member(info)


def build_tar(path: Path, members: list[Member], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for m in members:
            if m.data is None:
                tar.addfile(m.info)
            else:
                m.info.size = len(m.data)
                tar.addfile(m.info, io.BytesIO(m.data))
    return path


def good_members(tmp_path: Path) -> list[Member]:
    """The members of a package made by write_package, in archive order (manifest first)."""
    pkg = write_package(tmp_path / "good" / "demo.tsdpkg", FILES, META)
    out = []
    with tarfile.open(pkg, "r:gz") as tar:
        for info in tar:
            fh = tar.extractfile(info)
            assert fh is not None
            out.append(regular(info.name, fh.read()))
    return out


def manifest_of(members: list[Member]) -> dict:
    (m,) = [m for m in members if m.info.name == MANIFEST]
    assert m.data is not None
    return json.loads(m.data)


def with_manifest(members: list[Member], manifest: dict) -> list[Member]:
    data = json.dumps(manifest, indent=2, sort_keys=True).encode()
    return [regular(MANIFEST, data) if m.info.name == MANIFEST else m for m in members]


def files_outside(root: Path, dest: Path) -> dict[str, bytes]:
    """Every file under `root` except those under `dest`, with its content."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if dest not in p.parents:
                out[str(p.relative_to(root))] = p.read_bytes() if not p.is_symlink() else b"<link>"
    return out


def assert_refused(tmp_path: Path, members: list[Member], error: type[TsdEdgeError] = PackageIntegrityError) -> str:
    bad = build_tar(tmp_path / "bad.tsdpkg", members)
    dest = tmp_path / "unpack" / "dest"
    before = files_outside(tmp_path, dest)
    with pytest.raises(error) as info:
        read_package(bad, dest)
    assert type(info.value) is error
    message = str(info.value)
    assert "\n" not in message
    assert str(bad) in message
    assert files_outside(tmp_path, dest) == before, "a refused package wrote outside dest"
    assert not dest.exists() or list(dest.iterdir()) == [], "a refused package wrote into dest"
    return message


# --- the happy path ---------------------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "dist" / "demo.tsdpkg"
    assert write_package(out, FILES, META) == out
    assert out.is_file()
    assert list(out.parent.iterdir()) == [out]  # no .partial left behind
    pkg = read_package(out, tmp_path / "unpacked")
    assert isinstance(pkg, Package)
    assert pkg.root == tmp_path / "unpacked"
    assert {p.name for p in pkg.root.iterdir()} == set(FILES)
    for name, data in FILES.items():
        assert pkg.file(name).read_bytes() == data
    m = pkg.manifest
    assert m["schema"] == SCHEMA
    assert m["task"] == "demo" and m["target"] == "cpu-x86" and m["versions"] == {"python": "3.11"}
    assert "created" in m
    assert m["files"] == {n: {"sha256": sha256_bytes(d), "size": len(d)} for n, d in FILES.items()}


def test_package_is_a_gzip_tar_with_the_manifest_first(tmp_path: Path) -> None:
    out = write_package(tmp_path / "p.tsdpkg", FILES, META)
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    with tarfile.open(out, "r:gz") as tar:
        members = tar.getmembers()
    assert members[0].name == MANIFEST
    assert sorted(m.name for m in members[1:]) == sorted(FILES)
    assert all(m.isreg() and m.mode == 0o644 for m in members)


def test_reading_twice_into_the_same_folder(tmp_path: Path) -> None:
    out = write_package(tmp_path / "p.tsdpkg", FILES, META)
    read_package(out, tmp_path / "dest")
    pkg = read_package(out, tmp_path / "dest")
    assert pkg.file("labels.json").read_bytes() == FILES["labels.json"]


def test_empty_member_is_fine(tmp_path: Path) -> None:
    out = write_package(tmp_path / "p.tsdpkg", {"empty.txt": b"", "b.bin": b"\x00"}, {})
    pkg = read_package(out, tmp_path / "dest")
    assert pkg.file("empty.txt").read_bytes() == b""


def test_rebuilt_good_package_reads(tmp_path: Path) -> None:
    # the helpers below build the bad packages; the same helpers on unchanged members must give a good one
    bad = build_tar(tmp_path / "again.tsdpkg", good_members(tmp_path))
    assert {p.name for p in read_package(bad, tmp_path / "dest").root.iterdir()} == set(FILES)


@pytest.mark.parametrize("name", ["../evil", "a/b", "/tmp/evil", MANIFEST, ".hidden", "", "x" * 200, "sp ace"])
def test_write_package_refuses_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="bad package member name"):
        write_package(tmp_path / "p.tsdpkg", {name: b"x", "ok.txt": b"y"}, {})
    assert not (tmp_path / "p.tsdpkg").exists()


def test_versions_names_python_and_known_packages() -> None:
    v = versions("numpy", "surely-not-an-installed-package-xyz")
    assert {"python", "platform", "numpy"} <= set(v)
    assert "surely-not-an-installed-package-xyz" not in v


# --- the tamper matrix ------------------------------------------------------------------------------------

Tamper = Callable[[list[Member]], list[Member]]


def _change_a_byte(members: list[Member]) -> list[Member]:
    out = []
    for m in members:
        if m.info.name == "model.onnx":
            assert m.data is not None
            data = bytearray(m.data)
            data[100] ^= 0x01
            m = regular(m.info.name, bytes(data))
        out.append(m)
    return out


def _append_a_byte(members: list[Member]) -> list[Member]:
    return [regular(m.info.name, m.data + b"\n") if m.info.name == "labels.json" and m.data else m for m in members]


def _edit_manifest_hash(members: list[Member]) -> list[Member]:
    manifest = manifest_of(members)
    h = manifest["files"]["model.onnx"]["sha256"]
    manifest["files"]["model.onnx"]["sha256"] = ("0" if h[0] != "0" else "1") + h[1:]
    return with_manifest(members, manifest)


def _edit_manifest_metadata_only(members: list[Member]) -> list[Member]:
    # the manifest is not hashed in itself: an edited manifest must still be checked against the files
    manifest = manifest_of(members)
    manifest["files"]["labels.json"]["sha256"] = sha256_bytes(b"something else")
    manifest["target"] = "jetson-orin-nano"
    return with_manifest(members, manifest)


def _add_a_file(members: list[Member]) -> list[Member]:
    return [*members, regular("extra.py", b"import os; os.system('echo pwned')\n")]


def _remove_a_file(members: list[Member]) -> list[Member]:
    return [m for m in members if m.info.name != "tokenizer.json"]


def _swap_a_manifest_entry(members: list[Member]) -> list[Member]:
    # the model and its entry are gone, and the manifest lists a file the archive does not hold
    manifest = manifest_of(members)
    del manifest["files"]["model.onnx"]
    manifest["files"]["ghost.bin"] = {"sha256": sha256_bytes(b""), "size": 0}
    return with_manifest([m for m in members if m.info.name != "model.onnx"], manifest)


def _remove_the_manifest(members: list[Member]) -> list[Member]:
    return [m for m in members if m.info.name != MANIFEST]


def _manifest_not_json(members: list[Member]) -> list[Member]:
    return [regular(MANIFEST, b"{not json") if m.info.name == MANIFEST else m for m in members]


def _manifest_other_schema(members: list[Member]) -> list[Member]:
    manifest = manifest_of(members)
    manifest["schema"] = "someone-else/package/9"
    return with_manifest(members, manifest)


def _manifest_without_files(members: list[Member]) -> list[Member]:
    manifest = manifest_of(members)
    del manifest["files"]
    return with_manifest(members, manifest)


def _manifest_files_a_list(members: list[Member]) -> list[Member]:
    manifest = manifest_of(members)
    manifest["files"] = sorted(manifest["files"])
    return with_manifest(members, manifest)


def _manifest_is_a_list(members: list[Member]) -> list[Member]:
    return [regular(MANIFEST, b'["files"]') if m.info.name == MANIFEST else m for m in members]


def _dot_dot_member(members: list[Member]) -> list[Member]:
    return [*members, regular("../evil", b"escaped")]


def _dot_dot_listed(members: list[Member]) -> list[Member]:
    manifest = manifest_of(members)
    manifest["files"]["../evil"] = {"sha256": sha256_bytes(b"escaped"), "size": 7}
    return [*with_manifest(members, manifest), regular("../evil", b"escaped")]


def _absolute_tmp_member(members: list[Member]) -> list[Member]:
    return [*members, regular("/tmp/evil", b"escaped")]


def _nested_member(members: list[Member]) -> list[Member]:
    return [*members, regular("sub/evil", b"nested")]


def _renamed_to_dot_dot(members: list[Member]) -> list[Member]:
    return [regular("../" + m.info.name, m.data or b"") if m.info.name == "labels.json" else m for m in members]


def _symlink_member(members: list[Member]) -> list[Member]:
    return [*members, link("evil", "../../outside", tarfile.SYMTYPE)]


def _symlink_replacing_a_file(members: list[Member]) -> list[Member]:
    return [link(m.info.name, "/etc/passwd", tarfile.SYMTYPE) if m.info.name == "labels.json" else m for m in members]


def _hardlink_member(members: list[Member]) -> list[Member]:
    return [*members, link("evil", "model.onnx", tarfile.LNKTYPE)]


def _hardlink_outside(members: list[Member]) -> list[Member]:
    return [link(m.info.name, "/etc/passwd", tarfile.LNKTYPE) if m.info.name == "labels.json" else m for m in members]


def _directory_member(members: list[Member]) -> list[Member]:
    info = tarfile.TarInfo("somedir")
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return [*members, Member(info)]


def _fifo_member(members: list[Member]) -> list[Member]:
    info = tarfile.TarInfo("pipe")
    info.type = tarfile.FIFOTYPE
    return [*members, Member(info)]


def _duplicated_member_same_bytes(members: list[Member]) -> list[Member]:
    (m,) = [m for m in members if m.info.name == "labels.json"]
    return [*members, regular(m.info.name, m.data or b"")]


def _duplicated_member_other_bytes(members: list[Member]) -> list[Member]:
    return [*members, regular("model.onnx", b"a different model")]


def _duplicated_manifest(members: list[Member]) -> list[Member]:
    manifest = manifest_of(members)
    manifest["files"]["model.onnx"]["sha256"] = sha256_bytes(b"a different model")
    return [*members, regular(MANIFEST, json.dumps(manifest).encode())]


# name -> (tamper, a word the refusal must name: the member or file at fault)
TAMPERS: dict[str, tuple[Tamper, str]] = {
    "changed byte in a member": (_change_a_byte, "model.onnx"),
    "appended byte in a member": (_append_a_byte, "labels.json"),
    "manifest hash edited": (_edit_manifest_hash, "model.onnx"),
    "manifest hash of another file and metadata edited": (_edit_manifest_metadata_only, "labels.json"),
    "added file": (_add_a_file, "extra.py"),
    "removed file": (_remove_a_file, "tokenizer.json"),
    "removed file, manifest lists another": (_swap_a_manifest_entry, "ghost.bin"),
    "no manifest": (_remove_the_manifest, MANIFEST),
    "manifest not json": (_manifest_not_json, MANIFEST),
    "manifest of another schema": (_manifest_other_schema, MANIFEST),
    "manifest without files": (_manifest_without_files, MANIFEST),
    "manifest files is a list": (_manifest_files_a_list, MANIFEST),
    "manifest is a list": (_manifest_is_a_list, MANIFEST),
    "member ../evil": (_dot_dot_member, "../evil"),
    "member ../evil listed in the manifest": (_dot_dot_listed, "../evil"),
    "member /tmp/evil": (_absolute_tmp_member, "/tmp/evil"),
    "member in a sub folder": (_nested_member, "sub/evil"),
    "member renamed to ../labels.json": (_renamed_to_dot_dot, "../labels.json"),
    "symlink member": (_symlink_member, "evil"),
    "symlink replacing a file": (_symlink_replacing_a_file, "labels.json"),
    "hard link member": (_hardlink_member, "evil"),
    "hard link to /etc/passwd": (_hardlink_outside, "labels.json"),
    "directory member": (_directory_member, "somedir"),
    "fifo member": (_fifo_member, "pipe"),
    "duplicated member, same bytes": (_duplicated_member_same_bytes, "labels.json"),
    "duplicated member, other bytes": (_duplicated_member_other_bytes, "model.onnx"),
    "duplicated manifest": (_duplicated_manifest, MANIFEST),
}


@pytest.mark.parametrize(("tamper", "needle"), list(TAMPERS.values()), ids=list(TAMPERS))
def test_tampered_package_is_refused(tmp_path: Path, tamper: Tamper, needle: str) -> None:
    message = assert_refused(tmp_path, tamper(good_members(tmp_path)))
    assert needle in message.replace(str(tmp_path), "")


def test_absolute_member_inside_tmp_path_is_not_written(tmp_path: Path) -> None:
    target = tmp_path / "abs-evil"
    assert_refused(tmp_path, [*good_members(tmp_path), regular(str(target), b"escaped")])
    assert not target.exists()


def test_dot_dot_member_is_not_written_next_to_dest(tmp_path: Path) -> None:
    assert_refused(tmp_path, [*good_members(tmp_path), regular("../evil", b"escaped")])
    assert not (tmp_path / "unpack" / "evil").exists()


def test_symlink_is_refused_even_first(tmp_path: Path) -> None:
    # a link before any file, pointing where a later member would be written through it
    members = good_members(tmp_path)
    assert_refused(tmp_path, [link("model.onnx", str(tmp_path / "outside.onnx"), tarfile.SYMTYPE), *members[1:]])
    assert not (tmp_path / "outside.onnx").exists()


def test_member_size_limit_boundary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    members = good_members(tmp_path)
    biggest = max(len(m.data or b"") for m in members)
    pkg = build_tar(tmp_path / "p.tsdpkg", members)
    monkeypatch.setattr(package_module, "MAX_MEMBER_BYTES", biggest)  # at the limit: fine
    assert read_package(pkg, tmp_path / "ok").file("model.onnx").read_bytes() == FILES["model.onnx"]
    monkeypatch.setattr(package_module, "MAX_MEMBER_BYTES", biggest - 1)
    assert_refused(tmp_path, members)


def test_members_over_the_total_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    members = good_members(tmp_path)
    monkeypatch.setattr(package_module, "MAX_TOTAL_BYTES", sum(len(d) for d in FILES.values()))  # + manifest > it
    assert_refused(tmp_path, members)


# --- damaged archives and files that are not packages ----------------------------------------------------


@pytest.mark.parametrize("keep", [0.5, 0.8])
def test_truncated_archive_is_refused(tmp_path: Path, keep: float) -> None:
    good = write_package(tmp_path / "good.tsdpkg", FILES, META).read_bytes()
    bad = tmp_path / "bad.tsdpkg"
    bad.write_bytes(good[: int(len(good) * keep)])
    with pytest.raises((PackageIntegrityError, InputError)):
        read_package(bad, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() or list((tmp_path / "dest").iterdir()) == []


@pytest.mark.parametrize("keep", [20, 100])
def test_archive_truncated_early_is_refused(tmp_path: Path, keep: int) -> None:
    good = write_package(tmp_path / "good.tsdpkg", FILES, META).read_bytes()
    bad = tmp_path / "bad.tsdpkg"
    bad.write_bytes(good[:keep])
    with pytest.raises((PackageIntegrityError, InputError)):
        read_package(bad, tmp_path / "dest")


def test_truncated_member_in_the_tar_stream_is_refused(tmp_path: Path) -> None:
    # a tar whose last member header promises more bytes than follow, then gzip-compressed whole
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as tar:
        for m in good_members(tmp_path):
            tar.addfile(m.info, io.BytesIO(m.data or b""))
    raw = plain.getvalue()
    model_at = raw.index(FILES["model.onnx"][:64])
    bad = tmp_path / "bad.tsdpkg"
    bad.write_bytes(gzip.compress(raw[: model_at + 100]))
    with pytest.raises(PackageIntegrityError):
        read_package(bad, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() or list((tmp_path / "dest").iterdir()) == []


@pytest.mark.parametrize(
    "content",
    [b"", os.urandom(4096), b"hello, this is a text file\n" * 50, b"PK\x03\x04 a zip file, not a tar"],
    ids=["empty", "random", "text", "zip-ish"],
)
def test_a_file_that_is_not_a_package_is_an_input_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.tsdpkg"
    bad.write_bytes(content)
    with pytest.raises(InputError) as info:
        read_package(bad, tmp_path / "dest")
    assert str(bad) in str(info.value)
    assert not (tmp_path / "dest").exists() or list((tmp_path / "dest").iterdir()) == []


def test_a_gzip_of_garbage_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsdpkg"
    bad.write_bytes(gzip.compress(os.urandom(3000)))
    with pytest.raises((InputError, PackageIntegrityError)):
        read_package(bad, tmp_path / "dest")


def test_an_empty_tar_has_no_manifest(tmp_path: Path) -> None:
    assert "manifest" in assert_refused(tmp_path, [])


def test_missing_package(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_package(tmp_path / "nope.tsdpkg", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_a_folder_is_not_a_package(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        read_package(tmp_path, tmp_path / "dest")


def test_manifest_file_entry_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    members = good_members(tmp_path)
    manifest = manifest_of(members)
    manifest["files"]["model.onnx"] = manifest["files"]["model.onnx"]["sha256"]
    assert_refused(tmp_path, with_manifest(members, manifest))


def test_manifest_schema_is_checked_under_python_dash_o(tmp_path: Path) -> None:
    """Integrity is checked explicitly: `python -O` (which drops `assert`) refuses another schema the same way."""
    members = good_members(tmp_path)
    manifest = manifest_of(members)
    manifest["schema"] = "someone-else/package/9"
    bad = build_tar(tmp_path / "bad.tsdpkg", with_manifest(members, manifest))
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from tsd_edge.runtime.package import PackageIntegrityError, read_package\n"
        "try:\n    read_package(Path(sys.argv[1]), Path(sys.argv[2]))\nexcept PackageIntegrityError as exc:\n"
        "    print('refused:', exc)\n    sys.exit(0)\nsys.exit(1)\n"
    )
    ran = subprocess.run(
        [sys.executable, "-O", "-c", code, str(bad), str(tmp_path / "dest")], capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "is not a tsd-edge/package/1 manifest" in ran.stdout, ran.stdout
