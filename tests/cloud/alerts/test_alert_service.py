"""The cloud's alert service on a fake clock: each rule fires and resolves from what the cloud hears,
devices behind a gateway that is down stay quiet, restarts adopt stored alerts, rows persist."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloud.alerts.service import DEFAULT_RULES, AlertService, AlertSettings, TickResult
from cloud.store import Store
from common.errors import ConfigError
from common.protocol.messages import ForwardRecord

T0 = 1_700_000_000_000
LIVENESS_MS = 3_000

RULES = [
    {"type": "offline", "name": "device_offline", "after_s": 10},
    {"type": "threshold", "name": "battery_low", "metric": "battery_percent", "op": "<", "threshold": 15, "for_s": 5},
    {"type": "offline", "name": "gateway_link_down", "after_s": 10, "kind": "gateway"},
    {"type": "backlog", "name": "backlog_high", "percent": 80},
    {"type": "firmware", "name": "firmware_behind", "behind": 2},
    {"type": "rate", "name": "message_rate", "window_s": 10, "factor": 4, "baseline_windows": 3, "min_baseline": 6},
]


class Fleet:
    """A service, its clock, and what it said: feed observations, ``run(seconds)`` ticks once a second."""

    def __init__(self, rules=RULES, releases=()) -> None:
        self.now = T0
        self.service = AlertService(AlertSettings.from_config(rules, releases), liveness_ms=LIVENESS_MS)
        self.seq: dict[str, int] = {}
        self.rows: list[dict] = []
        self.events: list[tuple[str, str, str]] = []  # (event, rule, subject)

    def record(self, device: str, gateway: str = "gw-1", kind: str = "metrics", **values) -> None:
        self.seq[device] = self.seq.get(device, 0) + 1
        r = ForwardRecord(device, "bulk", self.seq[device], self.now, kind, values)
        self.service.observe_batch(gateway, [r], self.now)

    def status(self, gateway: str, **values) -> None:
        status = {k.replace("_", "."): v for k, v in values.items()}
        r = ForwardRecord(gateway, "state", 0, self.now, "gateway.status", status)
        self.service.observe_batch(gateway, [r], self.now)

    def tick(self) -> TickResult:
        out = self.service.tick(self.now)
        self.rows += out.rows
        self.events += [(e.event, e.rule, e.subject) for e in out.events]
        return out

    def run(self, seconds: int, each=lambda: None) -> None:
        for _ in range(seconds):
            self.now += 1000
            each()
            self.tick()

    def fired(self) -> list[tuple[str, str]]:
        return [(rule, subject) for event, rule, subject in self.events if event == "fired"]

    def resolved(self) -> list[tuple[str, str]]:
        return [(rule, subject) for event, rule, subject in self.events if event == "resolved"]


@pytest.fixture
def fleet() -> Fleet:
    return Fleet()


def heartbeat(fleet: Fleet, *devices: str, gateway: str = "gw-1", **values) -> None:
    fleet.service.observe_gateway(gateway, fleet.now)
    for d in devices:
        fleet.record(d, gateway, **values)


# --- each rule fires and resolves -------------------------------------------------------------------


def test_device_offline_fires_after_its_silence_and_resolves_when_heard(fleet: Fleet) -> None:
    fleet.run(5, lambda: heartbeat(fleet, "d1", "d2"))
    fleet.run(12, lambda: heartbeat(fleet, "d2"))  # d1 silent; its gateway is up
    assert fleet.fired() == [("device_offline", "d1")]
    fleet.run(2, lambda: heartbeat(fleet, "d1", "d2"))
    assert fleet.resolved() == [("device_offline", "d1")]


def test_battery_low_fires_after_its_duration_and_resolves_on_a_good_value_or_when_no_longer_reported(
    fleet: Fleet,
) -> None:
    fleet.run(3, lambda: heartbeat(fleet, "d1", battery_percent=80.0))
    fleet.run(4, lambda: heartbeat(fleet, "d1", battery_percent=10.0))
    assert fleet.fired() == []  # 4 s is not yet 5
    fleet.run(2, lambda: heartbeat(fleet, "d1", battery_percent=10.0))
    assert fleet.fired() == [("battery_low", "d1")]
    fleet.run(1, lambda: heartbeat(fleet, "d1", battery_percent=60.0))
    assert fleet.resolved() == [("battery_low", "d1")]
    # a simulated battery cleared on a device without one: the metric stops being reported
    fleet.run(7, lambda: heartbeat(fleet, "d1", battery_percent=10.0))
    assert fleet.fired().count(("battery_low", "d1")) == 2
    fleet.run(1, lambda: heartbeat(fleet, "d1", cpu_percent=5.0))
    assert fleet.resolved().count(("battery_low", "d1")) == 2


def test_gateway_link_down_fires_while_its_session_is_silent_and_resolves_when_it_returns(fleet: Fleet) -> None:
    fleet.run(3, lambda: heartbeat(fleet, "d1"))
    fleet.run(11)  # the uplink is cut: no heartbeats, no batches
    assert fleet.fired() == [("gateway_link_down", "gw-1")]  # d1 is behind it: no device_offline
    fleet.run(1, lambda: heartbeat(fleet, "d1"))
    assert fleet.resolved() == [("gateway_link_down", "gw-1")]
    fleet.run(5, lambda: heartbeat(fleet, "d1"))
    assert fleet.fired() == [("gateway_link_down", "gw-1")]


def test_backlog_high_uses_the_fullest_stream_of_the_gateway_status(fleet: Fleet) -> None:
    def status(bulk: int) -> None:
        heartbeat(fleet)
        fleet.status("gw-1", backlog_critical_bytes=0, quota_critical_bytes=100, backlog_bulk_bytes=bulk,
                     quota_bulk_bytes=1000, link="up")

    fleet.run(2, lambda: status(790))
    assert fleet.fired() == []
    fleet.run(1, lambda: status(850))
    assert fleet.fired() == [("backlog_high", "gw-1")]
    assert fleet.rows[-1]["detail"] == {"used": 850, "quota": 1000, "percent": 85.0, "since_ms": fleet.now}
    fleet.run(1, lambda: status(100))
    assert fleet.resolved() == [("backlog_high", "gw-1")]


def test_firmware_behind_counts_newer_releases_in_version_order() -> None:
    fleet = Fleet(releases=["1.10.0", "1.2.0", "1.9.0", "2.0.0-rc.1"])  # sorted by version, not text
    assert fleet.service.settings.firmware_releases == ("1.2.0", "1.9.0", "1.10.0", "2.0.0-rc.1")
    fleet.run(1, lambda: heartbeat(fleet, "d1", kind="inventory", firmware_version="1.9"))  # is 1.9.0
    fleet.run(1, lambda: heartbeat(fleet, "d2", kind="inventory", firmware_version="1.10.0"))
    assert fleet.fired() == [("firmware_behind", "d1")]
    fleet.run(1, lambda: heartbeat(fleet, "d1", kind="inventory", firmware_version="2.0.0-rc.1"))
    assert fleet.resolved() == [("firmware_behind", "d1")]


def test_message_rate_anomaly_fires_on_a_flood_and_resolves_when_it_stops(fleet: Fleet) -> None:
    fleet.run(40, lambda: heartbeat(fleet, "d1"))  # one a second: a baseline of 10 per window
    assert fleet.fired() == []

    def flood() -> None:
        heartbeat(fleet)
        for _ in range(6):
            fleet.record("d1")

    fleet.run(10, flood)
    fleet.run(1, lambda: heartbeat(fleet, "d1"))
    assert fleet.fired() == [("message_rate", "d1")]
    fleet.run(10, lambda: heartbeat(fleet, "d1"))
    assert fleet.resolved() == [("message_rate", "d1")]


# --- devices behind a gateway that is down ---------------------------------------------------------


def test_devices_behind_a_silent_gateway_open_nothing_and_their_silence_restarts_when_it_returns(
    fleet: Fleet,
) -> None:
    fleet.run(3, lambda: heartbeat(fleet, "d1", "d2"))
    fleet.run(30)  # outage: far longer than device_offline's 10 s
    assert fleet.fired() == [("gateway_link_down", "gw-1")]
    fleet.run(11, lambda: heartbeat(fleet, "d1"))  # back (the first of these); d2 never speaks again
    assert fleet.fired() == [("gateway_link_down", "gw-1")]  # 10 s of silence while up is not more than 10
    fleet.run(1, lambda: heartbeat(fleet, "d1"))
    assert fleet.fired() == [("gateway_link_down", "gw-1"), ("device_offline", "d2")]


def test_a_device_silent_before_the_outage_stays_offline_through_it(fleet: Fleet) -> None:
    fleet.run(2, lambda: heartbeat(fleet, "d1", "d2"))
    fleet.run(12, lambda: heartbeat(fleet, "d1"))
    assert fleet.fired() == [("device_offline", "d2")]
    fleet.run(15)
    fleet.run(3, lambda: heartbeat(fleet, "d1"))
    assert ("device_offline", "d2") not in fleet.resolved()  # no flap: one alert, still open


def test_devices_in_maintenance_open_no_alert(fleet: Fleet) -> None:
    fleet.service.set_maintenance({"d1"})
    fleet.run(2, lambda: heartbeat(fleet, "d1", "d2"))
    fleet.run(12, lambda: heartbeat(fleet))
    assert fleet.fired() == [("device_offline", "d2")]


# --- silences, rows, restarts ----------------------------------------------------------------------


def test_a_silence_holds_the_fired_event_but_the_alert_is_persisted_open(fleet: Fleet) -> None:
    fleet.service.silence("device_offline", fleet.now + 60_000)
    fleet.service.silence("device_offline", fleet.now + 1_000)  # a shorter one does not cut it short
    fleet.run(2, lambda: heartbeat(fleet, "d1"))
    fleet.run(12, lambda: heartbeat(fleet))
    assert fleet.events == []
    [row] = fleet.rows
    assert (row["rule"], row["state"], row["last_event"]) == ("device_offline", "open", "silenced")
    fleet.run(1, lambda: heartbeat(fleet, "d1"))  # resolved while silenced: nothing was announced
    assert fleet.events == []
    assert (fleet.rows[-1]["state"], fleet.rows[-1]["last_event"]) == ("resolved", "resolved")


def test_rows_are_written_on_change_only(fleet: Fleet) -> None:
    fleet.run(2, lambda: heartbeat(fleet, "d1"))
    fleet.run(20, lambda: heartbeat(fleet))
    assert [(r["state"], r["last_event"]) for r in fleet.rows] == [("open", "fired")]
    fleet.run(1, lambda: heartbeat(fleet, "d1"))
    assert [(r["state"], r["last_event"]) for r in fleet.rows] == [("open", "fired"), ("resolved", "resolved")]
    opened, resolved = fleet.rows
    assert opened["id"] == resolved["id"] == f"device_offline:d1:{opened['opened_ms']}"
    assert resolved["resolved_ms"] == fleet.now


def test_rows_the_store_refused_are_offered_again(fleet: Fleet) -> None:
    fleet.run(2, lambda: heartbeat(fleet, "d1"))
    fleet.run(11, lambda: heartbeat(fleet))
    refused = fleet.rows[-1]
    fleet.service.persist_failed([refused])
    out = fleet.tick()
    assert [r["id"] for r in out.rows] == [refused["id"]] and out.events == []


def test_a_restart_adopts_open_alerts_and_announces_nothing_twice() -> None:
    before = Fleet()
    before.run(2, lambda: heartbeat(before, "d1", "d2"))
    before.run(12, lambda: heartbeat(before, "d2"))
    [stored] = before.rows
    # the cloud restarts; d1 is still silent, d2 speaks, and an alert for a device never heard again
    after = Fleet()
    after.now = before.now + 5_000
    ghost = {**stored, "id": "device_offline:d9:1", "subject": "d9"}
    after.service.restore([stored, ghost], [{"target": "battery_low", "until_ms": after.now + 60_000}], after.now)
    assert after.service.engine.silences == {"battery_low": after.now + 60_000}
    after.run(1, lambda: heartbeat(after, "d1", "d2"))
    after.run(20, lambda: heartbeat(after, "d2"))
    assert after.fired() == []  # d1's alert is the stored one, already announced
    assert ("resolved", "device_offline", "d9") in after.events  # not breaching since the restart
    ghost_row = next(r for r in after.rows if r["id"] == "device_offline:d9:1")
    assert ghost_row["state"] == "resolved" and "resolved_because" in ghost_row["detail"]
    after.run(1, lambda: heartbeat(after, "d1"))
    resolved = [r for r in after.rows if r["subject"] == "d1" and r["state"] == "resolved"]
    assert [r["id"] for r in resolved] == [stored["id"]]
    assert ("resolved", "device_offline", "d1") in after.events


# --- settings ------------------------------------------------------------------------------------------


def test_default_rules_cover_issue_8() -> None:
    names = {r.name for r in AlertSettings().rules}
    assert names == {r["name"] for r in DEFAULT_RULES} == {
        "device_offline", "battery_low", "gateway_link_down", "backlog_high", "firmware_behind", "message_rate",
        "ghost_device",
    }


@pytest.mark.parametrize(
    ("rules", "releases", "says"),
    [
        ([{"type": "offline", "name": "x", "after_s": 1}] * 2, (), "more than one rule"),
        ([{"type": "nope", "name": "x"}], (), "type 'nope'"),
        (None, ["1.0", "not-a-version"], "firmware_releases"),
    ],
)
def test_bad_settings_are_config_errors(rules, releases, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        AlertSettings.from_config(rules, releases)


# --- persistence round trip ---------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    yield s
    s.close()


def test_rows_round_trip_through_the_store_and_acks_survive_updates(fleet: Fleet, store: Store) -> None:
    fleet.run(2, lambda: heartbeat(fleet, "d1"))
    fleet.run(12, lambda: heartbeat(fleet))
    store.alerts.save_alerts(fleet.rows)
    [row] = store.alerts.list_alerts("open")
    assert row == {**fleet.rows[0], "acked_by": None, "acked_ms": None}
    acked = store.alerts.ack_alert(row["id"], "alice", fleet.now)
    assert (acked["acked_by"], acked["acked_ms"]) == ("alice", fleet.now)
    fleet.run(1, lambda: heartbeat(fleet, "d1"))
    store.alerts.save_alerts(fleet.rows[1:])
    assert store.alerts.list_alerts("open") == []
    [done] = store.alerts.list_alerts("resolved")
    assert (done["state"], done["acked_by"], done["resolved_ms"]) == ("resolved", "alice", fleet.now)
    store.alerts.save_alerts([{**fleet.rows[0], "last_event_ms": 1}])  # a late "open" never reopens it
    assert store.alerts.get_alert(row["id"])["state"] == "resolved"
    assert store.alerts.ack_alert("no-such-alert", "bob", fleet.now) is None
    # a restarted service reads what the store holds and picks up where it was
    restarted = AlertService(AlertSettings.from_config(RULES), liveness_ms=LIVENESS_MS)
    restarted.restore(store.alerts.list_alerts("open"), store.alerts.active_silences(fleet.now), fleet.now)
    assert restarted.tick(fleet.now) == TickResult([], [])


def test_silences_are_kept_until_they_end(store: Store) -> None:
    a = store.alerts.add_silence("battery_low", T0 + 10_000, "alice", "swap day", T0)
    b = store.alerts.add_silence("gw-1", T0 + 1_000, "bob", "", T0)
    assert a["id"] != b["id"]
    assert [s["target"] for s in store.alerts.active_silences(T0)] == ["battery_low", "gw-1"]
    assert [s["target"] for s in store.alerts.active_silences(T0 + 1_000)] == ["battery_low"]


def test_devices_in_maintenance_follow_the_lifecycle(store: Store) -> None:
    from cloud.fleet import lifecycle

    store.telemetry.ingest("gw-1", "site-a", [ForwardRecord("d1", "bulk", 1, T0, "metrics", {})], T0)
    assert store.fleet.devices_in_state("maintenance") == []
    lifecycle.set_state(store.fleet, "d1", "maintenance", "alice", "battery swap", T0)
    assert store.fleet.devices_in_state("maintenance") == ["d1"]
