"""Node certificates as every tier checks them (``common.pki``): every way one is refused, rotation timing.

The certificates are made by the fleet CA (``cloud.security.ca``, tested in tests/cloud/security/test_ca.py).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from urllib.parse import quote

import pytest
import zmq
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

import common.pki
from cloud.security.ca import IssuingCA, init_ca
from common.errors import CertificateError, TrustError
from common.pki import Chain, needs_rotation, rotate_at, verify_certificate
from tests.cloud.security.test_ca import DAY, NOW, PASS, curve_key, issue


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    return tmp_path / "ca"


@pytest.fixture
def ca(ca_dir: Path) -> IssuingCA:
    return init_ca(ca_dir, PASS, now=NOW)


def test_all() -> None:
    assert all(hasattr(common.pki, name) for name in common.pki.__all__)
    assert {"Chain", "Identity", "verify_certificate", "needs_rotation", "load_chain"} <= set(common.pki.__all__)


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
    smuggled = Chain(ca.chain.root, (*ca.chain.intermediates, rogue.cert))
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
