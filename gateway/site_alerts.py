"""Alerts a gateway raises for its own devices while its uplink to the cloud is down (sans-IO).

The cloud evaluates every rule while it hears the site. When the uplink is down the
cloud hears nothing, so the gateway runs the same ``common.alerting.AlertEngine``
over what its devices send it: device offline (no session traffic), metric
thresholds for a duration (battery below 15% for 10 minutes), message-rate
anomalies. An alert that fires while the link is down becomes an ``alert`` report
(sequence 0, critical stream) in the outbox, and so does its resolution, whenever
that comes; they reach the cloud when the link returns, marked ``raised_at =
"site"`` with the gateway's id, and the cloud stores and announces them.

While the link is up the engine keeps counting what it hears (so a rate baseline
and each device's last contact are there when the link drops) but reports nothing:
the cloud does that. It decodes nothing: it reads the records the codec already checked
(``TelemetryEntries.records``), and of their values only the metrics its threshold
rules name, and those only while the link is down.

    site = SiteAlerts("gw-1", site_rules())
    site.seen(device, now_ms)                                   # any frame from a device
    site.batch(device, entries.records, now_ms, link_up)        # a telemetry batch
    effects = site.reports(now, link_up)                        # every heartbeat: alert reports (Append)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from common.alerting import AlertEngine, OfflineRule, RateRule, Rule, ThresholdRule, parse_rules
from common.effects import Effect
from common.protocol.messages import ForwardRecord
from gateway.reports import report_records

__all__ = ["ALERT_KIND", "SITE_RULES", "SiteAlerts", "site_rules"]

ALERT_KIND = "alert"
METRICS_KIND = "metrics"

SITE_RULES: tuple[dict[str, Any], ...] = (
    {"type": "offline", "name": "device_offline", "after_s": 600, "kind": "device"},
    {"type": "threshold", "name": "battery_low", "metric": "battery_percent", "op": "<", "threshold": 15,
     "for_s": 600},
    {"type": "rate", "name": "message_rate", "window_s": 300, "factor": 5},
)
"""The device rules a gateway evaluates (the cloud's defaults for devices; the gateway judges no firmware
and no backlog of its own)."""


def site_rules(rules: Iterable[Mapping[str, Any]] | None = None) -> list[Rule]:
    """The rules a gateway can evaluate: offline (devices), threshold and rate; others are left to the cloud."""
    parsed = parse_rules(SITE_RULES if rules is None else rules)
    return [r for r in parsed if isinstance(r, (ThresholdRule, RateRule)) or
            (isinstance(r, OfflineRule) and r.kind == "device")]


class SiteAlerts:
    """The gateway's own alert engine over its devices."""

    def __init__(self, gateway_id: str, rules: Iterable[Rule]) -> None:
        self.gateway_id = gateway_id
        self.engine = AlertEngine(rules)
        self.metrics = tuple(sorted(self.engine.metrics))  # the only values read from records
        self.reported: set[str] = set()  # alert ids whose "fired" went into the outbox (their resolution follows)
        self.counters = {"fired": 0, "resolved": 0}

    def seen(self, device: str, now_ms: int) -> None:
        self.engine.observe_seen(device, now_ms)

    def batch(self, device: str, records: Sequence[Sequence[Any]], now_ms: int, link_up: bool) -> None:
        """A batch of records from ``device``, as the codec checked them (``[seq, ts_ms, kind, values]``).

        Each is a message for the rate baseline. While the link is down, the metrics a threshold rule names
        are read from ``metrics`` records: only those, so a record costs a dict lookup per named metric.
        """
        engine = self.engine
        engine.observe_seen(device, now_ms)
        engine.observe_messages(device, len(records), now_ms)
        if link_up or not self.metrics:
            return  # the cloud judges the values while it hears the site
        observe = engine.observe_metric
        for r in records:
            if r[2] == METRICS_KIND:
                values = r[3]
                for metric in self.metrics:
                    value = values.get(metric)
                    if value is not None:
                        observe(device, metric, value, now_ms)

    def reports(self, now: float, link_up: bool) -> list[Effect]:
        """Every heartbeat: the ``alert`` reports to append to the critical outbox."""
        return report_records(self.tick(int(now * 1000), link_up), ALERT_KIND)

    def tick(self, now_ms: int, link_up: bool) -> list[ForwardRecord]:
        """Evaluate; the ``alert`` reports to append to the outbox (critical stream, sequence 0)."""
        out = []
        for event in self.engine.tick(now_ms):
            if event.event == "fired" and link_up:
                continue  # the cloud hears the site and raises it itself
            if event.event == "resolved" and event.alert_id not in self.reported:
                continue
            if event.event == "fired":
                self.reported.add(event.alert_id)
            else:
                self.reported.discard(event.alert_id)
            self.counters[event.event] += 1
            values: dict[str, float | str] = {
                "event": event.event, "id": f"site:{self.gateway_id}:{event.alert_id}", "rule": event.rule,
                "type": event.type, "subject": event.subject, "severity": event.severity,
                "opened_ms": event.opened_ms, "at_ms": event.at_ms, "raised_at": "site", "gateway": self.gateway_id,
            }
            out.append(ForwardRecord(event.subject, "critical", 0, now_ms, ALERT_KIND, values))
        return out
