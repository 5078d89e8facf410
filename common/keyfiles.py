"""Ed25519 and X25519 key files (PEM): the one place that reads and writes them.

Private keys are PKCS8 PEM, encrypted when given a passphrase, written atomically at
mode 0600 (``common.fileio.write_atomic``) and refused on load when anyone but the
owner may read them; public keys are SubjectPublicKeyInfo PEM at 0644. Every failure
is a ``KeyFileError`` naming the file (and what it is for: ``what``) and the cause,
with what to do about it where there is something to do. CurveZMQ's own key files
(Z85 text) are ``common.keys``'s, which checks their mode with ``check_private_mode``.

    key = load_or_create_private_key(data / "signing.key", public_path=data / "signing.pub", what="signing key")
    key = load_private_key(path, passphrase=b"...", what="release key")
    pub = load_public_key(path, what="cloud signing key")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from common.errors import KeyFileError
from common.fileio import check_private_mode, write_atomic  # re-exported

__all__ = [
    "check_private_mode",
    "load_or_create_private_key",
    "load_private_key",
    "load_public_key",
    "private_pem",
    "public_pem",
    "save_private_key",
    "save_public_key",
]

PrivateKey = Ed25519PrivateKey | X25519PrivateKey
PublicKey = Ed25519PublicKey | X25519PublicKey
K = TypeVar("K", Ed25519PrivateKey, X25519PrivateKey)
P = TypeVar("P", Ed25519PublicKey, X25519PublicKey)

_NAMES = {Ed25519PrivateKey: "Ed25519", X25519PrivateKey: "X25519", Ed25519PublicKey: "Ed25519", X25519PublicKey: "X25519"}


def private_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS8 PEM, encrypted under ``passphrase`` if one is given."""
    enc = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def public_pem(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def save_private_key(path: str | os.PathLike[str], key: PrivateKey, *, passphrase: bytes | None = None) -> None:
    """Write ``key`` to ``path`` at 0600, atomically (``FileWriteError`` if it cannot be)."""
    write_atomic(path, private_pem(key, passphrase), 0o600)


def save_public_key(path: str | os.PathLike[str], key: PublicKey) -> None:
    """Write ``key`` to ``path`` at 0644 unless the file already holds it."""
    pem = public_pem(key)
    p = Path(path)
    try:
        if p.read_bytes() == pem:
            return
    except OSError:
        pass  # missing or unreadable: write it
    write_atomic(p, pem, 0o644)


def load_private_key(path: str | os.PathLike[str], *, kind: type[K] = Ed25519PrivateKey,  # type: ignore[assignment]
                     passphrase: bytes | None = None, what: str = "private key") -> K:
    """The private key in ``path``: owner-only, PEM, of ``kind``, opened with ``passphrase`` if encrypted."""
    p = Path(path)
    check_private_mode(p, what)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {str(p)!r}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except (ValueError, TypeError) as exc:  # TypeError: encrypted without a passphrase, or the reverse
        raise KeyFileError(f"{what} {str(p)!r}: wrong passphrase or not a PEM private key ({exc})") from exc
    if not isinstance(key, kind):
        raise KeyFileError(f"{what} {str(p)!r} is a {type(key).__name__}, not an {_NAMES[kind]} key")
    return key


def load_public_key(path: str | os.PathLike[str], *, kind: type[P] = Ed25519PublicKey,  # type: ignore[assignment]
                    what: str = "public key") -> P:
    """The public key in the PEM file ``path``, of ``kind``."""
    p = Path(path)
    try:
        key = serialization.load_pem_public_key(p.read_bytes())
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {str(p)!r}: {exc.strerror}") from exc
    except ValueError as exc:
        raise KeyFileError(f"{what} {str(p)!r} is not a PEM public key ({exc})") from exc
    if not isinstance(key, kind):
        raise KeyFileError(f"{what} {str(p)!r} is a {type(key).__name__}, not an {_NAMES[kind]} key")
    return key


def load_or_create_private_key(path: str | os.PathLike[str], *, kind: type[K] = Ed25519PrivateKey,  # type: ignore[assignment]
                               public_path: str | os.PathLike[str] | None = None, what: str = "private key") -> K:
    """The key in ``path``, made (and saved at 0600) if there is none; its public half kept in ``public_path``."""
    p = Path(path)
    if p.exists():
        key = load_private_key(p, kind=kind, what=what)
    else:
        key = kind.generate()
        save_private_key(p, key)
    if public_path is not None:
        save_public_key(public_path, key.public_key())
    return key
