"""Plan an install with no I/O: refuse what must not be installed, pick the slot, fix the expected hash.

The manifest has been verified already (signature, expiry: issue 4's
``common.firmware.manifest``); what is checked here is what only the device
knows: its hardware, its security floor (anti-rollback) and its installed
version (an older version needs an explicit allowance from a signed source).
Any object with the ``Manifest`` protocol's attributes will do (issue 4's
``common.firmware.manifest.Manifest`` does); ``LocalManifest`` is a plain one
for tests and simulations. Versions are ordered by ``common.firmware.version``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from common.errors import UpdateRefused, VersionError
from common.firmware.version import Version
from device_agent.update.bootloader import SLOTS, other_slot

__all__ = ["InstallPlan", "LocalManifest", "Manifest", "plan_install"]


class Manifest(Protocol):
    """The fields of a verified firmware manifest the installer reads."""

    @property
    def version(self) -> str: ...
    @property
    def hw(self) -> Sequence[str]: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def security_version(self) -> int: ...
    @property
    def chunk_size(self) -> int: ...


@dataclass(frozen=True, slots=True)
class LocalManifest:
    """A manifest already trusted (tests, simulations, a local image)."""

    version: str
    hw: list[str]
    size: int
    sha256: str
    security_version: int = 0
    chunk_size: int = 64 * 1024
    chunks: list[str] = field(default_factory=list)
    expires_ms: int = 0


@dataclass(frozen=True, slots=True)
class InstallPlan:
    """What executing the install will do: a full image into the inactive slot, expected to hash to ``sha256``."""

    version: str
    target_slot: str
    source_slot: str
    image_path: str
    size: int
    sha256: str
    security_version: int
    block_size: int
    mode: str = "full"  # delta images are not implemented yet


def plan_install(
    manifest: Manifest,
    image_path: str,
    *,
    device_hw: str,
    installed_version: str,
    security_floor: int,
    active_slot: str,
    allow_downgrade: bool = False,
    slots: tuple[str, ...] = SLOTS,
) -> InstallPlan:
    """The plan, or ``UpdateRefused`` naming the version and the reason."""
    v = manifest.version
    if device_hw not in manifest.hw:
        raise UpdateRefused(v, f"built for hardware {', '.join(manifest.hw) or 'none'}, this device is {device_hw!r}")
    if manifest.security_version < security_floor:
        raise UpdateRefused(
            v, f"security version {manifest.security_version} is below this device's floor {security_floor}"
        )
    try:
        older = bool(installed_version) and Version(v) < Version(installed_version)
    except VersionError as exc:
        raise UpdateRefused(v, str(exc)) from exc
    if older and not allow_downgrade:
        raise UpdateRefused(v, f"older than the installed {installed_version!r} and no signed downgrade allowance")
    if not re.fullmatch(r"[0-9a-f]{64}", manifest.sha256):
        raise UpdateRefused(v, f"sha256 {manifest.sha256!r} is not 64 lowercase hex digits")
    if manifest.size <= 0:
        raise UpdateRefused(v, f"image size {manifest.size} is not positive")
    return InstallPlan(
        version=v,
        target_slot=other_slot(active_slot, slots),
        source_slot=active_slot,
        image_path=image_path,
        size=manifest.size,
        sha256=manifest.sha256,
        security_version=manifest.security_version,
        block_size=max(4096, min(manifest.chunk_size or 64 * 1024, 4 << 20)),
    )
