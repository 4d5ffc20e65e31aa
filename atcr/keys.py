"""Key files that are made on first start and kept: created atomically with mode 0600."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from atcr.errors import ConfigError


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process created it first: theirs wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def load_or_create_ec_key(path: Path, curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    """A PEM EC private key at `path` (P-256 by default), created on first use."""
    if not path.exists():
        key = ec.generate_private_key(curve or ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(path, pem)
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path}: not a readable PEM private key ({type(exc).__name__})") from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path}: expected an EC private key")
    return loaded


def load_or_create_secret(path: Path, nbytes: int = 32) -> bytes:
    """Random secret bytes at `path` (e.g. for encrypting sessions at rest), created on first use."""
    if not path.exists():
        _write_private(path, secrets.token_bytes(nbytes))
    data = path.read_bytes()
    if len(data) < 16:
        raise ConfigError(f"{path}: secret too short")
    return data
