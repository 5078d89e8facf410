"""Firmware releases: version order, signed manifests, release keys, chunk checks.

    m = build_manifest("fw.img", "1.10.0", ["gw-x1"], security_version=3, expires_ms=..., issued_ms=...)
    signed = sign_manifest(m, load_release_key("release.key", passphrase))
    m = verify_manifest(signed, trusted_keys, hw="gw-x1", now_ms=now, security_floor=3)
    verify_chunk(m, index, data)

Errors (``common.errors``): ``VersionError``, ``ManifestError`` (with
``reason``), ``ChunkError``, ``ImageError``, all ``FirmwareError``; key files
raise ``KeyFileError``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from common.firmware.chunks import (
        DEFAULT_CHUNK_SIZE,
        chunk_count,
        chunk_range,
        hash_image,
        verify_chunk,
        verify_image,
    )
    from common.firmware.keys import (
        generate_release_key,
        key_id,
        load_public_key,
        load_release_key,
        load_trusted_keys,
        public_key_pem,
        save_release_key,
    )
    from common.firmware.manifest import (
        Allowance,
        DeltaInfo,
        Manifest,
        SignedAllowance,
        SignedManifest,
        build_manifest,
        canonical_json,
        sign_allowance,
        sign_manifest,
        verify_allowance,
        verify_manifest,
    )
    from common.firmware.version import Version, compare_versions, parse_version

# Submodules load on first use: a device agent that only orders versions must not pay for
# cryptography (~6 MB RSS) until a manifest actually arrives.
_HOME = {
    **dict.fromkeys(
        ["DEFAULT_CHUNK_SIZE", "chunk_count", "chunk_range", "hash_image", "verify_chunk", "verify_image"], "chunks"
    ),
    **dict.fromkeys(
        [
            "generate_release_key",
            "key_id",
            "load_public_key",
            "load_release_key",
            "load_trusted_keys",
            "public_key_pem",
            "save_release_key",
        ],
        "keys",
    ),
    **dict.fromkeys(
        [
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
        ],
        "manifest",
    ),
    **dict.fromkeys(["Version", "compare_versions", "parse_version"], "version"),
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "Allowance",
    "DeltaInfo",
    "Manifest",
    "SignedAllowance",
    "SignedManifest",
    "Version",
    "build_manifest",
    "canonical_json",
    "chunk_count",
    "chunk_range",
    "compare_versions",
    "generate_release_key",
    "hash_image",
    "key_id",
    "load_public_key",
    "load_release_key",
    "load_trusted_keys",
    "parse_version",
    "public_key_pem",
    "save_release_key",
    "sign_allowance",
    "sign_manifest",
    "verify_allowance",
    "verify_chunk",
    "verify_image",
    "verify_manifest",
]
