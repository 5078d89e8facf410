"""Who may complete a CURVE handshake with the gateway (the ZAP policies), given the revocation list in force.

``DeviceAdmission`` (the device socket): keys in ``allowed_devices`` whose name
(the device id its certificate names) is not revoked. ``OpenEnrollment`` (the
enrollment socket): any key, except a revoked device's. Decisions are counted,
in the style of ``common.keys.Allowlist``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from common.keys import Allowlist

__all__ = ["DeviceAdmission", "OpenEnrollment"]


class DeviceAdmission:
    def __init__(self, allow: Allowlist, revoked: Callable[[], Collection[str]]) -> None:
        self.allow, self._revoked = allow, revoked
        self.refused_revoked = 0

    def decide(self, key: bytes) -> tuple[bool, str]:
        ok, why = self.allow.decide(key)
        if not ok:
            return ok, why
        name = self.allow.keys().get(key, "")
        if name and name in self._revoked():
            self.refused_revoked += 1
            return False, f"device {name!r} is revoked"
        return True, why

    def callback(self, domain: str, key: bytes) -> bool:
        return self.decide(key)[0]

    def revoked_keys(self) -> set[bytes]:
        revoked = self._revoked()
        return {k for k, name in self.allow.keys().items() if name and name in revoked}


class OpenEnrollment:
    """ZAP policy of the enrollment socket: any CurveZMQ key, except those of revoked devices."""

    def __init__(self, revoked_keys: Callable[[], set[bytes]]) -> None:
        self._revoked_keys = revoked_keys
        self.refused = 0

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self._revoked_keys():
            self.refused += 1
            return False
        return True
