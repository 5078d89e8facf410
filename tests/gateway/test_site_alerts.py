"""Alerts a gateway raises for its own devices while its uplink is down, on a fake clock: each rule fires and
resolves into the outbox as an ``alert`` report; nothing is reported while the cloud hears the site; the cloud
stores a site's alert once, marked raised at the site, and a resend changes nothing."""

from __future__ import annotations

import random

from cloud.store import Store
from common.effects import Append, Received, Start, TimerFired
from common.memory_queue import MemoryQueue
from common.protocol import Heartbeat, Hello, HelloAck, TelemetryBatch, TelemetryRecord, decode_record
from common.protocol.messages import ForwardRecord
from common.streams import GATEWAY_POLICIES
from gateway.core import GatewayCore
from gateway.site_alerts import SiteAlerts, site_rules

PEER = "aa01"
RULES = [
    {"type": "offline", "name": "device_offline", "after_s": 10},
    {"type": "threshold", "name": "battery_low", "metric": "battery_percent", "op": "<", "threshold": 15, "for_s": 5},
    {"type": "rate", "name": "message_rate", "window_s": 10, "factor": 4, "baseline_windows": 3, "min_baseline": 6},
    {"type": "offline", "name": "gateway_link_down", "after_s": 10, "kind": "gateway"},  # left to the cloud
    {"type": "firmware", "name": "firmware_behind", "behind": 2},  # likewise
]


def test_the_gateway_keeps_only_rules_about_its_devices() -> None:
    assert [r.name for r in site_rules(RULES)] == ["device_offline", "battery_low", "message_rate"]
    assert [r.name for r in site_rules()] == ["device_offline", "battery_low", "message_rate"]


class Site:
    """A gateway core with site alerts, one device, its clock; ``reports`` are the alert records appended."""

    def __init__(self) -> None:
        self.outbox = MemoryQueue("outbox", streams=GATEWAY_POLICIES).start()
        self.core = GatewayCore("gw-1", "site-1", self.outbox, rng=random.Random(2), heartbeat_s=1.0,
                                site_alerts=SiteAlerts("gw-1", site_rules(RULES)))
        self.now = 1_000.0
        self.seq = 0
        self.reports: list[ForwardRecord] = []
        self.run(self.core.handle(Start(), self.now))
        self.run(self.core.handle(Received(PEER, Hello("dev-1", "device", "site-1", 1, 1)), self.now))

    def run(self, effects) -> None:
        for e in effects:
            if isinstance(e, Append) and e.token == ("report", "alert"):
                self.reports += [decode_record(p) for p in e.payloads]

    def send(self, **metrics) -> None:
        self.seq += 1
        rec = TelemetryRecord(self.seq, int(self.now * 1000), "metrics", metrics)
        self.run(self.core.handle(Received(PEER, TelemetryBatch("dev-1", "bulk", self.seq - 1, [rec])), self.now))

    def seconds(self, n: int, each=lambda: None) -> None:
        for _ in range(n):
            self.now += 1.0
            each()
            self.run(self.core.handle(TimerFired("heartbeat"), self.now))

    def events(self) -> list[tuple[str, str]]:
        return [(r.values["event"], r.values["rule"]) for r in self.reports]


def test_battery_low_while_the_link_is_down_is_reported_and_so_is_its_resolution() -> None:
    site = Site()  # the cloud never answered: the uplink is down
    site.seconds(3, lambda: site.send(battery_percent=50.0))
    site.seconds(8, lambda: site.send(battery_percent=9.0))
    assert site.events() == [("fired", "battery_low")]
    [fired] = site.reports
    assert (fired.device_id, fired.stream, fired.seq) == ("dev-1", "critical", 0)
    assert fired.values["raised_at"] == "site" and fired.values["gateway"] == "gw-1"
    assert str(fired.values["id"]).startswith("site:gw-1:battery_low:dev-1:")
    site.seconds(2, lambda: site.send(battery_percent=60.0))
    assert site.events() == [("fired", "battery_low"), ("resolved", "battery_low")]


def test_a_silent_device_goes_offline_at_the_site_and_comes_back() -> None:
    site = Site()
    site.seconds(12)
    assert site.events() == [("fired", "device_offline")]
    # its session was closed meanwhile: the device says Hello again, then its heartbeats count
    site.seconds(1, lambda: site.run(site.core.handle(Received(PEER, Hello("dev-1", "device", "site-1", 1, 1)), site.now)))
    site.seconds(1, lambda: site.run(site.core.handle(Received(PEER, Heartbeat(0)), site.now)))
    assert site.events() == [("fired", "device_offline"), ("resolved", "device_offline")]


def test_a_message_flood_against_the_devices_own_baseline() -> None:
    site = Site()
    site.seconds(40, lambda: site.send(cpu_percent=1.0))
    assert site.events() == []
    site.seconds(10, lambda: [site.send(cpu_percent=1.0) for _ in range(8)])
    assert ("fired", "message_rate") in site.events()


def test_nothing_is_reported_while_the_cloud_hears_the_site() -> None:
    site = Site()
    site.run(site.core.handle(Received("", HelloAck("cloud", 1, 1000, 8000)), site.now))

    def second() -> None:
        site.run(site.core.handle(Received("", Heartbeat(0)), site.now))  # the cloud keeps talking
        site.send(battery_percent=9.0)

    site.seconds(10, second)
    assert site.core.uplink.up and site.reports == []
    # the engine kept learning meanwhile: once the link drops, the battery alert (already past its 5 s)
    # is the cloud's to announce, and the site reports only what opens while it is down
    site.seconds(5, lambda: site.send(battery_percent=9.0))
    assert site.reports == []


def test_the_cloud_stores_a_site_alert_once_and_resolves_it(tmp_path) -> None:
    site = Site()
    site.seconds(8, lambda: site.send(battery_percent=9.0))
    site.seconds(2, lambda: site.send(battery_percent=60.0))
    fired, resolved = site.reports
    with Store.open(f"sqlite:///{tmp_path / 'cloud.db'}") as store:
        store.telemetry.ingest("gw-1", "site-1", [ForwardRecord("dev-1", "bulk", 1, 1, "metrics", {})], 1)
        first = store.telemetry.ingest("gw-1", "site-1", [fired], 2_000)
        assert [r["last_event"] for r in first.site_alerts] == ["fired"]
        assert store.telemetry.ingest("gw-1", "site-1", [fired], 2_001).site_alerts == ()  # resent: nothing new
        [row] = store.alerts.list_alerts("open")
        assert row["detail"] == {"raised_at": "site", "gateway": "gw-1"} and row["subject"] == "dev-1"
        assert [r["last_event"] for r in store.telemetry.ingest("gw-1", "site-1", [resolved, fired], 3_000).site_alerts] == [
            "resolved"]
        assert store.alerts.list_alerts("open") == [] and store.alerts.list_alerts("resolved")[0]["id"] == row["id"]
