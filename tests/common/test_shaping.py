"""Token bucket and cron link windows with an injected clock: no sleeps, no wall clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger

import common.shaping
from common.errors import ConfigError
from common.shaping import LinkWindows, TokenBucket

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def test_all() -> None:
    assert common.shaping.__all__ == ["LinkWindows", "TokenBucket"]


# --- TokenBucket ------------------------------------------------------------------------


def test_bucket_starts_full_and_holds_at_most_burst() -> None:
    b = TokenBucket(1000, 500, now=0.0)
    assert b.take(500, 0.0)
    assert not b.take(1, 0.0)
    assert b.tokens(3600.0) == 500  # a long idle period refills to the burst, not beyond
    assert b.take(500, 3600.0)
    assert not b.take(1, 3600.0)


def test_first_call_fixes_the_clock_origin() -> None:
    b = TokenBucket(100, 100)
    assert b.take(100, 12345.0)
    assert b.wait_time(50, 12345.0) == pytest.approx(0.5)
    assert b.take(50, 12345.5)


def test_wait_time_is_exact_and_take_succeeds_then() -> None:
    b = TokenBucket(1000, 1000, now=0.0)
    assert b.wait_time(1000, 0.0) == 0.0
    assert b.take(1000, 0.0)
    assert b.wait_time(250, 0.0) == pytest.approx(0.25)
    assert not b.take(250, 0.2)
    assert b.take(250, 0.25)


def test_a_request_larger_than_burst_passes_once_the_bucket_is_full_and_goes_negative() -> None:
    b = TokenBucket(1000, 1000, now=0.0)
    assert b.take(1000, 0.0)
    assert not b.take(5000, 0.5)  # half full: min(5000, burst) = 1000 tokens needed
    assert b.wait_time(5000, 0.5) == pytest.approx(0.5)
    assert b.take(5000, 1.0)
    assert b.tokens(1.0) == pytest.approx(-4000)
    # the debt is paid back at the rate before anything else passes
    assert b.wait_time(1, 1.0) == pytest.approx(4.001)
    assert not b.take(1, 5.0)
    assert b.take(1, 5.001)


def test_large_requests_eventually_pass_and_the_mean_rate_still_holds() -> None:
    rate, burst = 10_000.0, 4_000.0
    b = TokenBucket(rate, burst, now=0.0)
    rng = random.Random(3)
    now, passed, largest = 0.0, 0, 0
    for _ in range(2_000):
        n = rng.choice([100, 1_500, 4_000, 25_000])  # some far above the burst
        now += b.wait_time(n, now)
        assert b.take(n, now), f"{n} bytes refused after waiting the time wait_time() gave"
        passed += n
        largest = max(largest, n)
        assert passed <= burst + rate * now + max(0.0, largest - burst)
    assert passed / now == pytest.approx(rate, rel=0.05)


def test_rate_holds_over_a_long_run_and_in_every_one_second_window() -> None:
    rate, burst = 50_000.0, 8_000.0
    b = TokenBucket(rate, burst, now=0.0)
    rng = random.Random(7)
    now, passed = 0.0, 0
    sends: list[tuple[float, int]] = []
    while now < 600.0:  # ten minutes of a greedy sender polling every 0-5 ms
        n = rng.randint(1, int(burst))
        if b.take(n, now):
            passed += n
            sends.append((now, n))
        now += rng.uniform(0.0, 0.005)
    assert passed <= rate * now * 1.05 + burst
    assert passed >= rate * now * 0.95  # a greedy sender gets close to the cap
    # sliding one-second windows: never more than rate + burst
    lo, in_window = 0, 0
    for t, n in sends:
        in_window += n
        while sends[lo][0] <= t - 1.0:
            in_window -= sends[lo][1]
            lo += 1
        assert in_window <= rate + burst


def test_a_clock_that_steps_back_adds_no_tokens() -> None:
    b = TokenBucket(100, 100, now=10.0)
    assert b.take(100, 10.0)
    assert not b.take(1, 5.0)
    assert b.tokens(10.0) == 0
    assert b.take(50, 10.5)


@pytest.mark.parametrize(("rate", "burst"), [(0, 10), (-1, 10), (float("inf"), 10), (10, 0), (10, float("nan"))])
def test_bucket_rejects_unusable_settings(rate: float, burst: float) -> None:
    with pytest.raises(ConfigError, match="token bucket"):
        TokenBucket(rate, burst)


def test_negative_requests_are_an_error() -> None:
    b = TokenBucket(10, 10)
    with pytest.raises(ValueError, match="negative"):
        b.take(-1, 0.0)
    with pytest.raises(ValueError, match="negative"):
        b.wait_time(-1, 0.0)


# --- LinkWindows: the ordinary calendar ---------------------------------------------------


def at(tz: ZoneInfo, *fields: int, fold: int = 0) -> datetime:
    return datetime(*fields, tzinfo=tz, fold=fold)


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)


def test_no_windows_means_always_open() -> None:
    w = LinkWindows([], "Europe/Berlin")
    now = at(BERLIN, 2024, 5, 1, 12, 0)
    assert w.is_open(now)
    assert w.next_open(now) == now and w.next_open(now).tzinfo is UTC
    assert w.closes_at(now) is None


def test_a_window_spanning_midnight_is_half_open() -> None:
    w = LinkWindows([("0 23 * * *", 2 * 3600)], "Europe/Berlin")  # 23:00-01:00
    tick = timedelta(microseconds=1)
    assert not w.is_open(at(BERLIN, 2024, 5, 1, 23, 0) - tick)
    assert w.is_open(at(BERLIN, 2024, 5, 1, 23, 0))
    assert w.is_open(at(BERLIN, 2024, 5, 2, 0, 0))
    assert w.is_open(at(BERLIN, 2024, 5, 2, 1, 0) - tick)
    assert not w.is_open(at(BERLIN, 2024, 5, 2, 1, 0))
    assert not w.is_open(at(BERLIN, 2024, 5, 2, 12, 0))


def test_next_open_and_closes_at() -> None:
    w = LinkWindows([("0 22 * * *", 2 * 3600)], "Europe/Berlin")
    closed = at(BERLIN, 2024, 5, 1, 12, 0)
    assert w.next_open(closed) == at(BERLIN, 2024, 5, 1, 22, 0)
    assert w.closes_at(closed) == closed  # open in [now, now): not at all
    after = at(BERLIN, 2024, 5, 2, 0, 0)  # the boundary itself is closed
    assert w.next_open(after) == at(BERLIN, 2024, 5, 2, 22, 0)
    inside = at(BERLIN, 2024, 5, 1, 23, 0)
    assert w.next_open(inside) == inside
    assert w.closes_at(inside) == at(BERLIN, 2024, 5, 2, 0, 0)


def test_answers_do_not_depend_on_the_zone_of_now_and_come_back_in_utc() -> None:
    w = LinkWindows([("0 22 * * *", 3600)], BERLIN)
    now = utc(2024, 5, 1, 19, 30)  # 21:30 CEST
    assert not w.is_open(now)
    nxt = w.next_open(now)
    assert nxt == utc(2024, 5, 1, 20, 0)
    assert nxt.tzinfo is UTC
    assert w.is_open(now.astimezone(NEW_YORK) + timedelta(minutes=30))


def test_naive_datetimes_are_refused() -> None:
    w = LinkWindows([("0 22 * * *", 3600)], "UTC")
    with pytest.raises(ValueError, match="timezone-aware"):
        w.is_open(datetime(2024, 5, 1, 22, 0))


def test_day_of_week_zero_is_monday_as_in_apscheduler_3() -> None:
    w = LinkWindows([("0 9 * * 0", 3600)], "UTC")
    sunday = utc(2024, 5, 5, 8, 0)
    assert sunday.weekday() == 6
    assert w.next_open(sunday) == utc(2024, 5, 6, 9, 0)  # Monday: prefer names ("sun") in configs


def test_multiple_windows_open_when_any_is_and_merge_when_they_overlap_or_touch() -> None:
    w = LinkWindows(
        [
            ("0 1 * * *", 3600),  # 01:00-02:00
            ("30 1 * * *", 3600),  # 01:30-02:30, overlaps the first
            ("0 4 * * *", 3600),  # 04:00-05:00
            ("0 5 * * *", 1800),  # 05:00-05:30, touches the third
            ("0 12 * * mon-fri", 600),  # weekdays only
        ],
        "UTC",
    )
    assert w.is_open(utc(2024, 5, 1, 2, 15))
    assert w.closes_at(utc(2024, 5, 1, 1, 10)) == utc(2024, 5, 1, 2, 30)
    assert not w.is_open(utc(2024, 5, 1, 3, 0))
    assert w.next_open(utc(2024, 5, 1, 3, 0)) == utc(2024, 5, 1, 4, 0)
    assert w.closes_at(utc(2024, 5, 1, 4, 10)) == utc(2024, 5, 1, 5, 30)
    assert w.next_open(utc(2024, 5, 1, 6, 0)) == utc(2024, 5, 1, 12, 0)  # a Wednesday
    assert w.next_open(utc(2024, 5, 4, 6, 0)) == utc(2024, 5, 5, 1, 0)  # Saturday: not at noon


def test_windows_that_always_overlap_stop_merging_at_a_point_still_open() -> None:
    w = LinkWindows([("* * * * *", 120)], "UTC")  # each minute for two minutes: never closes
    now = utc(2024, 5, 1, 0, 0, 30)
    end = w.closes_at(now)
    assert end is not None and end > now + timedelta(hours=10)
    assert w.is_open(end - timedelta(microseconds=1))


@pytest.mark.parametrize(
    ("windows", "tz", "match"),
    [
        ([("61 * * * *", 60)], "UTC", "'61 \\* \\* \\* \\*'"),
        ([("0 0 * *", 60)], "UTC", "Wrong number of fields"),
        ([("0 0 30 2 *", 60)], "UTC", "never fires"),
        ([("0 0 * * *", 0)], "UTC", "duration"),
        ([("0 0 * * *", 60)], "Mars/Olympus_Mons", "unknown time zone"),
    ],
)
def test_unusable_windows_name_the_cause(windows: list[tuple[str, float]], tz: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LinkWindows(windows, tz)


# --- LinkWindows across daylight saving changes -----------------------------------------
# 2024: Berlin springs forward 31 March 02:00 CET -> 03:00 CEST (01:00 UTC) and falls back
# 27 October 03:00 CEST -> 02:00 CET (01:00 UTC). New York springs forward 10 March 02:00
# EST -> 03:00 EDT (07:00 UTC) and falls back 3 November 02:00 EDT -> 01:00 EST (06:00 UTC).


def test_berlin_spring_forward_a_nonexistent_0230_fires_once_at_0330_cest() -> None:
    w = LinkWindows([("30 2 * * *", 3600)], BERLIN)
    # what APScheduler does: 02:30 on that day is 02:30 CET = 01:30 UTC = 03:30 CEST
    trig = CronTrigger.from_crontab("30 2 * * *", timezone=BERLIN)
    raw = trig.get_next_fire_time(None, at(BERLIN, 2024, 3, 31, 0, 0))
    assert raw.astimezone(UTC) == utc(2024, 3, 31, 1, 30)
    # ... but its own search from inside the skipped hour misses that fire; ours does not
    inside_gap_hour = utc(2024, 3, 31, 1, 10)  # 03:10 CEST
    assert trig.get_next_fire_time(None, inside_gap_hour).astimezone(UTC) == utc(2024, 4, 1, 0, 30)
    assert not w.is_open(inside_gap_hour)
    assert w.next_open(inside_gap_hour) == utc(2024, 3, 31, 1, 30)
    assert w.next_open(utc(2024, 3, 31, 0, 0)) == utc(2024, 3, 31, 1, 30)
    assert w.is_open(utc(2024, 3, 31, 1, 30))
    assert w.closes_at(utc(2024, 3, 31, 1, 45)) == at(BERLIN, 2024, 3, 31, 4, 30)  # one real hour
    assert not w.is_open(at(BERLIN, 2024, 3, 31, 4, 30))
    assert w.next_open(at(BERLIN, 2024, 3, 31, 4, 30)) == at(BERLIN, 2024, 4, 1, 2, 30)


def test_berlin_spring_forward_a_window_across_the_change_lasts_its_real_duration() -> None:
    w = LinkWindows([("0 1 * * *", 2 * 3600)], BERLIN)
    opens = at(BERLIN, 2024, 3, 31, 1, 0)  # 00:00 UTC
    assert w.next_open(opens - timedelta(minutes=1)) == opens
    assert w.closes_at(opens) == at(BERLIN, 2024, 3, 31, 4, 0)  # 02:00 UTC: wall clock shows three hours
    assert w.is_open(at(BERLIN, 2024, 3, 31, 3, 59))
    assert not w.is_open(at(BERLIN, 2024, 3, 31, 4, 0))


def test_berlin_fall_back_a_repeated_0230_fires_twice_and_the_windows_merge() -> None:
    w = LinkWindows([("30 2 * * *", 3600)], BERLIN)
    first = utc(2024, 10, 27, 0, 30)
    assert at(BERLIN, 2024, 10, 27, 2, 30, fold=0).astimezone(UTC) == first  # 02:30 CEST
    assert at(BERLIN, 2024, 10, 27, 2, 30, fold=1).astimezone(UTC) == utc(2024, 10, 27, 1, 30)  # 02:30 CET
    # why answers come back in UTC: a local time in the repeated hour never equals another zone's
    assert at(BERLIN, 2024, 10, 27, 2, 30, fold=0) != first
    assert w.next_open(utc(2024, 10, 26, 23, 0)) == first
    assert w.is_open(utc(2024, 10, 27, 1, 45))
    assert w.closes_at(first) == utc(2024, 10, 27, 2, 30)  # 03:30 CET: two real hours that day
    assert not w.is_open(at(BERLIN, 2024, 10, 27, 3, 30))
    assert w.closes_at(at(BERLIN, 2024, 10, 28, 2, 45)) == at(BERLIN, 2024, 10, 28, 3, 30)  # one hour again


def test_berlin_fall_back_a_time_outside_the_repeated_hour_fires_once() -> None:
    w = LinkWindows([("30 1 * * *", 3600)], BERLIN)
    assert w.next_open(utc(2024, 10, 26, 12, 0)) == utc(2024, 10, 26, 23, 30)  # 01:30 CEST
    assert w.closes_at(utc(2024, 10, 26, 23, 30)) == utc(2024, 10, 27, 0, 30)
    assert not w.is_open(utc(2024, 10, 27, 1, 0))


def test_new_york_spring_forward_a_nonexistent_0230_fires_once_at_0330_edt() -> None:
    w = LinkWindows([("30 2 * * *", 1800)], NEW_YORK)
    inside_gap_hour = utc(2024, 3, 10, 7, 10)  # 03:10 EDT
    assert not w.is_open(inside_gap_hour)
    assert w.next_open(inside_gap_hour) == at(NEW_YORK, 2024, 3, 10, 3, 30)  # 07:30 UTC
    assert w.closes_at(utc(2024, 3, 10, 7, 40)) == at(NEW_YORK, 2024, 3, 10, 4, 0)
    assert w.next_open(at(NEW_YORK, 2024, 3, 10, 4, 0)) == at(NEW_YORK, 2024, 3, 11, 2, 30)


def test_new_york_fall_back_a_repeated_0130_fires_twice_0300_once() -> None:
    w = LinkWindows([("30 1 * * *", 3600), ("0 3 * * *", 600)], NEW_YORK)
    first = utc(2024, 11, 3, 5, 30)  # 01:30 EDT
    assert at(NEW_YORK, 2024, 11, 3, 1, 30, fold=0).astimezone(UTC) == first
    assert w.next_open(utc(2024, 11, 3, 0, 0)) == first
    assert w.closes_at(first) == utc(2024, 11, 3, 7, 30)  # 02:30 EST, two real hours
    assert not w.is_open(utc(2024, 11, 3, 7, 30))
    assert w.next_open(utc(2024, 11, 3, 7, 30)) == at(NEW_YORK, 2024, 11, 3, 3, 0)  # 08:00 UTC, once
    assert w.next_open(utc(2024, 11, 3, 8, 10)) == at(NEW_YORK, 2024, 11, 4, 1, 30)


def reference_intervals(expr: str, duration_s: float, tz: ZoneInfo, start: datetime, end: datetime):
    """Fire times walked forward from well before ``start`` with APScheduler alone."""
    trig = CronTrigger.from_crontab(expr, timezone=tz)
    fire = trig.get_next_fire_time(None, (start - timedelta(days=2)).astimezone(tz))
    out = []
    while fire.astimezone(UTC) < end:
        f = fire.astimezone(UTC)
        out.append((f, f + timedelta(seconds=duration_s)))
        fire = trig.get_next_fire_time(fire, fire)
    return out


@pytest.mark.parametrize(
    ("tz", "day"),
    [
        (BERLIN, (2024, 3, 31)),
        (BERLIN, (2024, 10, 27)),
        (NEW_YORK, (2024, 3, 10)),
        (NEW_YORK, (2024, 11, 3)),
    ],
)
@pytest.mark.parametrize(
    ("expr", "duration_s"),
    [("30 2 * * *", 1200), ("0 2 * * *", 3600), ("30 1 * * *", 5400), ("*/20 * * * *", 300), ("45 23 * * *", 7200)],
)
def test_every_minute_of_a_dst_day_agrees_with_fire_times_walked_from_before(
    tz: ZoneInfo, day: tuple[int, int, int], expr: str, duration_s: float
) -> None:
    start = datetime(*day, tzinfo=tz).astimezone(UTC) - timedelta(hours=3)
    end = start + timedelta(hours=30)
    intervals = reference_intervals(expr, duration_s, tz, start, end + timedelta(days=2))
    w = LinkWindows([(expr, duration_s)], tz)
    t = start
    while t < end:
        for probe in (t, t + timedelta(seconds=7)):
            expected_open = any(a <= probe < b for a, b in intervals)
            assert w.is_open(probe) == expected_open, probe
            if not expected_open:
                expected_next = min(a for a, _ in intervals if a >= probe)
                assert w.next_open(probe) == expected_next, probe
        t += timedelta(minutes=5)


def test_is_open_remembers_its_answer_until_the_window_changes_and_agrees_with_a_fresh_search() -> None:
    """A drain asks is_open on every commit: the answer is known until the open window ends (or the next
    one opens), so only a change costs a cron search, and every answer is the one a fresh instance gives."""
    import random as _random
    from datetime import UTC as _UTC
    from datetime import datetime as _dt
    from datetime import timedelta as _td

    windows = [("0 */3 * * *", 5400.0), ("30 22 * * 5", 7200.0)]
    cached = LinkWindows(windows, "Europe/Berlin")
    rng = _random.Random(3)
    t = _dt(2026, 3, 27, 0, 0, tzinfo=_UTC)  # across Berlin's spring DST change
    searches = 0
    real_end = cached._end

    def counting(now_utc):
        nonlocal searches
        searches += 1
        return real_end(now_utc)

    cached._end = counting
    asked = 0
    for _ in range(3000):
        t += _td(seconds=rng.uniform(0, 240))
        asked += 1
        assert cached.is_open(t) == LinkWindows(windows, "Europe/Berlin").is_open(t), t
    assert searches < asked / 10  # one search per change, not per question
    earlier = t - _td(days=1)  # time going back (a clock step) is answered afresh, not from the cache
    assert cached.is_open(earlier) == LinkWindows(windows, "Europe/Berlin").is_open(earlier)
