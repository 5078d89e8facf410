"""When a device may still BEGIN an install a rollout sent it: read from the command the cloud signed.

A rollout's ``update`` command can reach a device long before the device has the release (a
satellite site's cache fills for hours). The device must not begin the install after its
maintenance window closed, so the cloud writes the deadline into the command's (signed) args:

- ``install_windows`` (JSON ``[[cron, duration_s], ...]``) and ``install_tz``: the site's maintenance
  windows, for a site-gated command that waits at the gateway for weeks; the deadline is the close
  of the window open when the install would begin (none open: no install now);
- ``install_by_ms``: a fixed instant, for a command the cloud sends inside the window itself.

A command with neither (older clouds, drills, manual updates) has no deadline. ``late(args, now_ms)``
is pure: the agent asks it when its download is complete, right before the update core starts; a
late device reports ``LATE_INSTALL_REFUSED`` (the rollout engine's ``late`` event: not a failure,
the device is released again in its next window, with the release already downloaded) and answers
the command ``DEFERRED`` (the gateway keeps holding it; the device has not run it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from common.errors import ConfigError
from common.shaping import LinkWindows

__all__ = ["BY_ARG", "DEFERRED", "LATE_INSTALL_REFUSED", "MIN_WINDOW_LEFT_MS", "TZ_ARG", "WINDOWS_ARG",
           "install_deadline_ms", "late", "window_args"]

WINDOWS_ARG = "install_windows"
TZ_ARG = "install_tz"
BY_ARG = "install_by_ms"
LATE_INSTALL_REFUSED = "late_install_refused"  # the update outcome a late device reports
DEFERRED = "deferred"  # the command status: not run, hold it for the next release
MIN_WINDOW_LEFT_MS = 5_000  # an install begins only if its window stays open at least this long


def window_args(entries: Sequence[tuple[str, float]] | None, tz: str = "UTC") -> dict[str, str]:
    """The args that carry a site's maintenance windows (none: the site is always open, no args)."""
    if not entries:
        return {}
    return {WINDOWS_ARG: json.dumps([[str(c), float(d)] for c, d in entries]), TZ_ARG: tz or "UTC"}


def install_deadline_ms(args: Mapping[str, str], now_ms: int) -> int | None:
    """The last instant an install may begin, as of ``now_ms``; None: the command sets no deadline.

    Unreadable deadline args count as a deadline already passed: a device never installs on a
    deadline it cannot read."""
    try:
        if WINDOWS_ARG in args:
            windows = LinkWindows([(str(c), float(d)) for c, d in json.loads(args[WINDOWS_ARG])], args.get(TZ_ARG) or "UTC")
            end = windows.closes_at(datetime.fromtimestamp(now_ms / 1000, tz=UTC))  # now itself when closed
            return None if end is None else int(end.timestamp() * 1000)
        if BY_ARG in args:
            return int(args[BY_ARG])
    except (ConfigError, ValueError, TypeError):
        return now_ms - 1
    return None


def late(args: Mapping[str, str], now_ms: int) -> str | None:
    """Why an install must not begin now (its deadline is past or too close), or None."""
    deadline = install_deadline_ms(args, now_ms)
    if deadline is None or deadline - now_ms >= MIN_WINDOW_LEFT_MS:
        return None
    if deadline <= now_ms:
        return f"its maintenance window is closed (install deadline passed {(now_ms - deadline) // 1000} s ago)"
    return f"its maintenance window closes in {(deadline - now_ms) / 1000:.1f} s"
