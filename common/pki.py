"""Node certificates as every tier checks them: the fleet's trust bundle, verification, rotation timing.

The fleet CA issues (``cloud.security.ca``: an offline-capable root, a day-to-day intermediate);
this module only checks, so a gateway verifying an enrolled device's certificate loads no
issuing code. Keys are Ed25519 throughout (the CA's reasons are in ``cloud.security.ca``).

A node certificate binds identity to the node's CurveZMQ key. Its subject
public key *is* that key (X25519, the 32 bytes the Z85 text encodes), and its
SubjectAlternativeName holds one URI per fact, values percent-escaped::

    urn:edgefleet:id:<subject_id>   urn:edgefleet:role:<device|gateway>
    urn:edgefleet:site:<site>       urn:edgefleet:hw:<hardware>
    urn:edgefleet:curve:<Z85 key>

``verify_certificate`` requires the URI key and the subject public key to agree
and, given ``expected_curve_key`` (the key the peer connected with), to equal it.
Proof of possession is the CurveZMQ handshake itself: the cloud issues a
certificate only for the key the enrolling node connected with.

``chain.pem`` (``load_chain``) is the trust bundle: the root, then every intermediate not yet expired.

Rotation: ``needs_rotation`` turns true at ``fraction`` of the lifetime. The
new certificate does not revoke the old: both verify until the old one expires.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import zmq.utils.z85
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.x509.oid import NameOID

from common.errors import CertificateError, KeyFileError

__all__ = [
    "CHAIN",
    "FACTS",
    "ROLES",
    "URN",
    "Chain",
    "Identity",
    "aware",
    "decode_curve_key",
    "load_chain",
    "needs_rotation",
    "rotate_at",
    "verify_certificate",
]

ROLES = ("device", "gateway")
URN = "urn:edgefleet:"
FACTS = ("id", "role", "site", "hw", "curve")
CHAIN = "chain.pem"


@dataclass(frozen=True, slots=True)
class Chain:
    """What a verifier trusts: the pinned root and the intermediates it signed."""

    root: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]

    def to_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.root, *self.intermediates))

    @classmethod
    def from_pem(cls, data: bytes) -> Chain:
        """A bundle: the first certificate is the root, the rest intermediates."""
        certs = x509.load_pem_x509_certificates(data)
        return cls(certs[0], tuple(certs[1:]))


@dataclass(frozen=True, slots=True)
class Identity:
    """What a verified node certificate says."""

    subject_id: str
    role: str
    site: str
    hw: str
    curve_key: bytes  # Z85, 40 bytes, as ``common.keys.KeyPair.public``
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime


def load_chain(directory: str | os.PathLike[str]) -> Chain:
    path = Path(directory) / CHAIN
    try:
        return Chain.from_pem(path.read_bytes())
    except OSError as exc:
        raise KeyFileError(f"cannot read CA chain {str(path)!r}: {exc.strerror}") from exc
    except ValueError as exc:
        raise KeyFileError(f"CA chain {str(path)!r} is malformed: {exc}") from exc


def verify_certificate(
    pem: bytes,
    chain: Chain,
    *,
    now: dt.datetime,
    expected_curve_key: bytes | str | None = None,
    revoked_subjects: Collection[str] = (),
    revoked_serials: Collection[int] = (),
) -> Identity:
    """The identity ``pem`` proves under ``chain`` at ``now``, or ``CertificateError`` naming why not."""
    aware(now)
    try:
        cert = x509.load_pem_x509_certificate(pem)
        cert.extensions  # noqa: B018 -- parsed lazily: fail here on duplicate or malformed extensions
    except ValueError as exc:
        raise CertificateError("<unparseable>", f"not a PEM certificate ({exc})") from None
    subject = _claimed_subject(cert)
    issuer = _issuer_of(cert, chain, subject)
    for c, what in ((chain.root, "root CA"), (issuer, "issuing CA"), (cert, "certificate")):
        if now < c.not_valid_before_utc:
            raise CertificateError(subject, f"{what} not yet valid (valid from {c.not_valid_before_utc.isoformat()})")
        if now >= c.not_valid_after_utc:
            raise CertificateError(subject, f"{what} expired at {c.not_valid_after_utc.isoformat()}")
    ident = _identity(cert, subject)
    if ident.subject_id in revoked_subjects:
        raise CertificateError(subject, "revoked (subject)")
    if ident.serial in revoked_serials:
        raise CertificateError(subject, f"revoked (serial {ident.serial:x})")
    if expected_curve_key is not None:
        expected = expected_curve_key.encode() if isinstance(expected_curve_key, str) else bytes(expected_curve_key)
        if expected != ident.curve_key:
            raise CertificateError(
                subject,
                f"CurveZMQ key mismatch: connected with {expected.decode(errors='replace')}, "
                f"certificate names {ident.curve_key.decode()}",
            )
    return ident


def rotate_at(identity: Identity, fraction: float = 2 / 3) -> dt.datetime:
    """When to rotate: ``fraction`` of the way through the certificate's lifetime."""
    if not 0 < fraction < 1:
        raise ValueError(f"rotation fraction must be in (0, 1), not {fraction}")
    return identity.not_before + (identity.not_after - identity.not_before) * fraction


def needs_rotation(identity: Identity, now: dt.datetime, fraction: float = 2 / 3) -> bool:
    """Whether to rotate now. Past ``not_after`` it is too late: the node must re-enroll."""
    return aware(now) >= rotate_at(identity, fraction)


# -- helpers ------------------------------------------------------------------------------


def aware(t: dt.datetime) -> dt.datetime:
    if not isinstance(t, dt.datetime) or t.tzinfo is None:
        raise ValueError(f"times must be timezone-aware datetimes, not {t!r}")
    return t


def decode_curve_key(z85: bytes) -> bytes | None:
    try:
        raw = zmq.utils.z85.decode(z85) if len(z85) == 40 else b""
    except (ValueError, KeyError, IndexError):
        return None
    return raw if len(raw) == 32 else None


def _uri_facts(cert: x509.Certificate) -> dict[str, list[str]]:
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier
        )
    except x509.ExtensionNotFound:
        return {}
    facts: dict[str, list[str]] = {}
    for uri in uris:
        if uri.startswith(URN):
            fact, _, value = uri[len(URN):].partition(":")
            facts.setdefault(fact, []).append(unquote(value))
    return facts


def _claimed_subject(cert: x509.Certificate) -> str:
    """Who the certificate says it is, for error messages, before anything is verified."""
    ids = _uri_facts(cert).get("id") or [a.value for a in cert.subject.get_attributes_for_oid(NameOID.USER_ID)]
    return str(ids[0]) if ids else cert.subject.rfc4514_string() or "<no subject>"


def _issuer_of(cert: x509.Certificate, chain: Chain, subject: str) -> x509.Certificate:
    for inter in chain.intermediates:
        if inter.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(inter)
            inter.verify_directly_issued_by(chain.root)
        except (ValueError, TypeError, InvalidSignature):
            continue
        try:
            if inter.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                return inter
        except (ValueError, x509.ExtensionNotFound):
            continue
    raise CertificateError(subject, f"not signed by this fleet's CA (issuer {cert.issuer.rfc4514_string()})")


def _identity(cert: x509.Certificate, subject: str) -> Identity:
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise CertificateError(subject, "is a CA certificate, not a node certificate")
    except x509.ExtensionNotFound:
        raise CertificateError(subject, "has no basic constraints") from None
    facts = _uri_facts(cert)
    if any(len(facts.get(f, ())) != 1 for f in FACTS):
        raise CertificateError(subject, f"needs exactly one of each {URN}{{{','.join(FACTS)}}} URI")
    one = {f: facts[f][0] for f in FACTS}
    if [a.value for a in cert.subject.get_attributes_for_oid(NameOID.USER_ID)] != [one["id"]]:
        raise CertificateError(subject, "its subject name and its id URI disagree")
    if one["role"] not in ROLES:
        raise CertificateError(subject, f"unknown role {one['role']!r}")
    raw = decode_curve_key(one["curve"].encode())
    public = cert.public_key()
    if raw is None or not isinstance(public, X25519PublicKey):
        raise CertificateError(subject, "has no CurveZMQ (X25519) key")
    if public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) != raw:
        raise CertificateError(subject, "its curve URI and its subject public key disagree")
    return Identity(
        subject_id=one["id"],
        role=one["role"],
        site=one["site"],
        hw=one["hw"],
        curve_key=one["curve"].encode(),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )
