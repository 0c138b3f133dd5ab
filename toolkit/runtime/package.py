"""Packages: one tar file with the compiled artifact and everything needed to run and re-check it.

Contents: the artifact and its build record, tokenizer.json, labels.json, the target profile, the
held-out inputs with the teacher's answers, the compiled agreement report, a model card, and
`manifest.json` with the SHA-256 and size of every other file plus the versions that built it.

Reading a package never trusts it: only regular files with plain relative names are accepted,
sizes are bounded, the set of files must equal the manifest's, every hash must match, nothing is
unpickled, and files are written by this code (never by `tarfile.extract`), inside the target folder.
"""

from __future__ import annotations

import io
import json
import platform
import re
import tarfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ..digest import sha256_bytes
from ..errors import InputError, TsdEdgeError

SCHEMA = "tsd-edge/package/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"  # ed25519 over manifest.json's bytes; optional
MAX_MEMBER_BYTES = 2 << 30
MAX_TOTAL_BYTES = 4 << 30
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class PackageIntegrityError(TsdEdgeError):
    """A package that was changed, or was never a sound package: the check does not hold."""


@dataclass
class Package:
    root: Path
    manifest: dict[str, Any]
    signed: bool = False
    verified: bool = False  # the signature checked out against a trusted key

    def file(self, name: str) -> Path:
        return self.root / name


def versions(*packages: str) -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_package(out: Path, files: dict[str, bytes], manifest: dict[str, Any], sign_key: Path | None = None) -> Path:
    """Write `files` (name → content) and a manifest binding them by hash, signed with `sign_key` if given."""
    for name in files:
        if not _NAME.fullmatch(name) or name in (MANIFEST, SIGNATURE):
            raise ValueError(f"bad package member name {name!r}")
    manifest = {
        **manifest,
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": {name: {"sha256": sha256_bytes(data), "size": len(data)} for name, data in sorted(files.items())},
    }
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
    members = {MANIFEST: manifest_bytes, **files}
    if sign_key is not None:
        from ..signing import sign

        members[SIGNATURE] = sign(manifest_bytes, sign_key)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".partial")
    with tarfile.open(tmp, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)  # a reader never sees a half-written package
    return out


def read_package(path: Path, dest: Path, trust: Path | None = None) -> Package:
    """Verify and unpack `path` into `dest`. Raises PackageIntegrityError with one line on any doubt.

    With `trust` (a public key), the package must carry a signature that verifies with it."""
    if not path.is_file():
        raise InputError(f"package not found: {path}")
    try:
        tar = tarfile.open(path, "r:gz")  # noqa: SIM115 - closed by the `with tar` below
    except (tarfile.TarError, OSError, EOFError):
        raise InputError(
            f"{path}: not a tsd-edge package (not a gzip tar); give a file from `tsd-edge package`"
        ) from None
    dest.mkdir(parents=True, exist_ok=True)
    contents: dict[str, bytes] = {}
    total = 0
    with tar:
        try:
            for member in tar:
                name = member.name
                if not member.isreg():
                    raise PackageIntegrityError(f"{path}: member {name!r} is not a regular file (links are refused)")
                if not _NAME.fullmatch(name):
                    raise PackageIntegrityError(f"{path}: member name {name!r} is not a plain file name")
                if name in contents:
                    raise PackageIntegrityError(f"{path}: member {name!r} appears twice")
                if member.size > MAX_MEMBER_BYTES or total + member.size > MAX_TOTAL_BYTES:
                    raise PackageIntegrityError(f"{path}: member {name!r} is too large ({member.size} bytes)")
                fh = tar.extractfile(member)
                data = fh.read(MAX_MEMBER_BYTES + 1) if fh else b""
                if len(data) != member.size:
                    raise PackageIntegrityError(f"{path}: member {name!r} is truncated")
                total += len(data)
                contents[name] = data
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise PackageIntegrityError(f"{path}: damaged archive ({exc})") from None
    if MANIFEST not in contents:
        raise PackageIntegrityError(f"{path}: no {MANIFEST}")
    manifest_bytes = contents.pop(MANIFEST)
    signature = contents.pop(SIGNATURE, None)
    verified = False
    if trust is not None:
        from ..signing import verify

        if signature is None:
            raise PackageIntegrityError(f"{path}: not signed, but a trusted key was given (sign with package --sign)")
        if not verify(manifest_bytes, signature, trust):
            raise PackageIntegrityError(f"{path}: signature does not verify with {trust} (changed, or another key)")
        verified = True
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError:
        manifest = None
    listed = manifest.get("files") if isinstance(manifest, dict) else None
    # checked explicitly, not with `assert` (gone under `python -O`)
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA or not isinstance(listed, dict):
        raise PackageIntegrityError(f"{path}: {MANIFEST} is not a {SCHEMA} manifest")
    if set(listed) != set(contents):
        extra, missing = sorted(set(contents) - set(listed)), sorted(set(listed) - set(contents))
        raise PackageIntegrityError(f"{path}: files differ from the manifest (extra {extra}, missing {missing})")
    for name, data in contents.items():
        entry = listed[name]
        if not isinstance(entry, dict) or sha256_bytes(data) != entry.get("sha256"):
            raise PackageIntegrityError(f"{path}: {name} does not match its SHA-256 in the manifest (changed)")
    for name, data in contents.items():
        (dest / name).write_bytes(data)
    return Package(dest, manifest, signed=signature is not None, verified=verified)
