"""What the leader's tail hands to the leader-only services: every coordinator's batches and gateways.

With one coordinator the driver feeds the alert service and the rollout engines each batch it commits and each
gateway it hears. With N, a batch or a heartbeat reaches whichever coordinator holds the gateway's session,
so the leader feeds them from the store instead (``runtime.Coordination``'s tail): ``telemetry(rows)`` as
committed batches per (site, gateway), ``gateways(rows)`` as each gateway's liveness and newest status report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cloud.alerts.service import AlertService
from cloud.coordination.tail import batches
from cloud.rollouts.service import RolloutService
from cloud.store.batch import STATUS_KIND
from common.protocol.messages import ForwardRecord

__all__ = ["LeaderFeed"]


class LeaderFeed:
    def __init__(self, alerts: AlertService, rollouts: RolloutService, now_ms: Callable[[], int]) -> None:
        self.alerts, self.rollouts, self.now_ms = alerts, rollouts, now_ms
        self._status_seen: dict[str, int] = {}

    def telemetry(self, rows: Sequence[Mapping[str, Any]]) -> None:
        now = self.now_ms()
        for (site, gateway_id), records in batches(rows).items():
            self.alerts.observe_batch(gateway_id, records, now)
            self.rollouts.observe_batch(site, records)

    def gateways(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for r in rows:
            gateway_id = r["gateway_id"]
            self.alerts.observe_gateway(gateway_id, int(r["last_seen_ms"]))
            ts = r["status_ts_ms"]
            if ts is not None and r["status"] and self._status_seen.get(gateway_id, -1) < ts:
                self._status_seen[gateway_id] = int(ts)
                report = ForwardRecord(gateway_id, "state", 0, int(ts), STATUS_KIND, dict(r["status"]))
                self.alerts.observe_batch(gateway_id, [report], self.now_ms())
