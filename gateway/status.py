"""The gateway's own health and inventory for the cloud, sans-IO.

Every ``status_interval_s`` the gateway's health in numbers goes to the cloud as
``GatewayStatus`` (while the cloud session is up): link, devices connected, each
outbox stream's backlog, quota, oldest age, evictions and expiries, commands held
and the ingest counters. Every ``inventory_interval_s`` the driver reads the host's
inventory (``TakeInventory`` -> ``InventoryTaken``); it is reported (an
``inventory`` report in the critical outbox) only when it changed.

    status = StatusReports("gw-1", outbox, status_interval_s=5.0, inventory_interval_s=60.0)
    status.timers(now)                                   # the first status and inventory timers
    status.values(now, link_up=..., devices_connected=..., commands_held=..., counters=...)
    status.send(values, now)                             # Send(UPSTREAM, GatewayStatus(...))
    status.inventory_due(now); status.inventory_taken(values, now)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.effects import UPSTREAM, Effect, QueueReader, Send, SetTimer, TakeInventory
from common.protocol import STREAMS
from common.protocol import GatewayStatus as GatewayStatusMessage
from gateway.reports import report

__all__ = ["STATUS_COUNTERS", "StatusReports"]

STATUS_COUNTERS = ("records_in", "refused", "throttled", "malformed", "uplink_bytes")


class StatusReports:
    def __init__(self, gateway_id: str, outbox: QueueReader, *, status_interval_s: float = 5.0,
                 inventory_interval_s: float = 0.0) -> None:
        self.gateway_id = gateway_id
        self.outbox = outbox
        self.status_interval_s = status_interval_s  # 0: no status messages
        self.inventory_interval_s = inventory_interval_s  # 0: the gateway reports no inventory of its own
        self.inventory: dict[str, Any] | None = None  # the last one reported

    def timers(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        if self.status_interval_s:
            out.append(SetTimer("status", now + self.status_interval_s))
        if self.inventory_interval_s:
            out.append(SetTimer("inventory", now))
        return out

    # -- status ------------------------------------------------------------------------

    def next_status(self, now: float) -> SetTimer:
        return SetTimer("status", now + self.status_interval_s)

    def send(self, values: dict[str, float | str], now: float) -> Send:
        return Send(UPSTREAM, GatewayStatusMessage(self.gateway_id, int(now * 1000), values))

    def values(self, now: float, *, link_up: bool, devices_connected: int, commands_held: int,
               counters: Mapping[str, int]) -> dict[str, float | str]:
        """The gateway's health in numbers (sent to the cloud as GatewayStatus)."""
        values: dict[str, float | str] = {"link": "up" if link_up else "down", "devices_connected": devices_connected}
        disk = quota = 0
        for s in STREAMS:
            st = self.outbox.stats(s)
            values[f"backlog.{s}.records"] = st.count
            values[f"backlog.{s}.bytes"] = st.size_bytes
            values[f"quota.{s}.bytes"] = st.max_bytes
            values[f"oldest_age_s.{s}"] = round(st.oldest_age_ms / 1000, 1)
            values[f"evicted.{s}"] = st.evicted
            values[f"expired.{s}"] = st.expired
            disk += st.size_bytes
            quota += st.max_bytes
        values["disk.bytes"], values["disk.quota"] = disk, quota
        values["commands_held"] = commands_held
        for k in STATUS_COUNTERS:
            values[k] = counters[k]
        return values

    # -- inventory ---------------------------------------------------------------------

    def inventory_due(self, now: float) -> list[Effect]:
        return [TakeInventory(), SetTimer("inventory", now + self.inventory_interval_s)]

    def inventory_taken(self, values: Mapping[str, Any], now: float) -> list[Effect]:
        if values == self.inventory:
            return []  # reported on change only
        self.inventory = dict(values)
        return [report(self.gateway_id, "inventory", dict(values), now)]
