"""The fleet CA: files and passphrases, issuing, and every way a certificate is refused."""

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
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

import cloud.ca
from cloud.ca import (
    IssuingCA,
    init_ca,
    issue_certificate,
    load_chain,
    load_intermediate,
    needs_rotation,
    rotate_at,
    rotate_intermediate,
    verify_certificate,
)
from common.errors import CertificateError, KeyFileError, TrustError
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
    assert all(hasattr(cloud.ca, name) for name in cloud.ca.__all__)
    assert {"init_ca", "issue_certificate", "verify_certificate", "needs_rotation", "Identity"} <= set(
        cloud.ca.__all__
    )


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


# -- refusals -------------------------------------------------------------------------------


def test_expired_and_not_yet_valid_are_refused_naming_the_subject(ca: IssuingCA) -> None:
    pem = issue(ca, curve_key(), subject_id="dev-9", start=NOW + 10 * DAY, days=30)
    with pytest.raises(CertificateError, match=r"'dev-9'.*certificate not yet valid") as err:
        verify_certificate(pem, ca.chain, now=NOW + 9 * DAY)
    assert err.value.subject == "dev-9"
    assert isinstance(err.value, TrustError)
    verify_certificate(pem, ca.chain, now=NOW + 10 * DAY)  # not_before is inclusive
    with pytest.raises(CertificateError, match=r"'dev-9'.*certificate expired at 2030-02-10"):
        verify_certificate(pem, ca.chain, now=NOW + 40 * DAY)  # not_after is exclusive


def test_revoked_by_subject_or_by_serial_is_refused(ca: IssuingCA) -> None:
    pem = issue(ca, curve_key(), subject_id="dev-3")
    serial = verify_certificate(pem, ca.chain, now=NOW).serial
    with pytest.raises(CertificateError, match=r"'dev-3'.*revoked \(subject\)"):
        verify_certificate(pem, ca.chain, now=NOW, revoked_subjects={"dev-3"})
    with pytest.raises(CertificateError, match=r"'dev-3'.*revoked \(serial"):
        verify_certificate(pem, ca.chain, now=NOW, revoked_serials={serial})
    verify_certificate(pem, ca.chain, now=NOW, revoked_subjects={"dev-4"}, revoked_serials={serial + 1})


def test_a_curve_key_other_than_the_certified_one_is_refused(ca: IssuingCA) -> None:
    certified, other = curve_key(), curve_key()
    pem = issue(ca, certified, subject_id="dev-5")
    with pytest.raises(CertificateError, match=r"'dev-5'.*CurveZMQ key mismatch"):
        verify_certificate(pem, ca.chain, now=NOW, expected_curve_key=other)
    assert verify_certificate(pem, ca.chain, now=NOW, expected_curve_key=certified.decode()).curve_key == certified


def test_a_certificate_from_another_ca_is_refused(ca: IssuingCA, tmp_path: Path) -> None:
    other = init_ca(tmp_path / "other", PASS, now=NOW)  # same names, other keys
    assert other.cert.subject == ca.cert.subject
    pem = issue(other, curve_key(), subject_id="intruder")
    with pytest.raises(CertificateError, match=r"'intruder'.*not signed by this fleet's CA"):
        verify_certificate(pem, ca.chain, now=NOW)


def test_a_leaf_signed_by_the_root_directly_is_refused(ca: IssuingCA, ca_dir: Path) -> None:
    root_key = serialization.load_pem_private_key((ca_dir / "root.key").read_bytes(), PASS)
    root_as_issuer = IssuingCA(root_key, ca.chain.root, ca.chain)
    pem = issue(root_as_issuer, curve_key(), subject_id="dev-r")
    with pytest.raises(CertificateError, match="not signed by this fleet's CA"):
        verify_certificate(pem, ca.chain, now=NOW)


def test_an_intermediate_not_signed_by_the_root_is_refused(ca: IssuingCA, tmp_path: Path) -> None:
    rogue = init_ca(tmp_path / "rogue", PASS, now=NOW)
    pem = issue(rogue, curve_key(), subject_id="dev-x")
    # a chain that smuggles the rogue intermediate in next to the pinned root
    smuggled = cloud.ca.Chain(ca.chain.root, (*ca.chain.intermediates, rogue.cert))
    with pytest.raises(CertificateError, match="not signed by this fleet's CA"):
        verify_certificate(pem, smuggled, now=NOW)


def test_a_tampered_certificate_is_refused(ca: IssuingCA) -> None:
    pem = issue(ca, curve_key(), subject_id="dev-t", site="plant-7")
    der = bytearray(x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER))
    at = bytes(der).index(b"plant-7")
    der[at : at + 7] = b"plant-8"
    forged = x509.load_der_x509_certificate(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CertificateError, match="not signed by this fleet's CA"):
        verify_certificate(forged, ca.chain, now=NOW)


def test_garbage_is_refused(ca: IssuingCA) -> None:
    with pytest.raises(CertificateError, match="not a PEM certificate"):
        verify_certificate(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", ca.chain, now=NOW)
    with pytest.raises(CertificateError, match="not a PEM certificate"):
        verify_certificate(b"hello", ca.chain, now=NOW)
    key_pem = ca.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(CertificateError, match="not a PEM certificate"):
        verify_certificate(key_pem, ca.chain, now=NOW)


def test_a_ca_certificate_is_not_a_node_certificate(ca: IssuingCA) -> None:
    pem = ca.cert.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CertificateError, match="intermediate CA.*not signed by this fleet's CA"):
        verify_certificate(pem, ca.chain, now=NOW)


def _custom_leaf(ca: IssuingCA, uris: list[str], public: X25519PublicKey) -> bytes:
    """A certificate the real intermediate signs but that breaks the URI rules (a bug, not an attack)."""
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.USER_ID, "dev-c")]))
        .issuer_name(ca.cert.subject)
        .public_key(public)
        .serial_number(7)
        .not_valid_before(NOW)
        .not_valid_after(NOW + DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), False)
        .sign(ca.key, None)
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_a_curve_uri_that_disagrees_with_the_public_key_is_refused(ca: IssuingCA) -> None:
    said, real = curve_key(), curve_key()
    uris = [
        "urn:edgefleet:id:dev-c",
        "urn:edgefleet:role:device",
        "urn:edgefleet:site:s",
        "urn:edgefleet:hw:h",
        "urn:edgefleet:curve:" + quote(said.decode(), safe=""),
    ]
    public = X25519PublicKey.from_public_bytes(zmq.utils.z85.decode(real))
    with pytest.raises(CertificateError, match="disagree"):
        verify_certificate(_custom_leaf(ca, uris, public), ca.chain, now=NOW)


def test_missing_or_duplicated_facts_are_refused(ca: IssuingCA) -> None:
    public = X25519PublicKey.from_public_bytes(zmq.utils.z85.decode(curve_key()))
    uris = ["urn:edgefleet:id:dev-c", "urn:edgefleet:id:dev-d", "urn:edgefleet:role:device"]
    with pytest.raises(CertificateError, match="exactly one"):
        verify_certificate(_custom_leaf(ca, uris, public), ca.chain, now=NOW)


def test_naive_times_are_refused(ca: IssuingCA) -> None:
    pem = issue(ca, curve_key())
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_certificate(pem, ca.chain, now=NOW.replace(tzinfo=None))


# -- rotation ---------------------------------------------------------------------------------


def test_rotation_is_due_two_thirds_through_the_lifetime(ca: IssuingCA) -> None:
    ident = verify_certificate(issue(ca, curve_key(), days=90), ca.chain, now=NOW)
    assert rotate_at(ident) == NOW + 60 * DAY
    assert not needs_rotation(ident, NOW + 59 * DAY)
    assert needs_rotation(ident, NOW + 60 * DAY)
    assert needs_rotation(ident, NOW + 80 * DAY, fraction=0.8)
    assert not needs_rotation(ident, NOW + 71 * DAY, fraction=0.8)
    with pytest.raises(ValueError, match="fraction"):
        rotate_at(ident, 1.0)


def test_old_and_new_certificates_overlap_until_the_old_expires(ca: IssuingCA) -> None:
    old_key, new_key = curve_key(), curve_key()
    old = issue(ca, old_key, subject_id="dev-1", days=90)
    old_ident = verify_certificate(old, ca.chain, now=NOW)
    at = rotate_at(old_ident)
    new = issue(ca, new_key, subject_id="dev-1", start=at, days=90)
    # in the overlap both verify, each only with its own key
    for when in (at, at + DAY, NOW + 90 * DAY - dt.timedelta(seconds=1)):
        assert verify_certificate(old, ca.chain, now=when, expected_curve_key=old_key).subject_id == "dev-1"
        assert verify_certificate(new, ca.chain, now=when, expected_curve_key=new_key).subject_id == "dev-1"
        with pytest.raises(CertificateError, match="mismatch"):
            verify_certificate(new, ca.chain, now=when, expected_curve_key=old_key)
    # then only the new one
    with pytest.raises(CertificateError, match="expired"):
        verify_certificate(old, ca.chain, now=NOW + 90 * DAY)
    assert verify_certificate(new, ca.chain, now=NOW + 90 * DAY).serial != old_ident.serial


def test_a_device_back_after_its_window_rotates_while_valid_and_not_after(ca: IssuingCA) -> None:
    pem = issue(ca, curve_key(), days=90)
    late_but_valid = NOW + 85 * DAY
    ident = verify_certificate(pem, ca.chain, now=late_but_valid)
    assert needs_rotation(ident, late_but_valid)
    with pytest.raises(CertificateError, match="expired"):  # too late: it must re-enroll
        verify_certificate(pem, ca.chain, now=NOW + 91 * DAY)


def test_an_unrelated_signing_key_cannot_pose_as_the_intermediate(ca: IssuingCA) -> None:
    fake = IssuingCA(Ed25519PrivateKey.generate(), ca.cert, ca.chain)
    pem = issue(fake, curve_key(), subject_id="dev-f")
    with pytest.raises(CertificateError, match=r"'dev-f'.*not signed"):
        verify_certificate(pem, ca.chain, now=NOW)
