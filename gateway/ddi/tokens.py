"""Who a DDI request is from, sans-IO: TargetTokens (one per device) and an optional GatewayToken.

The cloud issues each DDI device a TargetToken (``edgefleet devices ddi-token``), keeps only its SHA-256,
and sends the gateway of the device's site the table of (device, token hash, hardware)
(``DdiCredentials``, a new version on every issue or revocation); the gateway writes it to
``DATA/ddi_tokens.json`` before it takes effect and loads it at start, so devices are checked the same with
the uplink down. A token is 32 random bytes, so one SHA-256 is a fit hash (no password stretching
is needed, and a poll costs microseconds).

``authenticate`` decides, in order: the header names a scheme we take (``TargetToken``, or
``GatewayToken`` when the site has one); the token is known; the device it proves is the
``controllerId`` in the URL (a token never speaks for another device); the device is not revoked.
The answer is ``(device, "")`` or ``(None, reason)``; every refusal is a 401 with one generic text,
the reason goes to the gateway's counters and the cloud's audit log (``gateway.ddi.core``).

    creds = DdiTokens.from_message(msg)   # or DdiTokens.from_json(text)
    device, why = creds.authenticate("TargetToken abc...", "ddi-1", revoked=frozenset())
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from common.protocol import DdiCredentials

__all__ = ["DdiTokens", "token_hash"]

MAX_HEADER = 512  # an Authorization header longer than this is refused unread


def token_hash(token: str) -> str:
    """The SHA-256 (hex) a token is stored and compared as."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(slots=True)
class DdiTokens:
    """The site's DDI devices: device -> (token hash, hardware model); the table's version."""

    site: str = ""
    version: int = 0
    devices: dict[str, tuple[str, str]] = field(default_factory=dict)
    gateway_token_hash: str = ""  # the site's GatewayToken (optional, --ddi-gateway-token-file); "" none
    _by_hash: dict[str, str] = field(default_factory=dict)  # token hash -> device

    def __post_init__(self) -> None:
        self._by_hash = {h: d for d, (h, _) in self.devices.items()}

    @classmethod
    def from_message(cls, msg: DdiCredentials, gateway_token_hash: str = "") -> DdiTokens:
        rows = zip(msg.devices, msg.token_hashes, msg.hw, strict=False)
        return cls(msg.site, msg.version, {d: (h, hw) for d, h, hw in rows}, gateway_token_hash)

    def to_json(self) -> bytes:
        return json.dumps({"site": self.site, "version": self.version,
                           "devices": {d: list(v) for d, v in sorted(self.devices.items())}}).encode()

    @classmethod
    def from_json(cls, data: bytes | str, gateway_token_hash: str = "") -> DdiTokens:
        d: Any = json.loads(data)
        return cls(str(d["site"]), int(d["version"]), {str(k): (str(v[0]), str(v[1])) for k, v in d["devices"].items()},
                   gateway_token_hash)

    def newer(self, msg: DdiCredentials) -> bool:
        """Whether ``msg`` replaces this table (a higher version; an older one arriving late is ignored)."""
        return msg.version > self.version

    def hw_of(self, device_id: str) -> str:
        return self.devices.get(device_id, ("", ""))[1]

    def authenticate(self, header: str, controller_id: str, *, revoked: frozenset[str] | set[str]) -> tuple[str | None, str]:
        """``(device, "")`` if ``header`` proves ``controller_id``; else ``(None, reason)``."""
        if not header:
            return None, "no Authorization header"
        if len(header) > MAX_HEADER:
            return None, "Authorization header too long"
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if not token:
            return None, f"no token after {scheme[:32]!r}"
        digest = token_hash(token)
        if scheme == "TargetToken":
            device = self._by_hash.get(digest)
            if device is None:
                return None, "unknown TargetToken"
            if not hmac.compare_digest(device.encode(), controller_id.encode()):
                return None, f"the TargetToken is device {device!r}'s, not {controller_id[:64]!r}'s"
        elif scheme == "GatewayToken":
            if not self.gateway_token_hash or not hmac.compare_digest(digest, self.gateway_token_hash):
                return None, "unknown GatewayToken"
            if controller_id not in self.devices:
                return None, f"{controller_id[:64]!r} is not a DDI device of this site (issue it a token first)"
            device = controller_id
        else:
            return None, f"unsupported authorization scheme {scheme[:32]!r} (TargetToken or GatewayToken)"
        if device in revoked:
            return None, f"device {device!r} is revoked"
        return device, ""
