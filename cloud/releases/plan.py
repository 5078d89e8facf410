"""Firmware releases, the pure part: settings, a checked request, delta bases, the signature judged, views.

Plan, then execute: ``ReleaseRequest.parse`` checks the parameters before a byte is
uploaded, ``plan_bases`` picks the delta bases and ``check_signature`` judges a posted
signature; all three are pure. ``release_view`` is a release as the API shows it. The
workflow that moves bytes and calls the store is ``cloud.releases.service``.

Refusals are ``ReleaseError`` naming the version, with a ``reason`` code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common.delta import DeltaResult
from common.delta.engine import WORTH_RATIO
from common.errors import ConfigError, KeyFileError, ManifestError, ReleaseError, VersionError
from common.firmware.chunks import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE
from common.firmware.keys import load_trusted_keys
from common.firmware.manifest import DEFAULT_MODULE, MAX_NAME, SignedManifest, verify_manifest
from common.firmware.version import Version

__all__ = [
    "DeltaOutcome",
    "ReleaseRequest",
    "ReleaseSettings",
    "check_signature",
    "load_release_keys",
    "plan_bases",
    "release_view",
    "version_or_none",
]

DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class ReleaseSettings:
    """How the cloud makes releases. ``delta_bases`` is K: deltas come from the K newest older releases."""

    delta_bases: int = 3
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_image_bytes: int = 16 << 30
    default_expires_s: int = 90 * DAY_S
    max_expires_s: int = 10 * 366 * DAY_S
    delta_workers: int = 1  # processes computing deltas at once (each may run 2 candidates: see make_delta)
    delta_time_budget_s: float = 110.0  # per delta
    delta_memory_budget_bytes: int = 2 << 30  # per delta
    delta_isolate: bool = True  # each candidate in its own killable child (False: faster, for tests)

    def __post_init__(self) -> None:
        if not 0 <= self.delta_bases <= 16:
            raise ConfigError(f"release_delta_bases {self.delta_bases} is not in 0..16")
        if not 0 < self.chunk_size <= MAX_CHUNK_SIZE:
            raise ConfigError(f"release chunk_size {self.chunk_size} is not in 1..{MAX_CHUNK_SIZE}")
        if self.delta_workers < 1:
            raise ConfigError(f"release delta_workers {self.delta_workers} must be at least 1")


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    """The parameters of a new release, checked."""

    version: str
    hw: tuple[str, ...]
    min_version: str | None
    security_version: int
    expires_s: int
    module: str = DEFAULT_MODULE  # the update module that installs the image (the manifest's ``module``)

    @classmethod
    def parse(
        cls,
        version: str,
        hw: Iterable[str],
        *,
        min_version: str | None = None,
        security_version: int = 0,
        expires_s: int | None = None,
        settings: ReleaseSettings = ReleaseSettings(),
        module: str = DEFAULT_MODULE,
    ) -> ReleaseRequest:
        """Check everything a manifest will need before any upload; ``ReleaseError`` (``invalid``) names the field.

        ``hw`` items may each hold several comma-separated models.
        """

        def invalid(cause: str) -> ReleaseError:
            return ReleaseError(version[:MAX_NAME] if isinstance(version, str) else None, "invalid", cause)

        for what, text in (("version", version), ("min_version", min_version)):
            if text is not None:
                try:
                    Version(text)
                except VersionError as exc:
                    raise invalid(f"{what}: {exc}") from exc
        models: list[str] = []
        for item in hw:
            for name in (part.strip() for part in item.split(",")):
                if not name:
                    continue
                if len(name) > MAX_NAME or not name.isprintable():
                    raise invalid(f"hardware model {name[:MAX_NAME]!r} must be 1..{MAX_NAME} printable characters")
                if name not in models:
                    models.append(name)
        if not models:
            raise invalid("name at least one hardware model (hw)")
        if type(security_version) is not int or not 0 <= security_version < 2**63:
            raise invalid(f"security_version {security_version!r} must be a non-negative integer")
        expires = settings.default_expires_s if expires_s is None else expires_s
        if type(expires) is not int or not 0 < expires <= settings.max_expires_s:
            raise invalid(f"expires_s {expires!r} must be 1..{settings.max_expires_s} seconds")
        if not isinstance(module, str) or not 0 < len(module) <= MAX_NAME or not module.isprintable():
            raise invalid(f"module {str(module)[:MAX_NAME]!r} must be 1..{MAX_NAME} printable characters")
        return cls(version, tuple(models), min_version, security_version, expires, module)


@dataclass(frozen=True, slots=True)
class DeltaOutcome:
    """What came of one delta: ``offered`` (in the manifest), ``not-worth-it`` or ``failed``."""

    from_version: str
    status: str
    method: str | None = None
    size: int | None = None
    sha256: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def offered(cls, from_version: str, result: DeltaResult, sha256: str, size: int) -> DeltaOutcome:
        note = f"{result.method}, {result.ratio:.1%} of the zstd-compressed full image"
        return cls(from_version, "offered", result.method, size, sha256, _numbers(result, note))

    @classmethod
    def not_worth_it(cls, from_version: str, result: DeltaResult | None, cause: str) -> DeltaOutcome:
        if result is None:
            return cls(from_version, "not-worth-it", detail={"note": cause})
        note = f"offered only under {WORTH_RATIO:.0%} of the zstd-compressed full image ({result.full_size} bytes)"
        return cls(from_version, "not-worth-it", result.method, result.patch_size, None, _numbers(result, note))


def _numbers(result: DeltaResult, note: str) -> dict[str, Any]:
    return {
        "note": note,
        "full_size": result.full_size,
        "ratio": round(result.ratio, 4),
        "seconds": round(result.seconds, 3),
    }


def load_release_keys(paths: Iterable[str]) -> dict[str, Ed25519PublicKey]:
    """``{key id: public key}`` of the PEM files trusted to sign manifests; ``ConfigError`` names a bad one."""
    try:
        return load_trusted_keys(list(paths))
    except KeyFileError as exc:
        raise ConfigError(f"release_keys: {exc}") from exc


def plan_bases(
    version: str, hw: Sequence[str], published: Iterable[Mapping[str, Any]], k: int
) -> list[Mapping[str, Any]]:
    """The releases to make deltas from: published, sharing a hardware model with ``hw``, older than
    ``version``; the ``k`` newest of them by version order, newest first. No I/O."""
    new = Version(version)
    models = set(hw)
    older = [r for r in published if models & set(r["hw"]) and version_or_none(r["version"]) is not None]
    older = [r for r in older if Version(r["version"]) < new]
    older.sort(key=lambda r: Version(r["version"]), reverse=True)
    return older[:k]


def check_signature(
    manifest_body: bytes,
    signed: bytes,
    trusted_keys: Mapping[str, Ed25519PublicKey],
    *,
    now_ms: int,
    version: str,
) -> SignedManifest:
    """The signed manifest, if its body is exactly ``manifest_body`` and a trusted key signed it
    (and it has not expired); ``ReleaseError`` with the reason otherwise. No I/O."""
    if not trusted_keys:
        raise ReleaseError(
            version,
            "no-trusted-keys",
            "the cloud trusts no release keys: list their public key files in the cloud config "
            '(release_keys = ["release.key.pub"]) or pass --release-key, then restart it',
        )
    try:
        parsed = SignedManifest.from_bytes(signed)
    except ManifestError as exc:
        raise ReleaseError(version, exc.reason, exc.cause) from exc
    if parsed.body != manifest_body:
        raise ReleaseError(
            version,
            "body-differs",
            f"the signed body is not the manifest the cloud built for this release "
            f"({_differences(manifest_body, parsed.body)}); sign the manifest the cloud returned, unchanged",
        )
    try:
        hw = json.loads(manifest_body)["hw"][0]
        verify_manifest(parsed, trusted_keys, hw=hw, now_ms=now_ms, security_floor=0)
    except ManifestError as exc:
        raise ReleaseError(version, exc.reason, exc.cause) from exc
    return parsed


def _differences(ours: bytes, theirs: bytes) -> str:
    try:
        a, b = json.loads(ours), json.loads(theirs)
    except ValueError:
        return "the signed body is not JSON"
    if not isinstance(b, dict):
        return "the signed body is not a JSON object"
    fields = sorted(k for k in set(a) | set(b) if a.get(k, ...) != b.get(k, ...))
    return f"fields that differ: {', '.join(fields)}" if fields else "same fields, different bytes (not canonical JSON)"


def version_or_none(text: Any) -> Version | None:
    try:
        return Version(text)
    except VersionError:
        return None


def release_view(row: Mapping[str, Any], *, full: bool = False) -> dict[str, Any]:
    """A release as the API shows it; ``full`` adds the manifest, its exact text and the signed manifest."""
    view: dict[str, Any] = {
        "version": row["version"],
        "hw": list(row["hw"]),
        "state": row["state"],
        "size": row["size"],
        "sha256": row["image_sha256"],
        "security_version": row["security_version"],
        "created_ms": row["created_ms"],
        "published_ms": row["published_ms"],
        "deltas": [
            {k: d[k] for k in ("from_version", "status", "method", "size", "sha256", "detail")} for d in row["deltas"]
        ],
    }
    if full:
        signed = row["signed_manifest"]
        view["signed_by"] = (
            [k for k, _ in SignedManifest.from_bytes(signed.encode("ascii")).signatures] if signed else []
        )
        view["manifest"] = json.loads(row["manifest_body"])
        view["manifest_body"] = row["manifest_body"]
        view["signed_manifest"] = signed
    return view
