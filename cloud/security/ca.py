"""The fleet CA's issuing side: an offline-capable root, a day-to-day intermediate, and node certificates.

What a certificate says and how every tier checks it (the trust bundle, ``verify_certificate``,
rotation timing) is ``common.pki``; only the cloud and the ``edgefleet ca`` commands issue.

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

Node certificates (what their SubjectAlternativeName URIs say, how they bind the CurveZMQ key)
are described in ``common.pki``.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.x509.oid import NameOID

from common.errors import KeyFileError
from common.fileio import write_atomic
from common.pki import CHAIN, ROLES, URN, Chain, aware, decode_curve_key, load_chain

__all__ = ["IssuingCA", "init_ca", "issue_certificate", "load_intermediate", "rotate_intermediate"]

ROOT_KEY, ROOT_CERT = "root.key", "root.crt"
INTER_KEY, INTER_CERT = "intermediate.key", "intermediate.crt"
ROOT_LIFETIME = dt.timedelta(days=20 * 365)
INTERMEDIATE_LIFETIME = dt.timedelta(days=2 * 365)


@dataclass(frozen=True, slots=True)
class IssuingCA:
    """The intermediate's key and certificate, and the chain to publish with it."""

    key: Ed25519PrivateKey
    cert: x509.Certificate
    chain: Chain


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
    aware(now)
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
    aware(now)
    d = Path(directory)
    root_key = _load_key(d / ROOT_KEY, passphrase)
    chain = load_chain(d)
    live = tuple(c for c in chain.intermediates if c.not_valid_after_utc > now)
    return _new_intermediate(d, root_key, chain.root, live, now, intermediate_passphrase, name, lifetime)


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
    aware(not_before)
    aware(not_after)
    if role not in ROLES:
        raise ValueError(f"role of {subject_id!r} must be one of {ROLES}, not {role!r}")
    for fact, value in (("subject id", subject_id), ("site", site), ("hardware", hw)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"certificate of {subject_id!r} needs a non-empty {fact}")
    z85 = curve_public_key.encode() if isinstance(curve_public_key, str) else bytes(curve_public_key)
    raw = decode_curve_key(z85)
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


# -- helpers ------------------------------------------------------------------------------


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
