"""Uplink shaping for the gateway's drain, sans-IO: a byte-rate token bucket and cron link windows.

Nothing here reads a clock or sleeps. The caller passes ``now`` (monotonic seconds for
the bucket, a timezone-aware ``datetime`` for the windows) and does the waiting.

``TokenBucket`` caps the mean byte rate at ``rate_bytes_per_s`` with bursts of up to
``burst_bytes``. A send larger than the burst must still pass one day (a single
compressed batch can be bigger than the burst on a slow satellite link), so a request
is allowed once the bucket holds ``min(n, burst)`` tokens, and the balance may then go
negative: the debt is paid back at ``rate`` before anything else passes. Over any
interval of ``T`` seconds at most ``burst + rate * T`` bytes pass, plus the overshoot of
the one request that took the bucket negative (``n - burst`` for a request of ``n > burst``).

``LinkWindows`` says when a metered link may be used: each window is a crontab
expression (minute hour day-of-month month day-of-week, APScheduler 3.x semantics:
day-of-week 0 is *Monday*) in one IANA time zone, and a duration in elapsed seconds.
A window is the half-open interval ``[fire, fire + duration)``; windows that overlap
or touch merge into one open period. No windows configured means always open.

Daylight saving, as APScheduler 3.x computes fire times (tested in
``tests/common/test_shaping.py``):

- spring forward: a wall time that does not exist that day (02:30 in Berlin on the
  last Sunday of March) still fires once, at the instant it would have been before the
  clocks moved (02:30 CET = 01:30 UTC = 03:30 CEST), so a daily window opens an hour
  later on the wall clock that day but is never skipped;
- fall back: a wall time that happens twice (02:30 in Berlin, 01:30 in New York) fires
  twice, once in each fold, so a daily one-hour window at that time is open for two
  hours that day (two windows that touch merge);
- durations are elapsed time: a two-hour window spanning the change is open for two
  real hours whatever the wall clock does.

APScheduler's own search skips a spring-forward fire when asked for the next fire
from an instant inside the gap's hour (the wall clock there is already past the
nonexistent time). Here every search near a transition starts before it and walks
forward, so the answer for an instant does not depend on where the search began.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from common.errors import ConfigError

__all__ = ["LinkWindows", "TokenBucket"]

_DST_MARGIN = timedelta(hours=3)  # longer than any DST gap in use (1 h; 30 min on Lord Howe)
_SLACK_BYTES = 0.5  # float rounding must never refuse a take() made exactly wait_time() later
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_TICK = timedelta(microseconds=1)
_MAX_CHAIN = 1000  # windows merged by closes_at() before it stops looking further ahead
_FAR = datetime.max.replace(tzinfo=UTC)  # no window ever fires again: closed for good


class TokenBucket:
    """A byte-rate cap: ``take(n, now)`` says whether ``n`` bytes may be sent at ``now``.

    The bucket starts full. ``now`` is any monotonic clock in seconds; the first call
    (or ``now=`` here) fixes its origin. A clock that goes backwards adds no tokens.
    ``take()`` tolerates half a byte of float rounding, so a caller that waits exactly
    ``wait_time(n, now)`` seconds is never refused.
    """

    def __init__(self, rate_bytes_per_s: float, burst_bytes: float, *, now: float | None = None) -> None:
        if not (rate_bytes_per_s > 0 and math.isfinite(rate_bytes_per_s)):
            raise ConfigError(f"token bucket rate must be a positive number of bytes/s, got {rate_bytes_per_s!r}")
        if not (burst_bytes >= 1 and math.isfinite(burst_bytes)):
            raise ConfigError(f"token bucket burst must be at least 1 byte, got {burst_bytes!r}")
        self.rate = float(rate_bytes_per_s)
        self.burst = float(burst_bytes)
        self._tokens = self.burst
        self._last = now

    def _refill(self, now: float) -> None:
        if self._last is None:
            self._last = now
        elif now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now

    def tokens(self, now: float) -> float:
        """The balance at ``now``; negative while a large request is being paid back."""
        self._refill(now)
        return self._tokens

    def take(self, n: int, now: float) -> bool:
        """Take ``n`` bytes if the bucket holds ``min(n, burst)`` tokens; the balance may go negative."""
        if n < 0:
            raise ValueError(f"cannot take a negative number of bytes ({n!r})")
        self._refill(now)
        if self._tokens + _SLACK_BYTES >= min(n, self.burst):
            self._tokens -= n
            return True
        return False

    def wait_time(self, n: int, now: float) -> float:
        """Seconds from ``now`` until ``take(n)`` would succeed (0.0 if it would now)."""
        if n < 0:
            raise ValueError(f"cannot take a negative number of bytes ({n!r})")
        self._refill(now)
        return max(0.0, (min(n, self.burst) - self._tokens) / self.rate)


class _Window:
    def __init__(self, expr: str, duration_s: float, tz: tzinfo) -> None:
        if not (duration_s > 0 and math.isfinite(duration_s)):
            raise ConfigError(f"link window {expr!r}: duration must be a positive number of seconds, got {duration_s!r}")
        from apscheduler.triggers.cron import CronTrigger  # only with link windows: ~2.5 MB a device need not load

        try:
            self.trigger = CronTrigger.from_crontab(expr, timezone=tz)
        except ValueError as exc:
            raise ConfigError(f"link window {expr!r}: {exc}") from exc
        self.expr = expr
        self.tz = tz
        self.duration = timedelta(seconds=duration_s)
        if self.trigger.get_next_fire_time(None, _EPOCH.astimezone(tz)) is None:
            raise ConfigError(f"link window {expr!r}: the expression never fires")

    def first_fire(self, at: datetime) -> datetime | None:
        """The first fire at or after ``at`` (UTC in, UTC out), whatever DST did just before."""
        start = at
        probe = at - _DST_MARGIN
        if self.tz.utcoffset(probe.astimezone(self.tz)) != self.tz.utcoffset(at.astimezone(self.tz)):
            start = probe  # a transition just before ``at``: search from before it
        fire = self.trigger.get_next_fire_time(None, start.astimezone(self.tz))
        while fire is not None and fire.astimezone(UTC) < at:
            fire = self.trigger.get_next_fire_time(fire, fire)
        return None if fire is None else fire.astimezone(UTC)

    def open_end(self, now: datetime) -> datetime | None:
        """The end of the latest window of this cron that is open at ``now``, or None."""
        fire = self.first_fire(now - self.duration + _TICK)
        if fire is None or fire > now:
            return None
        while True:  # later fires that are also open end later
            nxt = self.trigger.get_next_fire_time(fire.astimezone(self.tz), fire.astimezone(self.tz))
            if nxt is None or nxt.astimezone(UTC) > now:
                return fire + self.duration
            fire = nxt.astimezone(UTC)


class LinkWindows:
    """When a metered link may be used: ``[(crontab_expr, duration_s), ...]`` in ``timezone``.

    Every ``now`` must be timezone-aware (any zone). Returned datetimes are in UTC: an
    aware datetime in the repeated hour of a fall-back day never compares equal to one
    in another zone (PEP 495), so returning local times would make ``==`` lie.
    """

    def __init__(self, windows: Iterable[tuple[str, float]], timezone: str | tzinfo) -> None:
        if isinstance(timezone, str):
            try:
                timezone = ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ConfigError(f"link windows: unknown time zone {timezone!r}") from exc
        self.tz: tzinfo = timezone
        self.windows = [_Window(expr, duration, timezone) for expr, duration in windows]
        # is_open's answer is constant over [since, until): open until the window closes, closed until the
        # next one opens; a drain asks on every commit, and each uncached answer is a cron search
        self._known: tuple[datetime, datetime, bool] | None = None

    def _utc(self, now: datetime) -> datetime:
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"link windows need a timezone-aware datetime, got naive {now!r}")
        return now.astimezone(UTC)

    def _end(self, now_utc: datetime) -> datetime | None:
        ends = [end for w in self.windows if (end := w.open_end(now_utc)) is not None]
        return max(ends, default=None)

    def is_open(self, now: datetime) -> bool:
        """Whether the link may be used at ``now``."""
        if not self.windows:
            return True
        now_utc = self._utc(now)
        known = self._known
        if known is not None and known[0] <= now_utc < known[1]:
            return known[2]
        end = self._end(now_utc)
        if end is not None:
            self._known = (now_utc, end, True)  # the window open now stays open until it ends
            return True
        # closed until the first fire after now: a window open before that would be open now
        fires = [f for w in self.windows if (f := w.first_fire(now_utc)) is not None]
        self._known = (now_utc, min(fires, default=_FAR), False)
        return False

    def next_open(self, now: datetime) -> datetime | None:
        """``now`` if open, else when the next window opens (None only if no window ever fires again)."""
        now_utc = self._utc(now)
        if not self.windows or self._end(now_utc) is not None:
            return now_utc
        fires = [f for w in self.windows if (f := w.first_fire(now_utc)) is not None]
        return min(fires, default=None)

    def closes_at(self, now: datetime) -> datetime | None:
        """The end of the open period containing ``now``: the link is open in ``[now, closes_at)``.

        ``now`` itself when closed; ``None`` when no windows are configured (never closes).
        Windows that overlap or touch merge; after 1000 merges the search stops and
        returns the point reached, where the link is still open (ask again then).
        """
        now_utc = self._utc(now)
        if not self.windows:
            return None
        end = self._end(now_utc)
        if end is None:
            return now_utc
        for _ in range(_MAX_CHAIN):
            later = self._end(end)
            if later is None or later <= end:
                break
            end = later
        return end
