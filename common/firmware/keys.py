"""Ed25519 release keys: the keys that sign firmware manifests.

The private key lives on disk only encrypted with a passphrase (PKCS8 PEM,
cryptography's ``BestAvailableEncryption``), mode 0600, written atomically; the
public key beside it as ``<file>.pub`` (SubjectPublicKeyInfo PEM). Devices pin
public keys by key id: the first 16 hex digits of the SHA-256 of the raw
32-byte public key.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from common.errors import KeyFileError
from common.fileio import write_atomic

__all__ = [
    "generate_release_key",
    "key_id",
    "load_public_key",
    "load_release_key",
    "load_trusted_keys",
    "public_key_pem",
    "save_release_key",
]


def generate_release_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the SHA-256 of the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def save_release_key(path: str | os.PathLike[str], key: Ed25519PrivateKey, passphrase: bytes) -> str:
    """Write ``key`` encrypted under ``passphrase`` to ``path`` (0600) and its public key to ``path.pub``.

    Returns the key id. An empty passphrase is refused: the key must never rest in plain form.
    """
    if not passphrase:
        raise KeyFileError(f"release key {os.fspath(path)!r}: refusing an empty passphrase")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    write_atomic(path, pem, 0o600)
    write_atomic(f"{os.fspath(path)}.pub", public_key_pem(key.public_key()), 0o644)
    return key_id(key.public_key())


def load_release_key(path: str | os.PathLike[str], passphrase: bytes) -> Ed25519PrivateKey:
    """The private release key in ``path``; ``KeyFileError`` if unreadable, too open, not Ed25519 or the wrong passphrase."""
    p = Path(path)
    try:
        mode = stat.S_IMODE(p.stat().st_mode)
        data = p.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read release key {str(p)!r}: {exc.strerror}") from exc
    if mode & 0o077:
        raise KeyFileError(f"release key {str(p)!r} is readable by others (mode {mode:04o}); run: chmod 600 {p}")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"release key {str(p)!r}: wrong passphrase or not a PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"release key {str(p)!r} is a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """A release public key from a PEM file (e.g. ``release.key.pub``)."""
    p = Path(path)
    try:
        key = serialization.load_pem_public_key(p.read_bytes())
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {str(p)!r}: {exc.strerror}") from exc
    except ValueError as exc:
        raise KeyFileError(f"public key {str(p)!r} is not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"public key {str(p)!r} is a {type(key).__name__}, not an Ed25519 key")
    return key


def load_trusted_keys(paths: list[str | os.PathLike[str]]) -> dict[str, Ed25519PublicKey]:
    """``{key id: public key}`` for the PEM files in ``paths``: what ``verify_manifest`` takes."""
    keys = [load_public_key(p) for p in paths]
    return {key_id(k): k for k in keys}
