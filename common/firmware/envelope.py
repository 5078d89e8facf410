"""The signed envelope of manifests and allowances: canonical JSON bodies, Ed25519 signatures by key id.

    wire = signed_to_bytes(body, [(key_id, signature)])
    body, sigs = signed_from_bytes(wire, "manifest")       # ManifestError("malformed") if not well formed
    check_signatures(body, sigs, trusted, DOMAIN, 1, claimed_version(body))

Each signature covers ``domain + body``, so a signature means nothing in another context (a manifest's
is not an allowance's). Errors are ``ManifestError`` naming the version the body claims (``None`` when it
cannot be read) and carrying a ``reason`` code.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common.errors import ManifestError

__all__ = [
    "MAX_BODY",
    "MAX_NAME",
    "MAX_SIGNATURES",
    "canonical_json",
    "check_signatures",
    "claimed_version",
    "load_body",
    "signed_from_bytes",
    "signed_to_bytes",
]

MAX_BODY = 8 << 20  # bytes of canonical JSON; a 10 GiB image at 1 MiB chunks needs ~0.7 MiB
MAX_SIGNATURES = 16
MAX_NAME = 64


def canonical_json(value: Any) -> bytes:
    """The one byte form of a JSON value: sorted keys, compact separators, ASCII, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def signed_to_bytes(body: bytes, sigs: Iterable[tuple[str, bytes]]) -> bytes:
    return canonical_json(
        {
            "body": base64.b64encode(body).decode(),
            "signatures": [{"key_id": k, "sig": base64.b64encode(s).decode()} for k, s in sigs],
        }
    )


def signed_from_bytes(data: bytes, what: str) -> tuple[bytes, tuple[tuple[str, bytes], ...]]:
    def bad(why: str) -> ManifestError:
        return ManifestError(None, "malformed", f"signed {what} {why}")

    if len(data) > 2 * MAX_BODY:
        raise bad(f"of {len(data)} bytes is over the limit")
    try:
        d = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise bad(f"is not JSON ({exc})") from exc
    if not isinstance(d, dict) or set(d) != {"body", "signatures"} or not isinstance(d["signatures"], list):
        raise bad("must be an object with exactly 'body' and 'signatures'")
    if len(d["signatures"]) > MAX_SIGNATURES:
        raise bad(f"has {len(d['signatures'])} signatures, over {MAX_SIGNATURES}")
    try:
        body = base64.b64decode(d["body"], validate=True)
        sigs = []
        for s in d["signatures"]:
            if not isinstance(s, dict) or set(s) != {"key_id", "sig"} or not isinstance(s["key_id"], str):
                raise bad("has a signature entry without exactly 'key_id' and 'sig'")
            sigs.append((s["key_id"], base64.b64decode(s["sig"], validate=True)))
    except (TypeError, binascii.Error) as exc:
        raise bad(f"has bad base64 ({exc})") from exc
    return body, tuple(sigs)


_CLAIMED = re.compile(rb'"version"\s*:\s*"([A-Za-z0-9._+~-]{1,%d})"' % MAX_NAME)


def claimed_version(body: bytes) -> str | None:
    """The version a body claims, to name it in errors before it is trusted (None if unreadable).

    Found by a bounded pattern in the first 4 KiB, never by parsing: untrusted JSON is parsed only after its
    signature verified (deep nesting would otherwise cost a RecursionError before any check)."""
    found = _CLAIMED.search(body[:4096])
    return found.group(1).decode() if found else None


def check_signatures(
    body: bytes,
    sigs: tuple[tuple[str, bytes], ...],
    trusted: Mapping[str, Ed25519PublicKey],
    domain: bytes,
    threshold: int,
    claimed: str | None,
) -> None:
    if not sigs:
        raise ManifestError(claimed, "unsigned", "has no signature")
    good: set[str] = set()
    bad: list[str] = []
    unknown: list[str] = []
    for kid, sig in sigs:
        key = trusted.get(kid)
        if key is None:
            unknown.append(kid[:MAX_NAME])
            continue
        try:
            key.verify(sig, domain + body)
            good.add(kid)
        except InvalidSignature:
            bad.append(kid)
    if bad:
        raise ManifestError(claimed, "bad-signature", f"signature by key {bad[0]} does not verify (tampered?)")
    if len(good) < threshold:
        if not good:
            raise ManifestError(claimed, "unknown-key", f"signed only by untrusted key(s) {', '.join(unknown)}")
        raise ManifestError(claimed, "unknown-key", f"signed by {len(good)} trusted key(s), {threshold} needed")


def load_body(body: bytes, claimed: str | None) -> Any:
    if len(body) > MAX_BODY:
        raise ManifestError(claimed, "malformed", f"body of {len(body)} bytes is over {MAX_BODY}")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ManifestError(claimed, "malformed", f"body is not JSON ({exc})") from exc
