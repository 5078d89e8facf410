"""Maintenance windows per site: when a device may install (it may always download).

A site's windows are crontab expressions with a duration, in the site's IANA time
zone, evaluated by ``common.shaping.LinkWindows`` (APScheduler 3.x ``CronTrigger``
on the instant it is given: no clock is read here). That class's DST rules hold:
a window at a wall time skipped by spring-forward opens at the instant it would
have been; one at a repeated wall time opens in both folds; durations are elapsed
time. Sites with no windows of their own use the ``"*"`` entry; no entry at all
means always open.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from common.errors import ConfigError, RolloutError
from common.install_deadline import window_args
from common.shaping import LinkWindows

__all__ = ["SiteWindows", "install_deadline_args", "to_datetime"]


def to_datetime(now_ms: int) -> datetime:
    return datetime.fromtimestamp(now_ms / 1000, tz=UTC)


def install_deadline_args(windows: Mapping[str, tuple[tuple[str, float], ...]], timezones: Mapping[str, str],
                          site: str) -> dict[str, str]:
    """The signed args of a site-gated install naming ``site``'s windows (``common.install_deadline``);
    none for a site that is always open."""
    entries = windows.get(site) or windows.get("*")
    return window_args(entries, timezones.get(site) or timezones.get("*") or "UTC")


class SiteWindows:
    """``is_open(site, now_ms)``, ``closes_at_ms(site, now_ms)`` and ``next_open_ms(site, now_ms)``."""

    def __init__(self, windows: Mapping[str, tuple[tuple[str, float], ...]], timezones: Mapping[str, str]) -> None:
        self._by_site: dict[str, LinkWindows] = {}
        self._cache: dict[str, tuple[int, int, bool]] = {}  # site -> [from, until) during which is_open holds
        for site, entries in windows.items():
            tz = timezones.get(site) or timezones.get("*") or "UTC"
            try:
                self._by_site[site] = LinkWindows(entries, tz)
            except (ConfigError, ValueError) as exc:
                raise RolloutError(None, "invalid", f"maintenance window for site {site!r}: {exc}") from None

    def _for(self, site: str) -> LinkWindows | None:
        return self._by_site.get(site) or self._by_site.get("*")

    def is_open(self, site: str, now_ms: int) -> bool:
        w = self._for(site)
        if w is None:
            return True
        hit = self._cache.get(site)
        if hit is not None and hit[0] <= now_ms < hit[1]:
            return hit[2]
        at = to_datetime(now_ms)
        is_open = w.is_open(at)
        edge = w.closes_at(at) if is_open else w.next_open(at)
        until = int(edge.timestamp() * 1000) if edge is not None else now_ms + 1
        self._cache[site] = (now_ms, max(until, now_ms + 1), is_open)
        return is_open

    def closes_at_ms(self, site: str, now_ms: int) -> int | None:
        """When the open window at ``now_ms`` closes (None: always open, or closed now)."""
        w = self._for(site)
        if w is None:
            return None
        end = w.closes_at(to_datetime(now_ms))
        return None if end is None else int(end.timestamp() * 1000)

    def next_open_ms(self, site: str, now_ms: int) -> int | None:
        w = self._for(site)
        if w is None:
            return now_ms
        nxt = w.next_open(to_datetime(now_ms))
        return None if nxt is None else int(nxt.timestamp() * 1000)
