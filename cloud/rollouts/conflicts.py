"""One device, one rollout: the rule that decides which of two rollouts targeting a device owns it.

The rule: **the oldest active rollout wins** (earliest ``created_ms``; ties by id).
A rollout is active while it is draft, scheduled, running or paused. The others
skip the device with the reason ``held by rollout <id>``, visible in
``edgefleet rollout show``; to move a device to a newer release sooner, abort
(or finish) the older rollout first. Never by version: a rollout cannot take a
device away from another mid-install.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["ACTIVE", "holders"]

ACTIVE = frozenset({"draft", "scheduled", "running", "paused"})


def holders(
    rollout_id: str, created_ms: int, others: Iterable[Mapping[str, object]], devices: Iterable[str]
) -> dict[str, str]:
    """device id -> the older active rollout holding it, for each of ``devices`` another rollout owns.

    ``others`` are rows with ``id``, ``state``, ``created_ms`` and ``devices`` (the ids it targets, not skipped).
    """
    wanted = set(devices)
    out: dict[str, str] = {}
    for row in sorted(others, key=lambda r: (r["created_ms"], r["id"])):  # type: ignore[index]
        if row["id"] == rollout_id or row["state"] not in ACTIVE:
            continue
        if (row["created_ms"], row["id"]) >= (created_ms, rollout_id):  # type: ignore[operator]
            continue
        for d in set(row["devices"]) & wanted:  # type: ignore[call-overload]
            out.setdefault(d, str(row["id"]))
    return out
