"""Signed, versioned, expiring envelopes for what the cloud sends down the fleet.

Commands, config, rollout plans and revocation lists travel inside an envelope
the cloud signs with Ed25519. A gateway relays envelopes but holds no signing
key, so it can delay one, but not forge, alter, re-target or replay it.

Wire form (canonical JSON: sorted keys, compact separators, no NaN)::

    {"sig": "<base64url of the Ed25519 signature>",
     "signed": {"v": 1, "kind": ..., "audience": ..., "seq": ..., "issued_ms": ...,
                "expires_ms": ..., "key_id": ..., "body": {...}}}

The signature covers ``DOMAIN + canonical(signed)``: the key id, kind,
audience and times are signed along with the body, and the domain prefix keeps
the signature from meaning anything outside EdgeFleet envelopes.

``EnvelopeVerifier`` checks in three layers, each a method:

- ``authenticate``: well formed, known key, good signature (nothing else: for
  re-reading what this node itself accepted earlier);
- ``check``: also the kind, the audience and the validity window;
- ``verify``: also replay, against the highest ``seq`` accepted per
  ``(audience, kind)``, then records it. Persist ``state()`` before acting on
  the envelope and give it back with ``load_state()`` after a restart.

Errors (``common.errors``): ``SignatureError``, ``MisdirectedError``,
``ExpiredError``, ``ReplayError``, all ``TrustError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from common.errors import ExpiredError, MisdirectedError, ReplayError, SignatureError

__all__ = [
    "DOMAIN",
    "ENVELOPE_VERSION",
    "Envelope",
    "EnvelopeVerifier",
    "canonical_json",
    "key_id_for",
    "sign_envelope",
]

ENVELOPE_VERSION = 1
DOMAIN = b"edgefleet-envelope-v1\x00"
MAX_ENVELOPE = 1 << 20  # bytes; a larger blob is refused before parsing
DEFAULT_SKEW_MS = 5 * 60 * 1000  # how far in the future ``issued_ms`` may be (clock skew)

_FIELDS = {"v", "kind", "audience", "seq", "issued_ms", "expires_ms", "key_id", "body"}


@dataclass(frozen=True, slots=True)
class Envelope:
    """A verified envelope: everything in it was covered by the signature."""

    kind: str
    audience: str
    seq: int
    issued_ms: int
    expires_ms: int
    key_id: str
    body: dict[str, Any]


def canonical_json(value: Any) -> bytes:
    """The one byte form of a JSON value: sorted keys, compact separators, ASCII, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def key_id_for(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a signing key: ``ed25519:`` and 16 hex digits of its SHA-256."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def sign_envelope(
    kind: str,
    body: Mapping[str, Any],
    *,
    seq: int,
    issued_ms: int,
    expires_ms: int,
    audience: str,
    key: Ed25519PrivateKey,
    key_id: str,
) -> bytes:
    """Sign ``body`` as a ``kind`` envelope for ``audience``; the result is the wire bytes."""
    if not kind or not audience or not key_id:
        raise ValueError("an envelope needs a kind, an audience and a key id")
    if not _is_int(seq) or seq < 0:
        raise ValueError(f"envelope seq must be a non-negative int, not {seq!r}")
    if not (_is_int(issued_ms) and _is_int(expires_ms)) or expires_ms <= issued_ms:
        raise ValueError(f"envelope must expire after it is issued ({issued_ms!r} -> {expires_ms!r})")
    body = dict(body)
    if json.loads(canonical_json(body)) != body:
        # tuples, non-string keys and the like would be signed as something else than given
        raise ValueError(f"{kind} envelope body does not round-trip through JSON unchanged")
    signed = {
        "v": ENVELOPE_VERSION,
        "kind": kind,
        "audience": audience,
        "seq": seq,
        "issued_ms": issued_ms,
        "expires_ms": expires_ms,
        "key_id": key_id,
        "body": body,
    }
    sig = key.sign(DOMAIN + canonical_json(signed))
    return canonical_json({"signed": signed, "sig": base64.urlsafe_b64encode(sig).decode()})


class EnvelopeVerifier:
    """Verifies envelopes against ``trusted_keys`` and remembers the highest ``seq`` accepted."""

    def __init__(
        self, trusted_keys: Mapping[str, Ed25519PublicKey], *, max_skew_ms: int = DEFAULT_SKEW_MS
    ) -> None:
        self._keys = dict(trusted_keys)
        self._max_skew_ms = max_skew_ms
        self._high: dict[str, dict[str, int]] = {}

    def authenticate(self, blob: bytes) -> Envelope:
        """Well formed and signed by a trusted key; no kind, audience, time or replay check."""
        signed, sig = _parse(blob)
        env = _envelope(signed)
        where = {"kind": env.kind, "audience": env.audience, "seq": env.seq}
        public = self._keys.get(env.key_id)
        if public is None:
            raise SignatureError(f"unknown signing key {env.key_id!r}", **where)
        try:
            message = DOMAIN + canonical_json(signed)
        except (ValueError, RecursionError) as exc:  # e.g. 1e999 parses to inf, which has no canonical form
            raise SignatureError(f"malformed envelope: {exc}", **where) from None
        try:
            public.verify(sig, message)
        except InvalidSignature:
            raise SignatureError(f"bad signature for key {env.key_id!r}", **where) from None
        return env

    def check(self, blob: bytes, *, kind: str, audience: str | Collection[str], now_ms: int) -> Envelope:
        """``authenticate``, then the kind, the audience (one name or several) and the validity window."""
        env = self.authenticate(blob)
        where = {"kind": env.kind, "audience": env.audience, "seq": env.seq}
        if env.kind != kind:
            raise MisdirectedError(f"expected a {kind!r} envelope", **where)
        accepted = {audience} if isinstance(audience, str) else set(audience)
        if env.audience not in accepted:
            raise MisdirectedError(f"addressed to {env.audience!r}, this is {sorted(accepted)}", **where)
        if now_ms >= env.expires_ms:
            raise ExpiredError(f"expired at {env.expires_ms} ms (now {now_ms} ms)", **where)
        if now_ms < env.issued_ms - self._max_skew_ms:
            raise ExpiredError(f"not valid until {env.issued_ms} ms (now {now_ms} ms)", **where)
        return env

    def verify(self, blob: bytes, *, kind: str, audience: str | Collection[str], now_ms: int) -> Envelope:
        """``check``, then refuse a ``seq`` at or below the highest accepted; record this one."""
        env = self.check(blob, kind=kind, audience=audience, now_ms=now_ms)
        high = self._high.get(env.audience, {}).get(env.kind)
        if high is not None and env.seq <= high:
            raise ReplayError(
                f"seq {env.seq} is not above the highest accepted ({high})",
                kind=env.kind,
                audience=env.audience,
                seq=env.seq,
            )
        self._high.setdefault(env.audience, {})[env.kind] = env.seq
        return env

    def high_water(self, audience: str, kind: str) -> int | None:
        return self._high.get(audience, {}).get(kind)

    def state(self) -> dict[str, dict[str, int]]:
        """The replay marks, ``{audience: {kind: seq}}``: plain JSON, for the caller to persist."""
        return {aud: dict(kinds) for aud, kinds in self._high.items()}

    def load_state(self, state: Mapping[str, Mapping[str, int]]) -> None:
        """Merge persisted marks; a mark never goes down, so loading an old state cannot reopen replays."""
        for aud, kinds in state.items():
            for kind, seq in kinds.items():
                if not (isinstance(aud, str) and isinstance(kind, str) and _is_int(seq)):
                    raise ValueError(f"bad replay state entry {aud!r}/{kind!r}: {seq!r}")
                mine = self._high.setdefault(aud, {})
                mine[kind] = max(seq, mine.get(kind, seq))


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse(blob: bytes) -> tuple[dict[str, Any], bytes]:
    if not isinstance(blob, (bytes, bytearray)):
        raise SignatureError(f"an envelope is bytes, not {type(blob).__name__}")
    if len(blob) > MAX_ENVELOPE:
        raise SignatureError(f"envelope of {len(blob)} bytes exceeds {MAX_ENVELOPE}")
    try:
        outer = json.loads(blob, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise SignatureError(f"malformed envelope: {exc}") from None
    if not isinstance(outer, dict) or set(outer) != {"signed", "sig"}:
        raise SignatureError("malformed envelope: expected exactly 'signed' and 'sig'")
    signed, sig = outer["signed"], outer["sig"]
    if not isinstance(signed, dict) or not isinstance(sig, str) or not sig:
        raise SignatureError("malformed envelope: missing signature")
    try:
        raw = base64.b64decode(sig.encode("ascii"), altchars=b"-_", validate=True)
    except (ValueError, binascii.Error):
        raise SignatureError("malformed envelope: signature is not base64url") from None
    if base64.urlsafe_b64encode(raw).decode() != sig:  # one encoding per signature: no malleable spellings
        raise SignatureError("malformed envelope: signature is not canonical base64url")
    return signed, raw


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _envelope(signed: dict[str, Any]) -> Envelope:
    kind, audience, seq = signed.get("kind"), signed.get("audience"), signed.get("seq")
    where = {
        "kind": kind if isinstance(kind, str) else None,
        "audience": audience if isinstance(audience, str) else None,
        "seq": seq if _is_int(seq) else None,
    }
    if set(signed) != _FIELDS:
        raise SignatureError(f"malformed envelope: fields {sorted(signed)}", **where)
    if signed["v"] != ENVELOPE_VERSION:
        raise SignatureError(f"unsupported envelope version {signed['v']!r}", **where)
    ok = (
        all(isinstance(signed[f], str) and signed[f] for f in ("kind", "audience", "key_id"))
        and all(_is_int(signed[f]) for f in ("seq", "issued_ms", "expires_ms"))
        and isinstance(signed["body"], dict)
    )
    if not ok:
        raise SignatureError("malformed envelope: a field has the wrong type", **where)
    return Envelope(
        kind=kind,
        audience=audience,
        seq=seq,
        issued_ms=signed["issued_ms"],
        expires_ms=signed["expires_ms"],
        key_id=signed["key_id"],
        body=signed["body"],
    )
