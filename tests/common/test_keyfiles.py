"""common.keyfiles: Ed25519 and X25519 key files written at 0600 and read back, every failure a KeyFileError
naming the file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from common.errors import KeyFileError
from common.keyfiles import (
    load_or_create_private_key,
    load_private_key,
    load_public_key,
    public_pem,
    save_private_key,
    save_public_key,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("kind", [Ed25519PrivateKey, X25519PrivateKey])
def test_a_key_is_saved_at_0600_and_loads_back(tmp_path: Path, kind) -> None:
    key = kind.generate()
    save_private_key(tmp_path / "k", key)
    save_public_key(tmp_path / "k.pub", key.public_key())
    assert mode(tmp_path / "k") == 0o600 and mode(tmp_path / "k.pub") == 0o644
    back = load_private_key(tmp_path / "k", kind=kind)
    assert public_pem(back.public_key()) == public_pem(key.public_key())
    pub_kind = Ed25519PublicKey if kind is Ed25519PrivateKey else X25519PublicKey
    assert public_pem(load_public_key(tmp_path / "k.pub", kind=pub_kind)) == public_pem(key.public_key())


def test_an_encrypted_key_needs_its_passphrase(tmp_path: Path) -> None:
    save_private_key(tmp_path / "k", Ed25519PrivateKey.generate(), passphrase=b"secret")
    load_private_key(tmp_path / "k", passphrase=b"secret")
    for wrong in (b"guess", None):
        with pytest.raises(KeyFileError, match=r"release key '.*k': wrong passphrase"):
            load_private_key(tmp_path / "k", passphrase=wrong, what="release key")


def test_a_key_others_can_read_is_refused_with_what_to_do(tmp_path: Path) -> None:
    save_private_key(tmp_path / "k", Ed25519PrivateKey.generate())
    (tmp_path / "k").chmod(0o644)
    with pytest.raises(KeyFileError, match=r"signing key .* readable by others \(mode 0644\); run: chmod 600"):
        load_private_key(tmp_path / "k", what="signing key")


def test_the_wrong_kind_missing_or_garbage_is_a_key_file_error(tmp_path: Path) -> None:
    save_private_key(tmp_path / "x", X25519PrivateKey.generate())
    with pytest.raises(KeyFileError, match="is a .*X25519PrivateKey.*, not an Ed25519 key"):
        load_private_key(tmp_path / "x")
    save_public_key(tmp_path / "x.pub", X25519PrivateKey.generate().public_key())
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load_public_key(tmp_path / "x.pub")
    with pytest.raises(KeyFileError, match="cannot read cloud signing key .*missing"):
        load_public_key(tmp_path / "missing", what="cloud signing key")
    (tmp_path / "junk").write_bytes(b"not a key")
    (tmp_path / "junk").chmod(0o600)
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        load_private_key(tmp_path / "junk")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key(tmp_path / "junk")


def test_load_or_create_makes_the_key_once_and_keeps_its_public_half(tmp_path: Path) -> None:
    first = load_or_create_private_key(tmp_path / "signing.key", public_path=tmp_path / "signing.pub")
    again = load_or_create_private_key(tmp_path / "signing.key", public_path=tmp_path / "signing.pub")
    assert public_pem(first.public_key()) == public_pem(again.public_key()) == (tmp_path / "signing.pub").read_bytes()
    assert mode(tmp_path / "signing.key") == 0o600
