"""The record classes (streams) and their default quotas and TTLs on devices and gateways.

``critical`` (alerts, update results, security events, gap and command reports)
is never evicted: when its quota is full new records are refused (the sender
keeps them: backpressure). ``state`` (status, inventory) and ``bulk`` (metric
samples) evict their oldest records when full. Every stream has a TTL measured
on the steady clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.protocol import STREAMS

__all__ = ["DEVICE_POLICIES", "GATEWAY_POLICIES", "STREAMS", "StreamPolicy", "quota_defaults", "scaled", "with_quotas_mb"]

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """A stream's byte quota, what happens when it is full, and how long its records may wait."""

    max_bytes: int
    evict: bool = False  # full: drop the oldest records (True) or refuse the append (False)
    ttl_ms: int = 0  # records older than this are dropped as "expired"; 0: never


DEVICE_POLICIES = {
    "critical": StreamPolicy(max_bytes=8 << 20, evict=False, ttl_ms=30 * DAY_MS),
    "state": StreamPolicy(max_bytes=8 << 20, evict=True, ttl_ms=7 * DAY_MS),
    "bulk": StreamPolicy(max_bytes=48 << 20, evict=True, ttl_ms=7 * DAY_MS),
}

GATEWAY_POLICIES = {
    "critical": StreamPolicy(max_bytes=64 << 20, evict=False, ttl_ms=30 * DAY_MS),
    "state": StreamPolicy(max_bytes=64 << 20, evict=True, ttl_ms=7 * DAY_MS),
    "bulk": StreamPolicy(max_bytes=896 << 20, evict=True, ttl_ms=7 * DAY_MS),
}


def scaled(policies: dict[str, StreamPolicy], **quota_bytes: int) -> dict[str, StreamPolicy]:
    """``policies`` with some streams' quotas replaced, e.g. ``scaled(GATEWAY_POLICIES, bulk=4 << 20)``."""
    out = dict(policies)
    for stream, max_bytes in quota_bytes.items():
        p = out[stream]
        out[stream] = StreamPolicy(max_bytes, p.evict, p.ttl_ms)
    return out


MIB = 1024 * 1024


def quota_defaults(policies: dict[str, StreamPolicy]) -> dict[str, float]:
    """Config defaults ``{stream}_quota_mb`` for each stream of ``policies``."""
    return {f"{stream}_quota_mb": p.max_bytes / MIB for stream, p in policies.items()}


def with_quotas_mb(policies: dict[str, StreamPolicy], cfg: dict[str, object]) -> dict[str, StreamPolicy]:
    """``policies`` with the quotas a config gives as ``{stream}_quota_mb`` (MiB, fractions allowed)."""
    return scaled(policies, **{s: int(float(cfg[f"{s}_quota_mb"]) * MIB) for s in policies})  # type: ignore[arg-type]
