"""common.install_deadline: the install deadline a device reads from its signed command args."""

from __future__ import annotations

from datetime import UTC, datetime

from common.install_deadline import (
    BY_ARG,
    MIN_WINDOW_LEFT_MS,
    TZ_ARG,
    WINDOWS_ARG,
    install_deadline_ms,
    late,
    window_args,
)
from common.rollouts.windows import install_deadline_args

NOON = int(datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)
HOUR = 3_600_000
DAILY_NOON = window_args([("0 12 * * *", 3600.0)])  # an hour from 12:00 UTC


def test_inside_the_window_the_deadline_is_its_close_and_outside_it_is_now():
    assert install_deadline_ms(DAILY_NOON, NOON + 10_000) == NOON + HOUR
    assert late(DAILY_NOON, NOON + 10_000) is None
    assert install_deadline_ms(DAILY_NOON, NOON + 2 * HOUR) == NOON + 2 * HOUR
    assert "window is closed" in (late(DAILY_NOON, NOON + 2 * HOUR) or "")
    assert late(DAILY_NOON, NOON + 24 * HOUR + 1) is None  # the next day's window


def test_too_close_to_the_close_is_late():
    assert late(DAILY_NOON, NOON + HOUR - MIN_WINDOW_LEFT_MS) is None
    assert "closes in" in (late(DAILY_NOON, NOON + HOUR - MIN_WINDOW_LEFT_MS + 1) or "")


def test_windows_are_read_in_the_sites_time_zone():
    berlin = window_args([("0 14 * * *", 3600.0)], "Europe/Berlin")  # 14:00 in Berlin is 12:00 UTC in June
    assert berlin[TZ_ARG] == "Europe/Berlin" and install_deadline_ms(berlin, NOON + 1000) == NOON + HOUR


def test_a_fixed_deadline_and_no_deadline():
    assert late({BY_ARG: str(NOON)}, NOON - 60_000) is None
    assert "passed 60 s ago" in (late({BY_ARG: str(NOON)}, NOON + 60_000) or "")
    assert install_deadline_ms({"version": "2.0.0"}, NOON) is None and late({}, NOON) is None  # an old command
    assert window_args(None) == {} and window_args(()) == {}  # a site with no windows: always open


def test_an_unreadable_deadline_counts_as_passed():
    for bad in ({WINDOWS_ARG: "not json"}, {WINDOWS_ARG: '[["61 * * * *", 60]]'}, {BY_ARG: "soon"},
                {WINDOWS_ARG: '[["0 12 * * *", 3600]]', TZ_ARG: "Mars/Olympus"}):
        assert late(bad, NOON + 1000) is not None, bad


def test_a_plans_site_windows_become_the_commands_args():
    windows = {"site-1": (("0 12 * * *", 3600.0),), "*": (("0 2 * * *", 600.0),)}
    args = install_deadline_args(windows, {"site-1": "UTC"}, "site-1")
    assert args == DAILY_NOON
    assert install_deadline_args(windows, {}, "site-9")[WINDOWS_ARG] == '[["0 2 * * *", 600.0]]'
    assert install_deadline_args({}, {}, "site-1") == {}
