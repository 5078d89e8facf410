"""Site plans of coordinated rollouts for a gateway whose session is on a follower.

The leader signs each site's plan (``cloud.rollouts.service.send_plans``) and sends it to the site's gateways
it holds; for the others it wakes their coordinators (``NOTIFY edgefleet_plans``). A follower, so woken or
when one of its gateways says Hello, loads the rollouts as the leader last stored them (its engines stay
passive: only the leader ticks and feeds them) and sends that gateway the newest plan of each, signed with
the shared rollout key. A gateway keeps the newest plan by its sequence (time based), so a plan sent twice or
late changes nothing.
"""

from __future__ import annotations

import asyncio

from cloud.coordination.postgres import PLANS_CHANNEL
from cloud.rollouts.service import RolloutService

__all__ = ["PLANS_CHANNEL", "send_site_plans"]


async def send_site_plans(rollouts: RolloutService, gateway_id: str) -> int:
    """Restore the stored engines (passively) and send ``gateway_id`` each coordinated rollout's plan."""
    rollouts.engines.clear()
    await rollouts.restore()
    sent = await asyncio.gather(*(rollouts.send_plans(rid, only_gateway=gateway_id)
                                  for rid, engine in list(rollouts.engines.items()) if not engine.execute))
    return sum(sent)
