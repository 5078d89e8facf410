"""The signed, versioned revocation list, and the gateway's cache of it that holds offline.

The cloud builds a ``RevocationList`` (who is revoked, who is quarantined, and
why) and signs it as a ``"revocations"`` envelope whose ``seq`` is the list's
``version``. A gateway keeps the newest list it has verified in a
``RevocationCache``: each newer list is written to disk (atomically) before it
takes effect, an older one is refused, and after a restart the cache answers
from the file, so a revoked device stays refused through any cloud outage.

The cached list is enforced past its envelope's ``expires_ms``: expiry only
decides whether a list may be *accepted*. ``stale(now_ms)`` says when the cache
is older than the cloud meant it to be, for alerts.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.errors import ProtocolError, ReplayError
from common.fileio import write_atomic
from common.signed import Envelope, EnvelopeVerifier, sign_envelope

__all__ = ["FLEET_AUDIENCE", "KIND", "RevocationCache", "RevocationList", "sign_revocation_list"]

KIND = "revocations"
FLEET_AUDIENCE = "fleet"  # a revoked device must be refused at every site, not only its own


@dataclass(frozen=True, slots=True)
class RevocationList:
    """Version ``version`` of the fleet's revocations: ``{subject_id: reason}`` each."""

    version: int
    revoked: Mapping[str, str] = field(default_factory=dict)
    quarantined: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "revoked", MappingProxyType(dict(self.revoked)))
        object.__setattr__(self, "quarantined", MappingProxyType(dict(self.quarantined)))

    def to_body(self) -> dict[str, Any]:
        return {"version": self.version, "revoked": dict(self.revoked), "quarantined": dict(self.quarantined)}

    @classmethod
    def from_envelope(cls, env: Envelope) -> RevocationList:
        """The list an authenticated envelope holds; its version must be the envelope's seq."""
        body = env.body
        version, revoked, quarantined = body.get("version"), body.get("revoked"), body.get("quarantined")
        if set(body) != {"version", "revoked", "quarantined"} or version != env.seq:
            raise ProtocolError(f"revocation list seq {env.seq}: malformed body (fields {sorted(body)})", kind=KIND)
        for name, entries in (("revoked", revoked), ("quarantined", quarantined)):
            if not isinstance(entries, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in entries.items()
            ):
                raise ProtocolError(f"revocation list {version}: {name} is not a map of id to reason", kind=KIND)
        return cls(version, revoked, quarantined)

    def with_revoked(self, subject_id: str, reason: str) -> RevocationList:
        """The next version, with ``subject_id`` revoked (and no longer merely quarantined)."""
        revoked = {**self.revoked, subject_id: reason}
        return RevocationList(self.version + 1, revoked, _drop(self.quarantined, subject_id))

    def with_quarantined(self, subject_id: str, reason: str) -> RevocationList:
        """The next version, with ``subject_id`` quarantined."""
        return RevocationList(self.version + 1, self.revoked, {**self.quarantined, subject_id: reason})

    def without(self, subject_id: str) -> RevocationList:
        """The next version, with ``subject_id`` neither revoked nor quarantined (reinstated)."""
        return RevocationList(self.version + 1, _drop(self.revoked, subject_id), _drop(self.quarantined, subject_id))


def sign_revocation_list(
    rl: RevocationList,
    *,
    issued_ms: int,
    expires_ms: int,
    key: Ed25519PrivateKey,
    key_id: str,
    audience: str = FLEET_AUDIENCE,
) -> bytes:
    """The cloud's side: ``rl`` as a signed ``"revocations"`` envelope with ``seq = version``."""
    return sign_envelope(
        KIND,
        rl.to_body(),
        seq=rl.version,
        issued_ms=issued_ms,
        expires_ms=expires_ms,
        audience=audience,
        key=key,
        key_id=key_id,
    )


def _drop(entries: Mapping[str, str], subject_id: str) -> dict[str, str]:
    return {k: v for k, v in entries.items() if k != subject_id}


class RevocationCache:
    """The newest verified revocation list, on disk at ``path``; never goes back to an older version.

    Construction does no I/O: call ``load()`` once at start (a missing file is
    an empty list at version 0; a corrupt or unverifiable one raises, since
    starting with no revocations would fail open).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        verifier: EnvelopeVerifier,
        *,
        audience: str | Collection[str] = FLEET_AUDIENCE,
    ) -> None:
        self.path = Path(path)
        self._verifier = verifier
        self._audience = audience
        self._list = RevocationList(0)
        self._expires_ms: int | None = None
        self._key_id: str | None = None

    @property
    def current(self) -> RevocationList:
        return self._list

    @property
    def version(self) -> int:
        return self._list.version

    def load(self) -> RevocationList:
        """Read and re-authenticate the cached list (signature only: it was accepted in time once)."""
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return self._list
        env = self._verifier.authenticate(blob)
        if env.kind != KIND:
            raise ProtocolError(f"{self.path}: holds a {env.kind!r} envelope, not a revocation list", kind=KIND)
        rl = RevocationList.from_envelope(env)
        if rl.version >= self._list.version:
            self._list, self._expires_ms, self._key_id = rl, env.expires_ms, env.key_id
        return self._list

    def update(self, blob: bytes, *, now_ms: int) -> bool:
        """Verify a list from the cloud and make it current if newer: True if it changed anything.

        The same version again is a no-op (the cloud re-sends on reconnect); an
        older version, or the same version with other content, raises ``ReplayError``.
        """
        env = self._verifier.check(blob, kind=KIND, audience=self._audience, now_ms=now_ms)
        rl = RevocationList.from_envelope(env)
        if rl.version == self._list.version and rl.to_body() == self._list.to_body():
            if env.key_id != self._key_id:
                # the same list signed afresh by another key (the cloud's key was replaced): keep the new
                # signature on disk, so the cache still verifies once the old key is no longer trusted
                write_atomic(self.path, blob, 0o600)
                self._key_id = env.key_id
            return False
        if rl.version <= self._list.version:
            cause = (
                f"version {rl.version} is older than the cached version {self._list.version}"
                if rl.version < self._list.version
                else f"version {rl.version} is the cached version but with other content"
            )
            raise ReplayError(
                cause,
                kind=KIND,
                audience=env.audience,
                seq=env.seq,
            )
        write_atomic(self.path, blob, 0o600)  # durable before it takes effect
        self._list, self._expires_ms, self._key_id = rl, env.expires_ms, env.key_id
        return True

    def is_revoked(self, subject_id: str) -> bool:
        return subject_id in self._list.revoked

    def is_quarantined(self, subject_id: str) -> bool:
        return subject_id in self._list.quarantined and subject_id not in self._list.revoked

    def reason(self, subject_id: str) -> str | None:
        return self._list.revoked.get(subject_id, self._list.quarantined.get(subject_id))

    def stale(self, now_ms: int) -> bool:
        """Whether the cached list is past the expiry the cloud gave it (enforced all the same)."""
        return self._expires_ms is not None and now_ms >= self._expires_ms
