"""Signed firmware manifests: what a release is, and the checks before a device may use it.

A manifest describes one firmware image: version, compatible hardware, size and
SHA-256, chunk size and per-chunk SHA-256, a security version (the anti-rollback
floor it raises devices to), an optional minimum installed version, an expiry,
and the deltas published to reach it. Its body is canonical JSON (sorted keys,
compact separators, ASCII); each signature is Ed25519 over
``DOMAIN + body``, so a manifest signature means nothing in any other context.

Wire form of a signed manifest (``SignedManifest.to_bytes``)::

    {"body": "<base64 of the canonical body>",
     "signatures": [{"key_id": "<16 hex>", "sig": "<base64 of 64 bytes>"}]}

``verify_manifest`` checks, in order: well formed, signed, by a trusted key,
with a good signature, then not expired, for this hardware, not below the
security floor, and (given the installed version) not needing a newer base
and not a downgrade unless a signed ``Allowance`` permits it. Each failure is a
``ManifestError`` naming the version and the cause, with a ``reason`` code.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from common.errors import ManifestError, VersionError
from common.firmware.chunks import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    chunk_count,
    hash_image,
)
from common.firmware.envelope import (
    MAX_BODY,
    MAX_NAME,
    canonical_json,
    check_signatures,
    claimed_version,
    load_body,
    signed_from_bytes,
    signed_to_bytes,
)
from common.firmware.keys import key_id
from common.firmware.version import Version

__all__ = [
    "ALLOWANCE_DOMAIN",
    "DEFAULT_MODULE",
    "DOMAIN",
    "MAX_BODY",
    "Allowance",
    "DeltaInfo",
    "Manifest",
    "SignedAllowance",
    "SignedManifest",
    "build_manifest",
    "canonical_json",
    "sign_allowance",
    "sign_manifest",
    "verify_allowance",
    "verify_manifest",
]

FORMAT = 1
KIND = "firmware-manifest"
ALLOWANCE_KIND = "firmware-allowance"
DOMAIN = b"edgefleet-firmware-manifest-v1\x00"
ALLOWANCE_DOMAIN = b"edgefleet-firmware-allowance-v1\x00"
MAX_LIST = 256
DEFAULT_MODULE = "rootfs-image"  # the manifest's ``module`` when it names none
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True, slots=True)
class DeltaInfo:
    """A published delta that rebuilds this image from ``from_version``'s image."""

    from_version: str
    method: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """One firmware release. List fields are stored as tuples (the record is immutable)."""

    version: str
    hw: tuple[str, ...]
    size: int
    sha256: str
    chunk_size: int
    chunks: tuple[str, ...]
    security_version: int
    min_version: str | None
    expires_ms: int
    deltas: tuple[DeltaInfo, ...]
    issued_ms: int
    module: str = DEFAULT_MODULE  # the update module that installs the artifact (rootfs-image, swupdate, ...)

    def __post_init__(self) -> None:
        for name in ("hw", "chunks", "deltas"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hw"], d["chunks"] = list(self.hw), list(self.chunks)
        d["deltas"] = [dataclasses.asdict(x) for x in self.deltas]
        if self.module == DEFAULT_MODULE:
            del d["module"]  # absent means the default: bodies signed before the field existed stay the same bytes
        return {"kind": KIND, "v": FORMAT, **d}

    def to_bytes(self) -> bytes:
        """The canonical body that signatures cover."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        """A manifest from its JSON form; ``ManifestError`` (reason ``malformed``) on any deviation."""
        return _parse(d)

    def with_deltas(self, deltas: Iterable[DeltaInfo]) -> Manifest:
        return dataclasses.replace(self, deltas=tuple(deltas))

    def delta_from(self, version: str) -> DeltaInfo | None:
        """The published delta from ``version``, if any (versions compared as versions: 2.1 == 2.1.0)."""
        want = Version(version)
        return next((d for d in self.deltas if Version(d.from_version) == want), None)


@dataclass(frozen=True, slots=True)
class SignedManifest:
    """A manifest body as signed, and its ``(key id, signature)`` pairs."""

    body: bytes
    signatures: tuple[tuple[str, bytes], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "signatures", tuple((k, bytes(s)) for k, s in self.signatures))

    def to_bytes(self) -> bytes:
        return signed_to_bytes(self.body, self.signatures)

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedManifest:
        body, sigs = signed_from_bytes(data, "manifest")
        return cls(body, sigs)

    def unverified(self) -> Manifest:
        """The manifest *without* checking any signature: for display and tooling only."""
        return _parse(load_body(self.body, None))


@dataclass(frozen=True, slots=True)
class Allowance:
    """Permission, signed by a release key, to install an older ``version`` on ``target`` (a device id or hw model)."""

    target: str
    version: str
    expires_ms: int

    def to_bytes(self) -> bytes:
        return canonical_json({"kind": ALLOWANCE_KIND, "v": FORMAT, **dataclasses.asdict(self)})


@dataclass(frozen=True, slots=True)
class SignedAllowance:
    body: bytes
    signatures: tuple[tuple[str, bytes], ...]

    def to_bytes(self) -> bytes:
        return signed_to_bytes(self.body, self.signatures)

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedAllowance:
        body, sigs = signed_from_bytes(data, "allowance")
        return cls(body, sigs)


def build_manifest(
    image_path: str,
    version: str,
    hw: Iterable[str],
    *,
    security_version: int,
    expires_ms: int,
    issued_ms: int,
    min_version: str | None = None,
    deltas: Iterable[DeltaInfo] = (),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    module: str = DEFAULT_MODULE,
) -> Manifest:
    """The manifest of the image at ``image_path``, hashing it in one streaming pass."""
    size, sha, chunks = hash_image(image_path, chunk_size)
    manifest = Manifest(
        version=version,
        hw=tuple(hw),
        size=size,
        sha256=sha,
        chunk_size=chunk_size,
        chunks=tuple(chunks),
        security_version=security_version,
        min_version=min_version,
        expires_ms=expires_ms,
        deltas=tuple(deltas),
        issued_ms=issued_ms,
        module=module,
    )
    return _parse(manifest.to_dict())  # the same checks a device makes, before anyone signs it


def sign_manifest(manifest: Manifest | SignedManifest, private_key: Ed25519PrivateKey) -> SignedManifest:
    """Sign a manifest, or add a signature to a signed one (replacing this key's earlier one)."""
    if isinstance(manifest, SignedManifest):
        body, sigs = manifest.body, manifest.signatures
        manifest.unverified()  # never add a signature to a body that does not parse
    else:
        body, sigs = manifest.to_bytes(), ()
    kid = key_id(private_key.public_key())
    sig = private_key.sign(DOMAIN + body)
    return SignedManifest(body, tuple((k, s) for k, s in sigs if k != kid) + ((kid, sig),))


def sign_allowance(allowance: Allowance, private_key: Ed25519PrivateKey) -> SignedAllowance:
    body = allowance.to_bytes()
    return SignedAllowance(body, ((key_id(private_key.public_key()), private_key.sign(ALLOWANCE_DOMAIN + body)),))


def verify_manifest(
    signed: SignedManifest | bytes,
    trusted_public_keys: Mapping[str, Ed25519PublicKey],
    *,
    hw: str,
    now_ms: int,
    security_floor: int,
    current_version: str | None = None,
    device_id: str | None = None,
    allowance: SignedAllowance | None = None,
    threshold: int = 1,
) -> Manifest:
    """The manifest, if this device may use it; otherwise ``ManifestError`` naming the version and the cause.

    ``threshold`` distinct trusted keys must have signed. ``current_version``
    (the installed firmware) enables the minimum-version and downgrade checks; a
    downgrade passes only with an ``allowance`` for this ``device_id`` or ``hw``.
    """
    if isinstance(signed, (bytes, bytearray)):
        signed = SignedManifest.from_bytes(bytes(signed))
    claimed = claimed_version(signed.body)
    check_signatures(signed.body, signed.signatures, trusted_public_keys, DOMAIN, threshold, claimed)
    m = _parse(load_body(signed.body, claimed))

    def refuse(reason: str, cause: str) -> ManifestError:
        return ManifestError(m.version, reason, cause)

    if now_ms >= m.expires_ms:
        raise refuse("expired", f"expired at {m.expires_ms} ms (now {now_ms} ms)")
    if hw not in m.hw:
        raise refuse("wrong-hardware", f"not for hardware {hw!r} (built for {', '.join(m.hw)})")
    if m.security_version < security_floor:
        raise refuse(
            "below-floor", f"security version {m.security_version} is below this device's floor {security_floor}"
        )
    if current_version is not None:
        current = _version_or_refuse(current_version, m.version, "installed version")
        if m.min_version is not None and current < Version(m.min_version):
            raise refuse("below-min-version", f"needs version {m.min_version} or later installed first (has {current_version})")
        if Version(m.version) < current:
            why = _allowance_refusal(allowance, trusted_public_keys, m.version, {hw, device_id}, now_ms)
            if why:
                raise refuse("downgrade", f"older than the installed {current_version} and {why}")
    return m


def verify_allowance(
    signed: SignedAllowance, trusted_public_keys: Mapping[str, Ed25519PublicKey], *, now_ms: int
) -> Allowance:
    """The allowance, if signed by a trusted key and not expired; ``ManifestError`` otherwise."""
    claimed = claimed_version(signed.body)
    check_signatures(signed.body, signed.signatures, trusted_public_keys, ALLOWANCE_DOMAIN, 1, claimed)
    d = load_body(signed.body, claimed)
    if (
        not isinstance(d, dict)
        or set(d) != {"kind", "v", "target", "version", "expires_ms"}
        or d["kind"] != ALLOWANCE_KIND
        or d["v"] != FORMAT
        or not _is_name(d["target"])
        or not _is_int(d["expires_ms"])
    ):
        raise ManifestError(claimed, "malformed", "downgrade allowance is malformed")
    _version_or_refuse(d["version"], claimed, "allowance version")
    a = Allowance(d["target"], d["version"], d["expires_ms"])
    if now_ms >= a.expires_ms:
        raise ManifestError(a.version, "expired", f"downgrade allowance expired at {a.expires_ms} ms")
    return a


# --- internals ----------------------------------------------------------------------------------


def _allowance_refusal(
    allowance: SignedAllowance | None,
    trusted: Mapping[str, Ed25519PublicKey],
    version: str,
    targets: set[str | None],
    now_ms: int,
) -> str | None:
    if allowance is None:
        return "no downgrade allowance was given"
    try:
        a = verify_allowance(allowance, trusted, now_ms=now_ms)
    except ManifestError as exc:
        return f"its allowance is not valid ({exc.cause})"
    if Version(a.version) != Version(version):
        return f"the allowance is for version {a.version}"
    if a.target not in targets:
        return f"the allowance is for {a.target!r}"
    return None


def _is_int(v: Any, lo: int = 0, hi: int = 2**63 - 1) -> bool:
    return type(v) is int and lo <= v <= hi


def _is_name(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= MAX_NAME and v.isprintable()


def _is_hex64(v: Any) -> bool:
    return isinstance(v, str) and _HEX64.fullmatch(v) is not None


def _version_or_refuse(text: Any, name: str | None, what: str) -> Version:
    try:
        return Version(text)
    except VersionError as exc:
        raise ManifestError(name, "malformed", f"{what}: {exc}") from exc


_FIELDS = {f.name for f in dataclasses.fields(Manifest)} | {"kind", "v"}
_OPTIONAL = {"module"}


def _parse(d: Any) -> Manifest:
    version = d.get("version") if isinstance(d, dict) else None
    name = version[:MAX_NAME] if isinstance(version, str) else None

    def bad(why: str) -> ManifestError:
        return ManifestError(name, "malformed", why)

    if not isinstance(d, dict):
        raise bad("body is not a JSON object")
    if not _FIELDS - _OPTIONAL <= set(d) <= _FIELDS:
        missing, extra = sorted(_FIELDS - _OPTIONAL - set(d)), sorted(set(d) - _FIELDS)
        raise bad(f"fields differ from format {FORMAT} (missing {missing}, unexpected {extra})")
    if d["kind"] != KIND or d["v"] != FORMAT:
        raise bad(f"is a {d['kind']!r} of format {d['v']!r}, not a {KIND!r} of format {FORMAT}")
    _version_or_refuse(version, name, "version")
    if d["min_version"] is not None:
        _version_or_refuse(d["min_version"], name, "min_version")
    hw = d["hw"]
    if not isinstance(hw, list) or not 0 < len(hw) <= MAX_LIST or not all(_is_name(h) for h in hw):
        raise bad(f"hw must be 1..{MAX_LIST} hardware names")
    for f in ("size", "security_version", "expires_ms", "issued_ms"):
        if not _is_int(d[f]):
            raise bad(f"{f} must be a non-negative integer")
    if not _is_int(d["chunk_size"], 1, MAX_CHUNK_SIZE):
        raise bad(f"chunk_size must be in 1..{MAX_CHUNK_SIZE}")
    if not _is_hex64(d["sha256"]):
        raise bad("sha256 must be 64 lowercase hex digits")
    chunks = d["chunks"]
    if not isinstance(chunks, list) or len(chunks) != chunk_count(d["size"], d["chunk_size"]):
        raise bad(f"chunks must list one hash per {d['chunk_size']}-byte chunk of {d['size']} bytes")
    if not all(_is_hex64(c) for c in chunks):
        raise bad("every chunk hash must be 64 lowercase hex digits")
    deltas = []
    if not isinstance(d["deltas"], list) or len(d["deltas"]) > MAX_LIST:
        raise bad(f"deltas must be a list of at most {MAX_LIST}")
    for x in d["deltas"]:
        if not isinstance(x, dict) or set(x) != {"from_version", "method", "size", "sha256"}:
            raise bad("each delta must have exactly from_version, method, size, sha256")
        _version_or_refuse(x["from_version"], name, "delta from_version")
        if not _is_name(x["method"]) or not _is_int(x["size"]) or not _is_hex64(x["sha256"]):
            raise bad(f"delta from {x['from_version']} has a bad method, size or sha256")
        deltas.append(DeltaInfo(**x))
    module = d.get("module", DEFAULT_MODULE)
    if not _is_name(module) or module == DEFAULT_MODULE and "module" in d:
        raise bad(f"module must be an update module's name other than the default {DEFAULT_MODULE!r} (absent means it)")
    return Manifest(
        version=version,
        hw=tuple(hw),
        size=d["size"],
        sha256=d["sha256"],
        chunk_size=d["chunk_size"],
        chunks=tuple(chunks),
        security_version=d["security_version"],
        min_version=d["min_version"],
        expires_ms=d["expires_ms"],
        deltas=tuple(deltas),
        issued_ms=d["issued_ms"],
        module=module,
    )
