"""Ed25519 release keys: the keys that sign firmware manifests.

The private key lives on disk only encrypted with a passphrase (PKCS8 PEM,
cryptography's ``BestAvailableEncryption``), mode 0600, written atomically by
``common.keyfiles`` (like every key file); the public key beside it as
``<file>.pub`` (SubjectPublicKeyInfo PEM). Devices pin public keys by key id:
the first 16 hex digits of the SHA-256 of the raw 32-byte public key.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from common import keyfiles
from common.errors import KeyFileError
from common.keyfiles import load_private_key, public_pem, save_private_key, save_public_key

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
    return public_pem(public_key)


def save_release_key(path: str | os.PathLike[str], key: Ed25519PrivateKey, passphrase: bytes) -> str:
    """Write ``key`` encrypted under ``passphrase`` to ``path`` (0600) and its public key to ``path.pub``.

    Returns the key id. An empty passphrase is refused: the key must never rest in plain form.
    """
    if not passphrase:
        raise KeyFileError(f"release key {os.fspath(path)!r}: refusing an empty passphrase")
    save_private_key(path, key, passphrase=passphrase)
    save_public_key(f"{os.fspath(path)}.pub", key.public_key())
    return key_id(key.public_key())


def load_release_key(path: str | os.PathLike[str], passphrase: bytes) -> Ed25519PrivateKey:
    """The private release key in ``path``; ``KeyFileError`` if unreadable, too open, not Ed25519 or the wrong passphrase."""
    return load_private_key(path, passphrase=passphrase, what="release key")


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """A release public key from a PEM file (e.g. ``release.key.pub``)."""
    return keyfiles.load_public_key(path, what="public key")


def load_trusted_keys(paths: list[str | os.PathLike[str]]) -> dict[str, Ed25519PublicKey]:
    """``{key id: public key}`` for the PEM files in ``paths``: what ``verify_manifest`` takes."""
    keys = [load_public_key(p) for p in paths]
    return {key_id(k): k for k in keys}
