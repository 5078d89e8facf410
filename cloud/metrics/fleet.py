"""The fleet as Prometheus sees it: one snapshot read from the store per scrape, and a collector over it.

    snap = read_fleet(store, now_ms)          # on the store thread
    FleetCollector(snap)                      # registered in a scrape's registry (``exposition``)

Gateway health comes from each gateway's newest status report (link, backlog per stream, oldest record
age, drops by rule); drops by reason from the stored gap reports; enrollments from the identities;
rollout device states from the active rollouts' device records; how far the metrics follower is behind
from the metric backlog (``MetricRecords.backlog``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cloud.fleet.views import ONLINE_WITHIN_MS
from common.protocol.messages import STREAMS

if TYPE_CHECKING:
    from cloud.store import Store

__all__ = ["FleetCollector", "read_fleet"]



def read_fleet(store: Store, now_ms: int) -> dict[str, Any]:
    """Everything the fleet's metrics show, read in a few snapshot queries (call it on the store thread)."""
    statuses = store.fleet.gateway_statuses()
    devices = store.telemetry.list_devices()
    rollouts = [r for r in store.rollouts.list_rollouts() if r["state"] not in ("completed", "aborted")]
    return {
        "now_ms": now_ms,
        "gateways": statuses,
        "gaps": store.telemetry.gap_totals(),
        "identities": [r["status"] for r in store.security.list_identities()],
        "rollouts": {r["rollout_id"]: [d["state"] for d in store.rollouts.rollout_devices(r["rollout_id"])] for r in rollouts},
        "devices": [(d["site_id"], d["last_seen_ms"], d.get("state") or "active") for d in devices],
        "open_alerts": len(store.alerts.list_alerts("open", limit=10_000)),
        "site_of": {d["device_id"]: d["site_id"] for d in devices},
        "metric_backlog": store.metrics.backlog(),
    }


class FleetCollector(Collector):
    """The metric families of one ``read_fleet`` snapshot."""

    def __init__(self, snap: dict[str, Any]) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        snap = self.snap
        now = snap["now_ms"]
        gw = ["site", "gateway"]
        link = GaugeMetricFamily("edgefleet_gateway_link_up", "1 if the gateway's uplink to the cloud is up", labels=gw)
        seen = GaugeMetricFamily("edgefleet_gateway_last_seen_seconds", "Seconds since the gateway was last heard from",
                                 labels=gw)
        backlog = GaugeMetricFamily("edgefleet_gateway_backlog_records", "Records waiting in the gateway's outbox",
                                    labels=[*gw, "stream"])
        backlog_bytes = GaugeMetricFamily("edgefleet_gateway_backlog_bytes", "Bytes waiting in the gateway's outbox",
                                          labels=[*gw, "stream"])
        oldest = GaugeMetricFamily("edgefleet_gateway_oldest_record_age_seconds",
                                   "Age of the oldest record waiting in the gateway's outbox", labels=[*gw, "stream"])
        dropped = CounterMetricFamily("edgefleet_gateway_records_dropped", "Records the gateway dropped by rule",
                                      labels=[*gw, "stream", "reason"])
        for g in snap["gateways"]:
            status, ids = g["status"] or {}, [g["site_id"], g["gateway_id"]]
            seen.add_metric(ids, max(0.0, (now - g["last_seen_ms"]) / 1000))
            if not status:
                continue
            link.add_metric(ids, 1.0 if status.get("link") == "up" else 0.0)
            for s in STREAMS:
                backlog.add_metric([*ids, s], float(status.get(f"backlog.{s}.records", 0) or 0))
                backlog_bytes.add_metric([*ids, s], float(status.get(f"backlog.{s}.bytes", 0) or 0))
                oldest.add_metric([*ids, s], float(status.get(f"oldest_age_s.{s}", 0) or 0))
                for reason in ("evicted", "expired"):
                    dropped.add_metric([*ids, s, reason], float(status.get(f"{reason}.{s}", 0) or 0))
        yield from (link, seen, backlog, backlog_bytes, oldest, dropped)

        lost = CounterMetricFamily("edgefleet_records_dropped", "Records reported dropped (gap reports) and never stored",
                                   labels=["site", "stream", "reason"])
        totals: dict[tuple[str, str, str], float] = {}
        for row in snap["gaps"]:
            key = (snap["site_of"].get(row["device_id"], ""), row["stream"], row["reason"])
            totals[key] = totals.get(key, 0.0) + float(row["count"] or 0)
        for key, value in sorted(totals.items()):
            lost.add_metric(list(key), value)
        yield lost

        devices = GaugeMetricFamily("edgefleet_devices", "Devices by site and whether they were heard from lately",
                                    labels=["site", "connectivity"])
        counts: dict[tuple[str, str], int] = {}
        for site, last_seen, state in snap["devices"]:
            if state == "retired":
                continue
            key = (site, "online" if last_seen >= now - ONLINE_WITHIN_MS else "offline")
            counts[key] = counts.get(key, 0) + 1
        for key, n in sorted(counts.items()):
            devices.add_metric(list(key), n)
        yield devices

        enrollments = GaugeMetricFamily("edgefleet_enrollments", "Device identities by enrollment status",
                                        labels=["status"])
        by_status: dict[str, int] = {}
        for status in snap["identities"]:
            by_status[status] = by_status.get(status, 0) + 1
        for status, n in sorted(by_status.items()):
            enrollments.add_metric([status], n)
        yield enrollments

        rollout = GaugeMetricFamily("edgefleet_rollout_devices", "Devices of each unfinished rollout by state",
                                    labels=["rollout", "state"])
        for rid, states in sorted(snap["rollouts"].items()):
            per: dict[str, int] = {}
            for s in states:
                per[s] = per.get(s, 0) + 1
            for s, n in sorted(per.items()):
                rollout.add_metric([rid, s], n)
        yield rollout
        yield GaugeMetricFamily("edgefleet_alerts_open", "Alerts open now", value=snap["open_alerts"])
        backlog = snap.get("metric_backlog") or {"entries": 0, "oldest_ms": None}
        yield GaugeMetricFamily("edgefleet_metrics_follower_backlog_entries",
                                "Ingest transactions whose metrics the follower has yet to fold into points and rollups",
                                value=backlog["entries"])
        lag = 0.0 if backlog["oldest_ms"] is None else max(0.0, (now - backlog["oldest_ms"]) / 1000)
        yield GaugeMetricFamily("edgefleet_metrics_follower_lag_seconds",
                                "Age of the oldest stored telemetry not yet folded into metric points and rollups", value=lag)
