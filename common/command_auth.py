"""Commands the cloud signs and devices verify: a gateway relays them but can neither forge nor replay them.

The cloud signs each command as a ``"command"`` envelope (``common.signed``)
addressed to its device, with the command's sequence as the envelope's ``seq``
and its expiry as the envelope's, over the body ``command_body(name, args,
expires_ms)``. The device checks (``CommandVerifier.problem``): the signature
by a trusted cloud key, the kind, that it is addressed to this device, that it
has not expired, that its ``seq`` is the command's number, and that the body is
exactly the command it came with. Replays are refused by number: a device runs
each command number once and persists the highest it ran (``CommandLog``), so
an old signed command sent again, under its own number or a new one, never runs.

This module is light on purpose (``cryptography`` only): the device agent imports it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common import keyfiles
from common.errors import TrustError
from common.signed import EnvelopeVerifier, key_id_for, sign_envelope

__all__ = ["KIND", "CommandVerifier", "command_body", "load_public_key", "sign_command"]

KIND = "command"


def command_body(name: str, args: Mapping[str, str], expires_ms: int) -> dict[str, Any]:
    return {"name": name, "args": dict(args), "expires_ms": expires_ms}


def sign_command(
    device_id: str, seq: int, name: str, args: Mapping[str, str], *, issued_ms: int, expires_ms: int,
    key: Ed25519PrivateKey,
) -> bytes:
    """The envelope for command ``seq`` of ``device_id``; deterministic, so a resend is the same bytes."""
    return sign_envelope(
        KIND, command_body(name, args, expires_ms), seq=seq, issued_ms=min(issued_ms, expires_ms - 1),
        expires_ms=expires_ms, audience=device_id, key=key, key_id=key_id_for(key.public_key()),
    )


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """A cloud signing key's public half (PEM), e.g. the cloud's ``signing.pub``."""
    return keyfiles.load_public_key(path, what="cloud signing key")


class CommandVerifier:
    """Checks a device's commands against the cloud's signing keys; ``problem`` is None for a good one."""

    def __init__(self, device_id: str, keys: list[Ed25519PublicKey]) -> None:
        self.device_id = device_id
        self._verifier = EnvelopeVerifier({key_id_for(k): k for k in keys})

    def problem(self, seq: int, name: str, args: Mapping[str, str], expires_ms: int, envelope: bytes,
                now_ms: int) -> str | None:
        if not envelope:
            return f"command {seq} ({name!r}) is not signed by the cloud"
        try:
            env = self._verifier.check(envelope, kind=KIND, audience=self.device_id, now_ms=now_ms)
        except TrustError as exc:
            return f"command {seq} ({name!r}): {exc}"
        if env.seq != seq:
            return f"command {seq} ({name!r}) carries the signature of command {env.seq} (replayed under a new number)"
        if env.body != command_body(name, args, expires_ms):
            return f"command {seq} ({name!r}) differs from what the cloud signed (altered on the way)"
        return None
