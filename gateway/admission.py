"""Who may complete a CURVE handshake with the gateway (the ZAP policies), given the revocation list in force.

``DeviceAdmission`` (the device socket): keys in ``allowed_devices`` whose name
(the device id its certificate names) is not revoked, and whose certificate, if
the key was admitted by enrollment or rotation, has not expired
(``CertExpiry``: ``DATA/admitted.json``, key -> not_after). So an old key stays
accepted beside its successor only until its own certificate expires (the
rotation overlap), and a device whose certificate expired must enroll again. ``OpenEnrollment`` (the
enrollment socket): any key, except a revoked device's. Decisions are counted,
in the style of ``common.keys.Allowlist``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection
from pathlib import Path

from common.fileio import write_atomic
from common.keys import Allowlist

__all__ = ["CertExpiry", "DeviceAdmission", "OpenEnrollment"]


class CertExpiry:
    """When each certified key's certificate expires (ms), kept in a small JSON file next to the allowlist."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._map: dict[str, int] = {}

    def load(self) -> CertExpiry:
        if self.path.exists():
            self._map = {str(k): int(v) for k, v in json.loads(self.path.read_text()).items()}
        return self

    def record(self, key: bytes, not_after_ms: int) -> None:
        self._map[key.decode()] = not_after_ms
        write_atomic(self.path, json.dumps(self._map, sort_keys=True).encode(), 0o644)

    def expired(self, key: bytes, now_ms: int) -> bool:
        not_after = self._map.get(key.decode(errors="replace"))
        return not_after is not None and now_ms >= not_after


class DeviceAdmission:
    def __init__(
        self, allow: Allowlist, revoked: Callable[[], Collection[str]], expiry: CertExpiry | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.allow, self._revoked, self.expiry, self._clock_ms = allow, revoked, expiry, clock_ms
        self.refused_revoked = 0
        self.refused_expired = 0

    def decide(self, key: bytes) -> tuple[bool, str]:
        ok, why = self.allow.decide(key)
        if not ok:
            return ok, why
        name = self.allow.keys().get(key, "")
        if name and name in self._revoked():
            self.refused_revoked += 1
            return False, f"device {name!r} is revoked"
        if self.expiry is not None and self.expiry.expired(key, self._clock_ms()):
            self.refused_expired += 1
            return False, f"certificate of {name or key.decode()!r} for this key expired: enroll again"
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
