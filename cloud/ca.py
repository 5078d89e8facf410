"""The fleet CA: an offline-capable root, a day-to-day intermediate, and node certificates.

Keys are Ed25519 throughout. Its signatures are deterministic (ECDSA's
per-signature nonce is the classic way to leak a long-lived key), it has no
parameters to get wrong, and it is what ``common.signed`` uses, so the fleet
has one signature algorithm. ECDSA P-256's advantage, support in browsers,
TLS stacks and older HSMs, does not matter here: only EdgeFleet verifies
these certificates.

On disk (``init_ca``)::

    root.key          Ed25519, PKCS#8 encrypted with the CA passphrase, 0600
    root.crt          self-signed, the trust anchor nodes pin
    intermediate.key  0600; plain by default, encrypted if given a passphrase
    intermediate.crt  signed by the root; issues node certificates
    chain.pem         root, then every intermediate not yet expired (the trust bundle)

The root is needed only to make the next intermediate (``rotate_intermediate``),
so ``root.key`` can live offline. The intermediate key is plain (0600) by
default because the online cloud must load it unattended: a passphrase would
have to sit beside it (env or file) and protect nothing more. Pass
``intermediate_passphrase`` when an operator unlocks the CA at start instead.

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

Rotation: ``needs_rotation`` turns true at ``fraction`` of the lifetime. The
new certificate does not revoke the old: both verify until the old one expires.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import zmq.utils.z85
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.x509.oid import NameOID

from common.errors import CertificateError, KeyFileError
from common.fileio import write_atomic

__all__ = [
    "ROLES",
    "Chain",
    "Identity",
    "IssuingCA",
    "init_ca",
    "issue_certificate",
    "load_chain",
    "load_intermediate",
    "needs_rotation",
    "rotate_at",
    "rotate_intermediate",
    "verify_certificate",
]

ROLES = ("device", "gateway")
URN = "urn:edgefleet:"
FACTS = ("id", "role", "site", "hw", "curve")
ROOT_KEY, ROOT_CERT = "root.key", "root.crt"
INTER_KEY, INTER_CERT = "intermediate.key", "intermediate.crt"
CHAIN = "chain.pem"
ROOT_LIFETIME = dt.timedelta(days=20 * 365)
INTERMEDIATE_LIFETIME = dt.timedelta(days=2 * 365)


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
class IssuingCA:
    """The intermediate's key and certificate, and the chain to publish with it."""

    key: Ed25519PrivateKey
    cert: x509.Certificate
    chain: Chain


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


def init_ca(
    directory: str | os.PathLike[str],
    passphrase: bytes,
    *,
    now: dt.datetime,
    intermediate_passphrase: bytes | None = None,
    name: str = "EdgeFleet",
    root_lifetime: dt.timedelta = ROOT_LIFETIME,
    intermediate_lifetime: dt.timedelta = INTERMEDIATE_LIFETIME,
) -> IssuingCA:
    """Make the root (encrypted with ``passphrase``) and a first intermediate in ``directory``."""
    _aware(now)
    if not passphrase:
        raise ValueError("the CA root needs a non-empty passphrase")
    d = Path(directory)
    if (d / ROOT_KEY).exists():
        raise KeyFileError(f"{str(d / ROOT_KEY)!r} exists: refusing to replace a fleet CA root")
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    subject = _name(f"{name} root CA")
    root = (
        _ca_builder(subject, subject, key.public_key(), now, now + root_lifetime, path_length=1)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, None)
    )
    write_atomic(d / ROOT_KEY, _private_pem(key, passphrase), 0o600)
    write_atomic(d / ROOT_CERT, root.public_bytes(serialization.Encoding.PEM), 0o644)
    return _new_intermediate(d, key, root, (), now, intermediate_passphrase, name, intermediate_lifetime)


def rotate_intermediate(
    directory: str | os.PathLike[str],
    passphrase: bytes,
    *,
    now: dt.datetime,
    intermediate_passphrase: bytes | None = None,
    name: str = "EdgeFleet",
    lifetime: dt.timedelta = INTERMEDIATE_LIFETIME,
) -> IssuingCA:
    """Make the next intermediate with the root; older intermediates stay trusted until they expire."""
    _aware(now)
    d = Path(directory)
    root_key = _load_key(d / ROOT_KEY, passphrase)
    chain = load_chain(d)
    live = tuple(c for c in chain.intermediates if c.not_valid_after_utc > now)
    return _new_intermediate(d, root_key, chain.root, live, now, intermediate_passphrase, name, lifetime)


def load_chain(directory: str | os.PathLike[str]) -> Chain:
    path = Path(directory) / CHAIN
    try:
        return Chain.from_pem(path.read_bytes())
    except OSError as exc:
        raise KeyFileError(f"cannot read CA chain {str(path)!r}: {exc.strerror}") from exc
    except ValueError as exc:
        raise KeyFileError(f"CA chain {str(path)!r} is malformed: {exc}") from exc


def load_intermediate(directory: str | os.PathLike[str], passphrase: bytes | None = None) -> IssuingCA:
    """The day-to-day issuing CA; needs ``passphrase`` only if its key was written encrypted."""
    d = Path(directory)
    key = _load_key(d / INTER_KEY, passphrase)
    try:
        cert = x509.load_pem_x509_certificate((d / INTER_CERT).read_bytes())
    except OSError as exc:
        raise KeyFileError(f"cannot read {str(d / INTER_CERT)!r}: {exc.strerror}") from exc
    if cert.public_key() != key.public_key():
        raise KeyFileError(f"{str(d / INTER_KEY)!r} is not the key of {str(d / INTER_CERT)!r}")
    return IssuingCA(key, cert, load_chain(d))


def issue_certificate(
    ca: IssuingCA,
    *,
    subject_id: str,
    role: str,
    site: str,
    hw: str,
    curve_public_key: bytes | str,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> bytes:
    """A PEM certificate binding ``subject_id``, ``role``, ``site`` and ``hw`` to a CurveZMQ public key."""
    _aware(not_before)
    _aware(not_after)
    if role not in ROLES:
        raise ValueError(f"role of {subject_id!r} must be one of {ROLES}, not {role!r}")
    for fact, value in (("subject id", subject_id), ("site", site), ("hardware", hw)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"certificate of {subject_id!r} needs a non-empty {fact}")
    z85 = curve_public_key.encode() if isinstance(curve_public_key, str) else bytes(curve_public_key)
    raw = _decode_curve(z85)
    if raw is None:
        raise ValueError(f"curve key of {subject_id!r} is not 40 Z85 characters: {z85!r}")
    if not ca.cert.not_valid_before_utc <= not_before < not_after <= ca.cert.not_valid_after_utc:
        raise ValueError(
            f"certificate of {subject_id!r}: validity {not_before.isoformat()} .. {not_after.isoformat()} "
            f"must be non-empty and within the issuing CA's ({ca.cert.not_valid_after_utc.isoformat()})"
        )
    facts = {"id": subject_id, "role": role, "site": site, "hw": hw, "curve": z85.decode()}
    uris = [x509.UniformResourceIdentifier(URN + f + ":" + quote(v, safe="")) for f, v in facts.items()]
    public = X25519PublicKey.from_public_bytes(raw)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    x509.NameAttribute(NameOID.USER_ID, subject_id),
                ]
            )
        )
        .issuer_name(ca.cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(key_agreement=True), critical=True)
        .add_extension(x509.SubjectAlternativeName(uris), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, None)
    )
    return cert.public_bytes(serialization.Encoding.PEM)


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
    _aware(now)
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
    return _aware(now) >= rotate_at(identity, fraction)


# -- helpers ------------------------------------------------------------------------------


def _aware(t: dt.datetime) -> dt.datetime:
    if not isinstance(t, dt.datetime) or t.tzinfo is None:
        raise ValueError(f"times must be timezone-aware datetimes, not {t!r}")
    return t


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "EdgeFleet"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(*, key_agreement: bool = False, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_builder(subject, issuer, public, not_before, not_after, *, path_length: int) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def _new_intermediate(d, root_key, root, keep, now, passphrase, name, lifetime) -> IssuingCA:
    key = Ed25519PrivateKey.generate()
    not_after = min(now + lifetime, root.not_valid_after_utc)
    cert = (
        _ca_builder(
            _name(f"{name} intermediate CA {now:%Y%m%dT%H%M%SZ}"),
            root.subject,
            key.public_key(),
            now,
            not_after,
            path_length=0,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, None)
    )
    chain = Chain(root, (*keep, cert))
    # the bundle first, so a crash in between leaves the new intermediate trusted before it is used
    write_atomic(d / CHAIN, chain.to_pem(), 0o644)
    write_atomic(d / INTER_KEY, _private_pem(key, passphrase), 0o600)
    write_atomic(d / INTER_CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return IssuingCA(key, cert, chain)


def _private_pem(key: Ed25519PrivateKey, passphrase: bytes | None) -> bytes:
    enc = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def _load_key(path: Path, passphrase: bytes | None) -> Ed25519PrivateKey:
    try:
        mode = path.stat().st_mode & 0o777
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read CA key {str(path)!r}: {exc.strerror}") from exc
    if mode & 0o077:
        raise KeyFileError(f"CA key {str(path)!r} is readable by others (mode {mode:04o}); run: chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, passphrase or None)
    except TypeError as exc:  # encrypted without a passphrase, or a passphrase for a plain key
        raise KeyFileError(f"CA key {str(path)!r}: {exc}") from exc
    except ValueError as exc:
        raise KeyFileError(f"CA key {str(path)!r}: wrong passphrase or malformed key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"CA key {str(path)!r} is not an Ed25519 key")
    return key


def _decode_curve(z85: bytes) -> bytes | None:
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
    raw = _decode_curve(one["curve"].encode())
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
