"""Optional ed25519 signatures over a package's manifest (which binds every file by SHA-256).

Keys are PEM files: `tsd-edge keygen NAME` writes NAME (private, mode 0600) and NAME.pub.
Uses the `cryptography` package: hand-rolled crypto is how gates get fooled.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError


def keygen(path: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = path.with_name(path.name + ".pub")
    if path.exists() or public.exists():
        raise InputError(f"{path} or {public} already exists; choose another name (keys are never overwritten)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path, public


def sign(data: bytes, private_key: Path) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(private_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(
            f"{private_key}: not a readable ed25519 private key ({exc}); make one with `tsd-edge keygen`"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{private_key}: not an ed25519 key; make one with `tsd-edge keygen`")
    return key.sign(data)


def verify(data: bytes, signature: bytes, public_key: Path) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(public_key.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"{public_key}: not a readable ed25519 public key ({exc}); use the .pub from keygen") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{public_key}: not an ed25519 public key; use the .pub file from `tsd-edge keygen`")
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
