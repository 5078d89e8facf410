"""The fleet CA (``cloud.security.ca``): files and passphrases, intermediates, issuing.

Every way a certificate is refused, and rotation timing, are ``common.pki``'s: tests/common/test_pki.py.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
import zmq
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

import cloud.security.ca
from cloud.security.ca import IssuingCA, init_ca, issue_certificate, load_intermediate, rotate_intermediate
from common.errors import CertificateError, KeyFileError
from common.pki import load_chain, verify_certificate
from tests.real_tools import requires

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
PASS = b"correct horse battery staple"


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    return tmp_path / "ca"


@pytest.fixture
def ca(ca_dir: Path) -> IssuingCA:
    return init_ca(ca_dir, PASS, now=NOW)


def curve_key() -> bytes:
    return zmq.curve_keypair()[0]


def issue(ca: IssuingCA, key: bytes, *, subject_id: str = "dev-1", start=NOW, days: int = 90, **kw) -> bytes:
    facts = {"role": "device", "site": "plant-7", "hw": "rpi4-b", **kw}
    return issue_certificate(
        ca, subject_id=subject_id, curve_public_key=key, not_before=start, not_after=start + days * DAY, **facts
    )


def test_all() -> None:
    assert all(hasattr(cloud.security.ca, name) for name in cloud.security.ca.__all__)
    assert {"init_ca", "issue_certificate", "load_intermediate", "rotate_intermediate"} <= set(cloud.security.ca.__all__)


# -- the CA on disk ------------------------------------------------------------------------


def test_init_writes_an_encrypted_root_and_a_plain_0600_intermediate(ca: IssuingCA, ca_dir: Path) -> None:
    assert sorted(p.name for p in ca_dir.iterdir()) == [
        "chain.pem",
        "intermediate.crt",
        "intermediate.key",
        "root.crt",
        "root.key",
    ]
    for name in ("root.key", "intermediate.key"):
        assert (ca_dir / name).stat().st_mode & 0o777 == 0o600
    assert (ca_dir / "root.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):  # no passphrase, no key
        serialization.load_pem_private_key((ca_dir / "root.key").read_bytes(), None)
    assert (ca_dir / "intermediate.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    chain = load_chain(ca_dir)
    assert chain.intermediates == (ca.cert,)
    assert ca.cert.issuer == chain.root.subject
    ca.cert.verify_directly_issued_by(chain.root)
    bc = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0


def test_load_intermediate_gives_the_same_issuing_ca(ca: IssuingCA, ca_dir: Path) -> None:
    loaded = load_intermediate(ca_dir)
    assert loaded.cert == ca.cert
    assert loaded.chain == ca.chain
    key = curve_key()
    verify_certificate(issue(loaded, key), ca.chain, now=NOW + DAY, expected_curve_key=key)


def test_an_encrypted_intermediate_needs_its_own_passphrase(ca_dir: Path) -> None:
    init_ca(ca_dir, PASS, now=NOW, intermediate_passphrase=b"daily")
    assert (ca_dir / "intermediate.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(KeyFileError, match="intermediate.key"):
        load_intermediate(ca_dir)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_intermediate(ca_dir, b"nope")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_intermediate(ca_dir, PASS)  # the root's passphrase is not the intermediate's
    assert load_intermediate(ca_dir, b"daily").cert.subject.rfc4514_string().startswith("CN=EdgeFleet intermediate")


def test_init_refuses_to_replace_a_root_or_to_go_without_a_passphrase(ca: IssuingCA, ca_dir: Path, tmp_path) -> None:
    before = (ca_dir / "root.key").read_bytes()
    with pytest.raises(KeyFileError, match="refusing to replace"):
        init_ca(ca_dir, PASS, now=NOW)
    assert (ca_dir / "root.key").read_bytes() == before
    with pytest.raises(ValueError, match="passphrase"):
        init_ca(tmp_path / "other", b"", now=NOW)


def test_a_key_readable_by_others_is_refused(ca: IssuingCA, ca_dir: Path) -> None:
    os.chmod(ca_dir / "intermediate.key", 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_intermediate(ca_dir)


def test_rotating_the_intermediate_needs_the_root_passphrase(ca: IssuingCA, ca_dir: Path) -> None:
    with pytest.raises(KeyFileError, match="root.key"):
        rotate_intermediate(ca_dir, b"wrong", now=NOW + DAY)
    assert load_chain(ca_dir).intermediates == (ca.cert,)


def test_old_intermediate_stays_trusted_after_rotation_until_it_expires(ca: IssuingCA, ca_dir: Path) -> None:
    old_key, new_key = curve_key(), curve_key()
    old_leaf = issue(ca, old_key, subject_id="old")
    rotated = rotate_intermediate(ca_dir, PASS, now=NOW + DAY)
    assert rotated.cert != ca.cert
    assert load_intermediate(ca_dir).cert == rotated.cert
    chain = load_chain(ca_dir)
    assert chain.intermediates == (ca.cert, rotated.cert)
    new_leaf = issue(rotated, new_key, subject_id="new", start=NOW + DAY)
    assert verify_certificate(old_leaf, chain, now=NOW + 2 * DAY).subject_id == "old"
    assert verify_certificate(new_leaf, chain, now=NOW + 2 * DAY).subject_id == "new"
    # the old chain (before rotation) does not know the new intermediate
    with pytest.raises(CertificateError, match="not signed by this fleet's CA"):
        verify_certificate(new_leaf, ca.chain, now=NOW + 2 * DAY)


def test_rotation_drops_expired_intermediates_from_the_bundle(ca_dir: Path) -> None:
    first = init_ca(ca_dir, PASS, now=NOW, intermediate_lifetime=10 * DAY)
    second = rotate_intermediate(ca_dir, PASS, now=NOW + 5 * DAY)
    third = rotate_intermediate(ca_dir, PASS, now=NOW + 11 * DAY)
    assert load_chain(ca_dir).intermediates == (second.cert, third.cert)
    assert first.cert not in load_chain(ca_dir).intermediates


# -- issuing ----------------------------------------------------------------------------------


def test_a_certificate_binds_identity_to_the_curve_key(ca: IssuingCA) -> None:
    key = curve_key()
    pem = issue(ca, key, subject_id="dev-1", hw="rpi4-b")
    ident = verify_certificate(pem, ca.chain, now=NOW + DAY, expected_curve_key=key)
    assert (ident.subject_id, ident.role, ident.site, ident.hw, ident.curve_key) == (
        "dev-1",
        "device",
        "plant-7",
        "rpi4-b",
        key,
    )
    assert ident.not_before == NOW and ident.not_after == NOW + 90 * DAY
    cert = x509.load_pem_x509_certificate(pem)
    assert ident.serial == cert.serial_number
    # the subject public key is the CurveZMQ key itself
    public = cert.public_key()
    assert isinstance(public, X25519PublicKey)
    assert public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == zmq.utils.z85.decode(key)
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    )
    assert "urn:edgefleet:id:dev-1" in uris
    assert "urn:edgefleet:curve:" + quote(key.decode(), safe="") in uris


def test_odd_characters_in_the_facts_round_trip(ca: IssuingCA) -> None:
    key = curve_key()
    pem = issue(ca, key, subject_id="dev 1/ü:%41", site="plant:7 #2", hw="hw/α", role="gateway")
    ident = verify_certificate(pem, ca.chain, now=NOW)
    assert (ident.subject_id, ident.site, ident.hw, ident.role) == ("dev 1/ü:%41", "plant:7 #2", "hw/α", "gateway")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"role": "cloud"}, "role"),
        ({"site": ""}, "site"),
        ({"hw": ""}, "hardware"),
        ({"curve_public_key": b"short"}, "not 40 Z85"),
        ({"curve_public_key": b"~" * 40}, "not 40 Z85"),
        ({"not_after": NOW}, "validity"),
        ({"not_after": NOW + 5000 * DAY}, "within the issuing CA"),
        ({"not_before": NOW - DAY}, "within the issuing CA"),
        ({"not_before": NOW.replace(tzinfo=None)}, "timezone-aware"),
    ],
)
def test_issuing_refuses_bad_requests(ca: IssuingCA, change: dict, match: str) -> None:
    args = {
        "subject_id": "dev-1",
        "role": "device",
        "site": "plant-7",
        "hw": "rpi4",
        "curve_public_key": curve_key(),
        "not_before": NOW,
        "not_after": NOW + DAY,
        **change,
    }
    with pytest.raises(ValueError, match=match):
        issue_certificate(ca, **args)


@requires("openssl")
def test_openssl_verifies_the_chain(tmp_path: Path) -> None:
    # openssl checks validity against the real clock: issue around it (the CA itself starts in 2030)
    real_now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    live = init_ca(tmp_path / "live", PASS, now=real_now - DAY)
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(issue(live, curve_key(), start=real_now - DAY, days=30))
    out = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(tmp_path / "live" / "root.crt"),
            "-untrusted",
            str(tmp_path / "live" / "intermediate.crt"),
            str(leaf),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
