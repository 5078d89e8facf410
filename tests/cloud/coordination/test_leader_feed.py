"""The leader's feed from the store: a gateway heard by another coordinator keeps its link-down alert quiet."""

from __future__ import annotations

from cloud.alerts.service import AlertService, AlertSettings
from cloud.coordination.leader_feed import LeaderFeed

RULES = [{"type": "offline", "name": "gateway_link_down", "after_s": 10, "kind": "gateway", "severity": "critical"}]


class Rollouts:
    """The rollout service's one input the feed uses, holding what it was given."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list]] = []

    def observe_batch(self, site: str, records) -> None:
        self.batches.append((site, list(records)))


def fired(alerts: AlertService, now_ms: int) -> list[str]:
    return [e.subject for e in alerts.tick(now_ms).events if e.event == "fired"]


def test_a_gateway_seen_only_in_the_store_is_not_reported_down_and_its_batches_reach_the_rollouts() -> None:
    now = [1_000_000]
    alerts = AlertService(AlertSettings.from_config(RULES), liveness_ms=3000)
    rollouts = Rollouts()
    feed = LeaderFeed(alerts, rollouts, lambda: now[0])  # type: ignore[arg-type]
    gw = {"gateway_id": "gw-1", "last_seen_ms": now[0], "status": {"backlog.bulk": 3}, "status_ts_ms": now[0]}
    feed.gateways([gw, {"gateway_id": "gw-2", "last_seen_ms": now[0], "status": None, "status_ts_ms": None}])
    assert fired(alerts, now[0]) == []
    for step in range(1, 5):  # gw-1 keeps being heard through the store; gw-2 falls silent
        now[0] += 5_000
        feed.gateways([{**gw, "last_seen_ms": now[0]}])
    assert fired(alerts, now[0]) == ["gw-2"]
    feed.telemetry([{"device_id": "d1", "stream": "state", "seq": 4, "ts_ms": 1, "kind": "update", "values": {"v": 1},
                     "received_ms": now[0], "site_id": "site-1", "gateway_id": "gw-1"}])
    assert [(site, [r.seq for r in recs]) for site, recs in rollouts.batches] == [("site-1", [4])]
