"""The cloud's online signing key: commands and revocation lists (never firmware: that is the release key,
kept offline, so a compromised cloud cannot install an image of its own; Uptane's director/image split).

``DATA/signing.key`` (Ed25519, PKCS#8, 0600) and ``DATA/signing.pub`` (PEM), made on first start.
Gateways (revocation lists) and devices (commands) are given ``signing.pub``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.errors import KeyFileError
from common.fileio import write_atomic

__all__ = ["PRIVATE_FILE", "PUBLIC_FILE", "load_or_create_signing_key"]

PRIVATE_FILE = "signing.key"
PUBLIC_FILE = "signing.pub"


def load_or_create_signing_key(data_dir: str | os.PathLike[str]) -> Ed25519PrivateKey:
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    priv, pub = d / PRIVATE_FILE, d / PUBLIC_FILE
    if not priv.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        write_atomic(priv, pem, 0o600)
    else:
        mode = stat.S_IMODE(priv.stat().st_mode)
        if mode & 0o077:
            raise KeyFileError(f"signing key {str(priv)!r} is readable by others (mode {mode:04o}); run: chmod 600 {priv}")
        try:
            key = serialization.load_pem_private_key(priv.read_bytes(), None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"signing key {str(priv)!r} is malformed: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"signing key {str(priv)!r} is not an Ed25519 key")
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if not pub.exists() or pub.read_bytes() != public:
        write_atomic(pub, public, 0o644)
    return key
