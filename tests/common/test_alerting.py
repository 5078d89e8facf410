from __future__ import annotations

import json

import pytest

import common.alerting
from common.alerting import (
    AlertEngine,
    AlertEvent,
    BacklogRule,
    FirmwareRule,
    OfflineRule,
    RateRule,
    ThresholdRule,
    parse_rules,
)
from common.errors import AlertNotFound, ConfigError, EdgeFleetError

T0 = 1_700_000_000_000
S = 1000  # ms per second
MIN = 60 * S


class Clock:
    """A fake clock: the test moves it; the engine is handed its reading."""

    def __init__(self, now_ms: int = T0) -> None:
        self.now = now_ms

    def advance(self, seconds: float) -> int:
        self.now += round(seconds * S)
        return self.now


def kinds(events: list[AlertEvent]) -> list[tuple[str, str, str]]:
    return [(e.event, e.rule, e.subject) for e in events]


def test_all() -> None:
    assert common.alerting.__all__ == sorted(common.alerting.__all__)
    assert set(common.alerting.__all__) == {
        "Alert", "AlertEngine", "AlertEvent", "BacklogRule", "FirmwareRule", "OfflineRule", "RateRule", "Rule",
        "ThresholdRule", "parse_rules",
    }


# --- offline ---------------------------------------------------------------------------------------

def test_offline_fires_after_n_seconds_and_resolves_when_seen() -> None:
    clock = Clock()
    eng = AlertEngine([OfflineRule("device_offline", after_s=60)])
    eng.observe_seen("d1", clock.now)
    eng.observe_seen("d2", clock.now)
    assert eng.tick(clock.advance(30)) == []
    eng.observe_seen("d2", clock.now)
    assert eng.tick(clock.advance(30)) == []  # d1 silent for exactly 60 s: not longer than 60 s
    events = eng.tick(clock.advance(0.001))
    assert events == [
        AlertEvent(
            event="fired",
            alert_id=f"device_offline:d1:{T0 + 60_001}",
            rule="device_offline",
            type="offline",
            subject="d1",
            severity="warning",
            at_ms=T0 + 60_001,
            opened_ms=T0 + 60_001,
            detail={"last_seen_ms": T0, "silent_s": 60.001},
        )
    ]
    eng.observe_seen("d1", clock.advance(10))
    events = eng.tick(clock.now)
    assert kinds(events) == [("resolved", "device_offline", "d1")]
    assert events[0].alert_id == f"device_offline:d1:{T0 + 60_001}"
    assert events[0].at_ms == clock.now
    assert eng.open_alerts() == []
    assert [a.id for a in eng.resolved_alerts()] == [f"device_offline:d1:{T0 + 60_001}"]


def test_offline_rule_applies_only_to_its_kind_of_subject() -> None:
    clock = Clock()
    eng = AlertEngine([OfflineRule("device_offline", 60), OfflineRule("gateway_link_down", 20, kind="gateway")])
    eng.observe_seen("gw1", clock.now, kind="gateway")
    eng.observe_seen("d1", clock.now)
    assert kinds(eng.tick(clock.advance(30))) == [("fired", "gateway_link_down", "gw1")]
    assert kinds(eng.tick(clock.advance(31))) == [("fired", "device_offline", "d1")]


def test_an_older_seen_time_does_not_move_last_seen_back() -> None:
    clock = Clock()
    eng = AlertEngine([OfflineRule("off", 60)])
    eng.observe_seen("d1", clock.now)
    eng.observe_seen("d1", clock.now - 120 * S)  # a late, reordered message
    assert eng.tick(clock.advance(59)) == []


def test_a_subject_never_seen_is_never_offline() -> None:
    eng = AlertEngine([OfflineRule("off", 1)])
    assert eng.tick(T0 + 10**9) == []


# --- metric threshold for a duration ---------------------------------------------------------

def test_threshold_fires_after_the_duration_and_resolves() -> None:
    clock = Clock()
    eng = AlertEngine([ThresholdRule("battery_low", "battery_percent", "<", 15, for_s=600)])
    eng.observe_metric("d1", "battery_percent", 40, clock.now)
    assert eng.tick(clock.advance(60)) == []
    eng.observe_metric("d1", "battery_percent", 14, clock.advance(60))
    low_since = clock.now
    eng.observe_metric("d1", "battery_percent", 12, clock.advance(300))  # still low: the timer keeps running
    assert eng.tick(clock.advance(299.999)) == []
    events = eng.tick(clock.advance(0.001))
    assert kinds(events) == [("fired", "battery_low", "d1")]
    assert events[0].detail == {
        "metric": "battery_percent", "value": 12, "op": "<", "threshold": 15, "since_ms": low_since
    }
    assert eng.tick(clock.advance(600)) == []  # deduplicated while it persists
    eng.observe_metric("d1", "battery_percent", 15, clock.advance(1))
    assert kinds(eng.tick(clock.now)) == [("resolved", "battery_low", "d1")]


def test_a_dip_shorter_than_the_duration_never_fires() -> None:
    clock = Clock()
    eng = AlertEngine([ThresholdRule("battery_low", "battery_percent", "<", 15, for_s=600)])
    for value in [14, 20, 13, 30, 10, 50]:  # each low spell lasts 400 s
        eng.observe_metric("d1", "battery_percent", value, clock.now)
        assert eng.tick(clock.advance(400)) == []


@pytest.mark.parametrize(
    "op, threshold, values, fires",
    [
        (">", 80, [81], True),
        (">", 80, [80], False),
        (">=", 80, [80], True),
        ("<=", 5, [5], True),
        ("==", 0, [0], True),
        ("!=", 0, [0], False),
        ("!=", 0, [1], True),
    ],
)
def test_threshold_op_is_configurable(op: str, threshold: float, values: list[float], fires: bool) -> None:
    eng = AlertEngine([ThresholdRule("r", "m", op, threshold)])
    for v in values:
        eng.observe_metric("d", "m", v, T0)
    assert bool(eng.tick(T0)) is fires


def test_threshold_ignores_other_metrics_and_non_numbers() -> None:
    eng = AlertEngine([ThresholdRule("hot", "temp", ">", 80)])
    eng.observe_metric("d", "humidity", 99, T0)
    eng.observe_metric("d", "temp", float("nan"), T0)
    eng.observe_metric("d", "temp", True, T0)  # type: ignore[arg-type]
    eng.observe_metric("d", "temp", "hot", T0)  # type: ignore[arg-type]
    assert eng.tick(T0 + 1) == []


def test_two_rules_on_one_metric_are_independent_alerts() -> None:
    clock = Clock()
    eng = AlertEngine([
        ThresholdRule("battery_low", "battery_percent", "<", 15, for_s=60),
        ThresholdRule("battery_critical", "battery_percent", "<", 5),
    ])
    eng.observe_metric("d", "battery_percent", 4, clock.now)
    assert kinds(eng.tick(clock.now)) == [("fired", "battery_critical", "d")]
    assert kinds(eng.tick(clock.advance(60))) == [("fired", "battery_low", "d")]
    eng.observe_metric("d", "battery_percent", 10, clock.now)
    assert kinds(eng.tick(clock.now)) == [("resolved", "battery_critical", "d")]
    assert [a.rule for a in eng.open_alerts()] == ["battery_low"]


# --- firmware behind -------------------------------------------------------------------------------

RELEASES = ["1.0", "1.1", "1.2", "2.0"]


def test_firmware_behind_by_k_fires_and_resolves_on_update() -> None:
    eng = AlertEngine([FirmwareRule("fw_behind", behind=2)])
    eng.observe_firmware("d1", "1.1", RELEASES)  # 2 behind
    eng.observe_firmware("d2", "1.2", RELEASES)  # 1 behind
    eng.observe_firmware("d3", "2.0", RELEASES)
    events = eng.tick(T0)
    assert kinds(events) == [("fired", "fw_behind", "d1")]
    assert events[0].detail == {"version": "1.1", "latest": "2.0", "behind": 2}
    eng.observe_firmware("d1", "1.2", RELEASES)
    assert kinds(eng.tick(T0 + 1)) == [("resolved", "fw_behind", "d1")]
    # a new release makes d2 two behind
    eng.observe_firmware("d2", "1.2", [*RELEASES, "2.1"])
    assert kinds(eng.tick(T0 + 2)) == [("fired", "fw_behind", "d2")]


def test_a_version_not_in_the_release_list_is_not_judged() -> None:
    eng = AlertEngine([FirmwareRule("fw_behind", behind=1)])
    eng.observe_firmware("d1", "0.9-dev", RELEASES)
    eng.observe_firmware("d2", "1.0", [])
    assert eng.tick(T0) == []


# --- gateway backlog ---------------------------------------------------------------------------------

def test_backlog_above_percent_of_quota() -> None:
    eng = AlertEngine([BacklogRule("backlog_high", percent=80)])
    eng.observe_backlog("gw1", 800, 1000, T0)  # exactly 80%: not above
    eng.observe_backlog("gw2", 0, 0, T0)  # no quota: not judged
    assert eng.tick(T0) == []
    eng.observe_backlog("gw1", 801, 1000, T0 + 1)
    events = eng.tick(T0 + 1)
    assert kinds(events) == [("fired", "backlog_high", "gw1")]
    assert events[0].detail == {"used": 801, "quota": 1000, "percent": 80.1, "since_ms": T0 + 1}
    eng.observe_backlog("gw1", 500, 1000, T0 + 2)
    assert kinds(eng.tick(T0 + 2)) == [("resolved", "backlog_high", "gw1")]


def test_backlog_for_a_duration() -> None:
    clock = Clock()
    eng = AlertEngine([BacklogRule("backlog_high", percent=80, for_s=120)])
    eng.observe_backlog("gw1", 900, 1000, clock.now)
    assert eng.tick(clock.advance(119)) == []
    eng.observe_backlog("gw1", 950, 1000, clock.now)
    assert kinds(eng.tick(clock.advance(1))) == [("fired", "backlog_high", "gw1")]


# --- message-rate anomaly ------------------------------------------------------------------------

W0 = T0 - T0 % MIN  # rate windows are aligned to the epoch


def rate_engine(**kw: object) -> AlertEngine:
    params: dict[str, object] = {"window_s": 60, "factor": 3, "baseline_windows": 5, "min_baseline": 10, **kw}
    return AlertEngine([RateRule("rate_anomaly", **params)])  # type: ignore[arg-type]


def send(eng: AlertEngine, device: str, start_ms: int, count: int, window_ms: int = MIN) -> None:
    """``count`` messages spread over the window starting at ``start_ms``."""
    for i in range(count):
        eng.observe_message(device, start_ms + i * window_ms // max(count, 1))


def test_rate_far_above_baseline_fires_then_resolves() -> None:
    eng = rate_engine()
    for w in range(6):
        send(eng, "d1", W0 + w * MIN, 4)
    assert eng.tick(W0 + 6 * MIN) == []  # 6 ordinary windows
    send(eng, "d1", W0 + 6 * MIN, 13)  # > 4 * 3
    events = eng.tick(W0 + 7 * MIN)
    assert kinds(events) == [("fired", "rate_anomaly", "d1")]
    assert events[0].detail == {"direction": "high", "count": 13, "baseline_mean": 4.0, "window_s": 60}
    assert eng.tick(W0 + 7 * MIN + 30 * S) == []  # the same window is judged until the next completes
    send(eng, "d1", W0 + 7 * MIN, 4)
    assert kinds(eng.tick(W0 + 8 * MIN)) == [("resolved", "rate_anomaly", "d1")]


def test_a_batch_of_messages_counts_as_that_many_messages() -> None:
    one_by_one, batched = rate_engine(), rate_engine()
    for w, n in enumerate([4, 4, 4, 4, 4, 4, 13, 4, 0]):
        for _ in range(n):
            one_by_one.observe_message("d1", W0 + w * MIN)
        batched.observe_messages("d1", n, W0 + w * MIN)
        assert batched.tick(W0 + (w + 1) * MIN) == one_by_one.tick(W0 + (w + 1) * MIN)
    assert [a.rule for a in batched.resolved_alerts()] == ["rate_anomaly"]


def test_the_engine_names_the_metrics_its_rules_read() -> None:
    eng = AlertEngine([ThresholdRule("hot", "temp_c", ">", 80), ThresholdRule("low", "battery", "<", 15),
                       ThresholdRule("cold", "temp_c", "<", -20), RateRule("rate", 60, 3), OfflineRule("off", 10)])
    assert eng.metrics == {"temp_c", "battery"}
    assert AlertEngine([OfflineRule("off", 10)]).metrics == frozenset()


def test_rate_far_below_baseline_fires() -> None:
    eng = rate_engine()
    for w in range(6):
        send(eng, "d1", W0 + w * MIN, 6)
    send(eng, "d1", W0 + 6 * MIN, 1)  # < 6 / 3
    events = eng.tick(W0 + 7 * MIN)
    assert kinds(events) == [("fired", "rate_anomaly", "d1")]
    assert events[0].detail["direction"] == "low"


def test_rate_within_the_factor_does_not_fire() -> None:
    eng = rate_engine()
    for w, n in enumerate([4, 4, 4, 4, 4, 12, 2]):  # 12 = 4 * 3 is not above; 2 is not below 4 / 3
        send(eng, "d1", W0 + w * MIN, n)
        assert eng.tick(W0 + (w + 1) * MIN) == []


def test_rate_needs_a_minimum_baseline_sample() -> None:
    eng = rate_engine(min_baseline=10)
    for w in range(5):
        send(eng, "d1", W0 + w * MIN, 1)  # 5 messages in the baseline: too few to judge
    send(eng, "d1", W0 + 5 * MIN, 50)
    assert eng.tick(W0 + 6 * MIN) == []


def test_rate_needs_the_whole_baseline_of_history() -> None:
    eng = rate_engine()
    send(eng, "d1", W0, 40)  # a new device: one busy window, then a quiet one
    assert eng.tick(W0 + 2 * MIN) == []
    send(eng, "d1", W0 + 2 * MIN, 1)
    assert eng.tick(W0 + 3 * MIN) == []


def test_rate_direction_can_be_limited() -> None:
    eng = rate_engine(direction="high")
    for w in range(5):
        send(eng, "d1", W0 + w * MIN, 6)
    assert eng.tick(W0 + 6 * MIN) == []  # silent window 5: low, but only high is watched
    eng = rate_engine(direction="low")
    for w in range(5):
        send(eng, "d1", W0 + w * MIN, 6)
    send(eng, "d1", W0 + 5 * MIN, 60)
    assert eng.tick(W0 + 6 * MIN) == []


def test_rate_baselines_are_per_device() -> None:
    eng = rate_engine()
    for w in range(6):
        send(eng, "busy", W0 + w * MIN, 30)
        send(eng, "quiet", W0 + w * MIN, 3)
    send(eng, "busy", W0 + 6 * MIN, 30)
    send(eng, "quiet", W0 + 6 * MIN, 30)
    assert kinds(eng.tick(W0 + 7 * MIN)) == [("fired", "rate_anomaly", "quiet")]


# --- dedup, ids, ack ---------------------------------------------------------------------------------

def test_one_open_alert_per_rule_and_subject_and_a_new_id_when_it_returns() -> None:
    clock = Clock()
    eng = AlertEngine([OfflineRule("off", 10)])
    eng.observe_seen("d", clock.now)
    first = eng.tick(clock.advance(11))
    for _ in range(5):
        assert eng.tick(clock.advance(11)) == []
    assert len(eng.open_alerts()) == 1
    eng.observe_seen("d", clock.now)
    assert kinds(eng.tick(clock.now)) == [("resolved", "off", "d")]
    again = eng.tick(clock.advance(11))
    assert kinds(again) == [("fired", "off", "d")]
    assert again[0].alert_id != first[0].alert_id
    assert again[0].alert_id == f"off:d:{clock.now}"


def test_same_inputs_give_the_same_events_and_ids() -> None:
    def run() -> list[AlertEvent]:
        clock = Clock()
        eng = AlertEngine([OfflineRule("off", 10), ThresholdRule("low", "b", "<", 15, for_s=5)])
        out = []
        for d in ("c", "a", "b"):
            eng.observe_seen(d, clock.now)
            eng.observe_metric(d, "b", 3, clock.now)
        for _ in range(5):
            out += eng.tick(clock.advance(4))
        return out

    events = run()
    assert events == run()
    # within a tick: by (rule, subject)
    assert kinds(events) == [
        ("fired", "low", "a"), ("fired", "low", "b"), ("fired", "low", "c"),
        ("fired", "off", "a"), ("fired", "off", "b"), ("fired", "off", "c"),
    ]


def test_resolved_events_come_before_fired_in_a_tick() -> None:
    eng = AlertEngine([ThresholdRule("hot", "t", ">", 80)])
    eng.observe_metric("a", "t", 90, T0)
    eng.tick(T0)
    eng.observe_metric("a", "t", 10, T0 + 1)
    eng.observe_metric("b", "t", 90, T0 + 1)
    assert kinds(eng.tick(T0 + 1)) == [("resolved", "hot", "a"), ("fired", "hot", "b")]


def test_ack_marks_the_alert_and_unknown_ids_raise() -> None:
    eng = AlertEngine([ThresholdRule("hot", "t", ">", 80)])
    eng.observe_metric("a", "t", 90, T0)
    [fired] = eng.tick(T0)
    alert = eng.ack(fired.alert_id, "alice", T0 + 5)
    assert (alert.acked_by, alert.acked_ms) == ("alice", T0 + 5)
    assert eng.open_alerts()[0].acked_by == "alice"
    # an acked alert still resolves normally
    eng.observe_metric("a", "t", 10, T0 + 6)
    assert kinds(eng.tick(T0 + 6)) == [("resolved", "hot", "a")]
    assert eng.ack(fired.alert_id, "bob").acked_by == "bob"  # a resolved alert can be acked too
    with pytest.raises(AlertNotFound) as info:
        eng.ack("hot:zz:1", "alice")
    assert isinstance(info.value, EdgeFleetError) and isinstance(info.value, KeyError)
    assert str(info.value) == "No alert by the id of 'hot:zz:1' was found"


def test_resolved_history_is_bounded() -> None:
    eng = AlertEngine([ThresholdRule("hot", "t", ">", 80)], history=3)
    for i in range(10):
        eng.observe_metric("a", "t", 90, T0 + 2 * i)
        eng.tick(T0 + 2 * i)
        eng.observe_metric("a", "t", 0, T0 + 2 * i + 1)
        eng.tick(T0 + 2 * i + 1)
    assert [a.opened_ms for a in eng.resolved_alerts()] == [T0 + 14, T0 + 16, T0 + 18]


# --- silence -----------------------------------------------------------------------------------------

def test_silence_by_rule_mutes_then_fires_if_still_open_when_it_ends() -> None:
    clock = Clock()
    eng = AlertEngine([ThresholdRule("hot", "t", ">", 80)])
    eng.silence("hot", until_ms=clock.now + 60 * S)
    eng.observe_metric("a", "t", 90, clock.now)
    assert eng.tick(clock.now) == []
    [alert] = eng.open_alerts()
    assert alert.silenced and not alert.notified
    assert eng.tick(clock.advance(59.999)) == []
    events = eng.tick(clock.advance(0.001))
    assert kinds(events) == [("fired", "hot", "a")]
    assert events[0].opened_ms == T0 and events[0].at_ms == T0 + 60 * S
    assert not eng.open_alerts()[0].silenced
    assert eng.silences == {}


def test_silence_by_subject_and_an_alert_that_closes_while_silenced_says_nothing() -> None:
    clock = Clock()
    eng = AlertEngine([ThresholdRule("hot", "t", ">", 80)])
    eng.silence("a", until_ms=clock.now + 60 * S)
    eng.observe_metric("a", "t", 90, clock.now)
    eng.observe_metric("b", "t", 90, clock.now)
    assert kinds(eng.tick(clock.now)) == [("fired", "hot", "b")]
    eng.observe_metric("a", "t", 10, clock.advance(10))
    assert eng.tick(clock.now) == []  # a's alert closed unseen: no resolved event for a fired never sent
    assert eng.tick(clock.advance(100)) == []
    assert [a.subject for a in eng.resolved_alerts()] == ["a"]


def test_silencing_an_open_notified_alert_mutes_its_resolution() -> None:
    eng = AlertEngine([ThresholdRule("hot", "t", ">", 80)])
    eng.observe_metric("a", "t", 90, T0)
    assert kinds(eng.tick(T0)) == [("fired", "hot", "a")]
    eng.silence("a", T0 + 100)
    assert eng.tick(T0 + 1) == []
    assert eng.open_alerts()[0].silenced
    eng.observe_metric("a", "t", 10, T0 + 2)
    # it was announced, so its end is announced too: a silence mutes new noise, not the all-clear
    assert kinds(eng.tick(T0 + 2)) == [("resolved", "hot", "a")]


def test_unsilence() -> None:
    eng = AlertEngine([ThresholdRule("hot", "t", ">", 80)])
    eng.silence("hot", T0 + 10**9)
    eng.observe_metric("a", "t", 90, T0)
    assert eng.tick(T0) == []
    eng.unsilence("hot")
    assert kinds(eng.tick(T0 + 1)) == [("fired", "hot", "a")]


# --- suppression (maintenance) -------------------------------------------------------------------

def test_suppressed_subjects_open_no_alerts() -> None:
    clock = Clock()
    maintenance = {"d1"}
    eng = AlertEngine([OfflineRule("off", 10)], suppressed=lambda s: s in maintenance)
    eng.observe_seen("d1", clock.now)
    eng.observe_seen("d2", clock.now)
    assert kinds(eng.tick(clock.advance(11))) == [("fired", "off", "d2")]
    assert eng.tick(clock.advance(11)) == []
    maintenance.clear()  # maintenance over, still silent: now it fires
    assert kinds(eng.tick(clock.advance(1))) == [("fired", "off", "d1")]


def test_suppression_as_a_set_and_an_open_alert_resolves_normally() -> None:
    eng = AlertEngine([ThresholdRule("hot", "t", ">", 80)], suppressed={"m"})
    eng.observe_metric("m", "t", 90, T0)
    assert eng.tick(T0) == []
    assert eng.open_alerts() == []
    maintenance: set[str] = set()
    eng = AlertEngine([ThresholdRule("hot", "t", ">", 80)], suppressed=maintenance.__contains__)
    eng.observe_metric("a", "t", 90, T0)
    assert kinds(eng.tick(T0)) == [("fired", "hot", "a")]
    maintenance.add("a")
    assert eng.tick(T0 + 1) == []
    assert len(eng.open_alerts()) == 1
    eng.observe_metric("a", "t", 10, T0 + 2)
    assert kinds(eng.tick(T0 + 2)) == [("resolved", "hot", "a")]


def test_forget_resolves_a_retired_subjects_alerts() -> None:
    eng = AlertEngine([OfflineRule("off", 10), ThresholdRule("hot", "t", ">", 80), RateRule("rate", 60, 3)])
    eng.observe_seen("d", T0)
    eng.observe_metric("d", "t", 90, T0)
    eng.observe_message("d", T0)
    assert len(eng.tick(T0 + 11 * S)) == 2
    eng.forget("d")
    assert kinds(eng.tick(T0 + 12 * S)) == [("resolved", "hot", "d"), ("resolved", "off", "d")]
    assert eng.tick(T0 + 10**7) == []


def test_observations_of_a_forgotten_subject_after_its_retirement_do_not_bring_it_back() -> None:
    # the cloud reads the devices' silences on its store thread; a read taken before a retirement can be fed
    # after the retirement's forget(): the stale observation must not reopen (nor keep open) the alert
    eng = AlertEngine([ThresholdRule("ghost", "silent_s", ">", 100), OfflineRule("off", 10),
                       FirmwareRule("fw", 1), BacklogRule("backlog", 80), RateRule("rate", 60, 3)])
    eng.observe_metric("d", "silent_s", 500, T0)
    assert kinds(eng.tick(T0)) == [("fired", "ghost", "d")]
    eng.forget("d")
    eng.observe_metric("d", "silent_s", 500, T0 + S)  # the stale read, fed late
    eng.observe_seen("d", T0 + S)
    eng.observe_firmware("d", "1.0", ["1.0", "2.0", "3.0"])
    eng.observe_backlog("d", 90, 100, T0 + S)
    for i in range(10):
        eng.observe_message("d", T0 + i)
    assert kinds(eng.tick(T0 + S)) == [("resolved", "ghost", "d")]
    assert eng.tick(T0 + 10**7) == [] and eng.open_alerts() == []
    eng.observe_metric("e", "silent_s", 500, T0 + 2 * S)  # others are watched as before
    assert kinds(eng.tick(T0 + 2 * S)) == [("fired", "ghost", "e")]


# --- rules and events ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "make",
    [
        lambda: OfflineRule("x", 0),
        lambda: OfflineRule("", 10),
        lambda: OfflineRule("a:b", 10),
        lambda: ThresholdRule("x", "m", "=<", 1),
        lambda: ThresholdRule("x", "m", "<", "15"),
        lambda: ThresholdRule("x", "m", "<", 15, for_s=-1),
        lambda: FirmwareRule("x", 0),
        lambda: FirmwareRule("x", 1.5),
        lambda: BacklogRule("x", 0),
        lambda: RateRule("x", 60, 1),
        lambda: RateRule("x", 60, 3, baseline_windows=0),
        lambda: RateRule("x", 60, 3, min_baseline=0),
        lambda: RateRule("x", 60, 3, direction="sideways"),
        lambda: AlertEngine([OfflineRule("x", 1), FirmwareRule("x", 1)]),
    ],
)
def test_bad_rules_raise_config_error(make: object) -> None:
    with pytest.raises(ConfigError):
        make()  # type: ignore[operator]


def test_parse_rules_from_config_tables() -> None:
    rules = parse_rules([
        {"type": "offline", "name": "device_offline", "after_s": 300},
        {"type": "offline", "name": "gateway_link_down", "after_s": 60, "kind": "gateway", "severity": "critical"},
        {"type": "threshold", "name": "battery_low", "metric": "battery_percent", "op": "<", "threshold": 15,
         "for_s": 600},
        {"type": "firmware", "name": "fw_behind", "behind": 2},
        {"type": "backlog", "name": "backlog_high", "percent": 80},
        {"type": "rate", "name": "rate_anomaly", "window_s": 300, "factor": 5},
    ])
    assert [type(r).__name__ for r in rules] == [
        "OfflineRule", "OfflineRule", "ThresholdRule", "FirmwareRule", "BacklogRule", "RateRule"
    ]
    assert rules[1] == OfflineRule("gateway_link_down", 60, kind="gateway", severity="critical")
    with pytest.raises(ConfigError, match="type 'nope'"):
        parse_rules([{"type": "nope", "name": "x"}])
    with pytest.raises(ConfigError, match="'x' \\(offline\\)"):
        parse_rules([{"type": "offline", "name": "x", "after": 3}])


def test_events_are_json_ready() -> None:
    eng = AlertEngine([ThresholdRule("hot", "t", ">", 80)])
    eng.observe_metric("a", "t", 90.5, T0)
    [event] = eng.tick(T0)
    body = json.loads(json.dumps(event.to_dict()))
    assert body == {
        "event": "fired",
        "alert_id": f"hot:a:{T0}",
        "rule": "hot",
        "type": "threshold",
        "subject": "a",
        "severity": "warning",
        "at_ms": T0,
        "opened_ms": T0,
        "detail": {"metric": "t", "value": 90.5, "op": ">", "threshold": 80, "since_ms": T0},
    }


def test_only_the_metrics_a_rule_reads_are_kept_per_device() -> None:
    """A device sending 10,000 metric names costs the engine one value per metric a rule reads (issue 15, point 8)."""
    eng = AlertEngine([ThresholdRule("hot", "temp", ">", 80)])
    for i in range(10_000):
        eng.observe_metric("dev-1", f"junk_{i}", float(i), 1000)
    eng.observe_metric("dev-1", "temp", 90.0, 1000)
    assert eng._latest == {("dev-1", "temp"): 90.0}  # noqa: SLF001 -- the bound under test
