"""Events and effects between the gateway's core and its site rollout runner (``gateway.site_rollouts``).

Effects (core -> driver): ``SitePlanArrived`` (a signed site plan came from the cloud),
``DeviceOutcome`` (a device's ``update`` record passed through). Events (driver -> core):
``ReleaseCommands`` (the site's engine decided these devices install now: deliver their
held, site-gated update commands), ``SiteReport`` (a device's rollout state, for the cloud,
through the critical outbox).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DeviceOutcome", "GATE", "ReleaseCommands", "SitePlanArrived", "SiteReport"]

GATE = "site"  # a command with args["gate"] == GATE waits at the gateway until its device is released


@dataclass(frozen=True, slots=True)
class SitePlanArrived:
    rollout_id: str
    blob: bytes


@dataclass(frozen=True, slots=True)
class DeviceOutcome:
    device_id: str
    values: dict[str, float | str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReleaseCommands:
    """Deliver these devices' site-gated commands of rollout ``rollout_id``, but not after ``not_after_ms``
    (the window closes). A device may hold gated commands of two rollouts (one still at a later stage):
    only the releasing rollout's go. ``rollout_id`` "" releases every gated command of the devices."""

    device_ids: tuple[str, ...]
    not_after_ms: int
    rollout_id: str = ""


@dataclass(frozen=True, slots=True)
class SiteReport:
    device_id: str
    values: dict[str, float | str] = field(default_factory=dict)
