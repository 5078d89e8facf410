"""The gateway core's side of site rollouts, sans-IO: what passes between the cloud, the devices and the
site's rollout runner (``gateway.site_rollouts``, run by the driver).

Signed site plans from the cloud go to the runner (``SitePlanArrived``); the
outcome of each ``update`` record a device sends on its critical stream goes to
it too (``DeviceOutcome``, read from the records the codec checked: nothing is
decoded again); the states it reports (``SiteReport``) go to the cloud as
``rollout`` reports via the critical outbox. Its releases of site-gated commands
are the command relay's (``gateway.command_relay``). Off (``enabled=False``), it
passes nothing: plans are ignored and records are not looked at.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common.effects import Effect
from common.protocol import SitePlanEnvelope
from gateway.reports import report
from gateway.rollout_effects import DeviceOutcome, SitePlanArrived, SiteReport

__all__ = ["UPDATE_KIND", "RolloutRelay"]

UPDATE_KIND = "update"  # the record kind an agent reports an update's outcome with


class RolloutRelay:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def plan(self, msg: SitePlanEnvelope) -> list[Effect]:
        return [SitePlanArrived(msg.rollout_id, msg.blob)] if self.enabled else []

    def outcomes(self, device_id: str, stream: str, records: Sequence[Sequence[Any]]) -> list[Effect]:
        """The update outcomes among records taken from ``device_id`` (``[seq, ts_ms, kind, values]``)."""
        if not self.enabled or stream != "critical":
            return []
        return [DeviceOutcome(device_id, dict(r[3])) for r in records if r[2] == UPDATE_KIND]

    def report(self, event: SiteReport, now: float) -> list[Effect]:
        return [report(event.device_id, "rollout", dict(event.values), now)]
