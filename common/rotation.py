"""When a node rotates its CurveZMQ key and certificate: pure calculations on the certificate's validity.

A certificate is due for rotation at ``fraction`` (2/3) of its lifetime, long
before it expires, so a device that was offline through its rotation time still
rotates on return while its certificate is valid. Past ``not_after`` it is too
late: the rule is that an expired certificate is set aside and the device enrolls
again with a claim (a claim token or a preauthorized serial), like a new device.

The checks run on a schedule: apscheduler's ``IntervalTrigger`` computes the next
check time from ``now`` (``get_next_fire_time`` is a pure calendar calculation),
so the agent core stays sans-IO and runs the same under virtual time.

This module is light (``cryptography`` and apscheduler's trigger only): the device agent imports it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from apscheduler.triggers.interval import IntervalTrigger
from cryptography import x509

from common.errors import CertificateError

__all__ = ["RotationSchedule", "certificate_validity"]

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def certificate_validity(pem: bytes) -> tuple[int, int]:
    """(not_before_ms, not_after_ms) of a PEM certificate."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CertificateError("<own certificate>", f"not a PEM certificate ({exc})") from None
    return int(cert.not_valid_before_utc.timestamp() * 1000), int(cert.not_valid_after_utc.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class RotationSchedule:
    not_before_ms: int
    not_after_ms: int
    fraction: float = 2 / 3
    check_every_s: float = 3600.0

    @property
    def due_ms(self) -> int:
        return self.not_before_ms + int((self.not_after_ms - self.not_before_ms) * self.fraction)

    def due(self, now_ms: int) -> bool:
        return now_ms >= self.due_ms

    def expired(self, now_ms: int) -> bool:
        return now_ms >= self.not_after_ms

    def next_check(self, now_s: float) -> float:
        """The next scheduled check after ``now_s`` (seconds since the epoch), never later than the due time."""
        trigger = IntervalTrigger(seconds=self.check_every_s, start_date=EPOCH, timezone=dt.UTC)
        now = dt.datetime.fromtimestamp(now_s, dt.UTC)
        nxt = trigger.get_next_fire_time(None, now + dt.timedelta(microseconds=1))
        at = nxt.timestamp() if nxt is not None else now_s + self.check_every_s
        due = self.due_ms / 1000
        return due if now_s < due < at else at
