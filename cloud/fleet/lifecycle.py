"""Device lifecycle: the states, the table of allowed transitions, and the one place a transition happens.

    pending --> active <--> maintenance
       |          |  \\          |
       |          v   \\         v
       +----> quarantined ----> retired (final)

``TRANSITIONS`` is the whole graph; ``check(from, to)`` is the pure step that
refuses anything not in it (``TransitionError`` naming both states and the
allowed ones). ``set_state`` is the ONLY function that changes a device's
state: the store commits the new state and its history row (who, when, from,
to, reason) in one transaction, then every hook in ``ON_TRANSITION`` runs with
that row (the integrator routes it to the audit log there) and, for a
retirement, every hook in ``ON_RETIRE`` (credential revocation goes there).

Maintenance suppresses alerts (the cloud's alert service reads the devices in
maintenance) and rollouts: a rollout asks ``eligible_for_rollout(state)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from common.errors import TransitionError

if TYPE_CHECKING:
    from cloud.fleet.ports import FleetRecords

__all__ = [
    "DEFAULT_GHOST_S",
    "FINAL_STATES",
    "ON_RETIRE",
    "ON_TRANSITION",
    "STATES",
    "TRANSITIONS",
    "check",
    "eligible_for_alerts",
    "eligible_for_rollout",
    "set_state",
]

STATES = ("pending", "active", "maintenance", "quarantined", "retired")
FINAL_STATES = frozenset({"retired"})

TRANSITIONS: Mapping[str, frozenset[str]] = {
    "pending": frozenset({"active", "quarantined", "retired"}),
    "active": frozenset({"maintenance", "quarantined", "retired"}),
    "maintenance": frozenset({"active", "quarantined", "retired"}),
    "quarantined": frozenset({"active", "maintenance", "retired"}),
    "retired": frozenset(),
}
"""state -> the states it may move to. A test proves every state reachable from pending and every
non-final state able to reach retired."""

DEFAULT_GHOST_S = 7 * 24 * 3600
"""A device not retired and silent longer than this is a ghost (``edgefleet devices ghosts``, ``ghost_after_s``)."""

Hook = Callable[[dict[str, Any]], None]
ON_TRANSITION: list[Hook] = []
"""Called with the committed history row after every transition (e.g. the audit log)."""
ON_RETIRE: list[Hook] = []
"""Called with the committed history row after a retirement (e.g. revoke the device's credentials)."""


def check(from_state: str, to_state: str, device_id: str = "") -> None:
    """Raise ``TransitionError`` unless the table allows ``from_state -> to_state``."""
    who = f"device {device_id!r}" if device_id else "a device"
    if to_state not in TRANSITIONS:
        raise TransitionError(f"{who}: {to_state!r} is not a lifecycle state (one of {', '.join(STATES)})")
    allowed = TRANSITIONS.get(from_state, frozenset())
    if to_state not in allowed:
        if from_state == to_state:
            raise TransitionError(f"{who} is already {from_state}")
        nexts = ", ".join(s for s in STATES if s in allowed) or "none: it is final"
        raise TransitionError(f"{who} cannot go from {from_state} to {to_state} (from {from_state}: {nexts})")


def eligible_for_rollout(state: str) -> bool:
    """May a rollout update a device in ``state``? Only active ones (not pending, in maintenance, quarantined
    or retired)."""
    return state == "active"


def eligible_for_alerts(state: str) -> bool:
    """Do a device's alerts open in ``state``? Not in maintenance, and not once retired."""
    return state not in ("maintenance", "retired")


def set_state(fleet: FleetRecords, device_id: str, to_state: str, by: str, reason: str, now_ms: int) -> dict[str, Any]:
    """Move ``device_id`` to ``to_state`` (validated by the table, committed with its history row), then run
    the hooks. Returns the history row (``id, device_id, from_state, to_state, by, reason, at_ms``)."""
    row = fleet.transition(
        device_id, to_state, by, reason, now_ms, check=lambda a, b: check(a, b, device_id)
    )
    for hook in ON_TRANSITION:
        hook(row)
    if to_state == "retired":
        for hook in ON_RETIRE:
            hook(row)
    return row
