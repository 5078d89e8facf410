"""What the report plots, sampled every ``SAMPLE_S`` of virtual time: backlogs, uplink use, rollouts, latency."""

from __future__ import annotations

from collections import Counter
from typing import Any

__all__ = ["SAMPLE_S", "Timeline"]

SAMPLE_S = 900.0


def _pct(values: list[int], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return float(s[min(len(s) - 1, int(q * len(s)))])


class Timeline:
    def __init__(self, fleet: Any) -> None:
        self.fleet = fleet
        self.hours: list[float] = []
        self.backlog: list[list[int]] = []  # per sample, per site: outbox entries
        self.uplink_use: list[list[float]] = []  # per sample, per site: share of the cap telemetry used since the last
        self.firmware_use: list[list[float]] = []  # the same for firmware crossing the WAN (the site cache's fetches)
        self.latency: list[tuple[float, float, float]] = []  # p50, p95, max seconds from sample to cloud
        self.rollouts: dict[str, list[tuple[float, dict[str, int]]]] = {}  # rid -> (hour, state counts)
        self.stages: list[tuple[float, str, int, str]] = []  # (hour, rollout, stage, state)
        self.outcomes: Counter[str] = Counter()
        self.installs = 0
        self.outages = 0
        self._bytes: dict[str, int] = {}

    def start(self) -> None:
        self.fleet.clock.call_later(SAMPLE_S, self._tick)

    def _tick(self) -> None:
        self.sample()
        if self.fleet.clock.now < self.fleet.sc.hours * 3600 + self.fleet.invariants.start:
            self.fleet.clock.call_later(SAMPLE_S, self._tick)

    def hour(self) -> float:
        return round((self.fleet.clock.now - self.fleet.invariants.start) / 3600, 3)

    def sample(self) -> None:
        f = self.fleet
        self.hours.append(self.hour())
        self.backlog.append([len(g.outbox) for g in f.gateways])
        use, fw = [], []
        for g in f.gateways:
            wan = g.firmware.wan_bytes
            fw.append((wan - self._bytes.get(g.name + "/fw", 0)) / (g.link.bandwidth_bytes_s * SAMPLE_S))
            self._bytes[g.name + "/fw"] = wan
            sent = g.core.drain.counters["uplink_bytes"]
            last = self._bytes.get(g.name, 0)
            delta = sent - last if sent >= last else sent  # a crash restarted the counter
            self._bytes[g.name] = sent
            use.append(delta / (g.link.bandwidth_bytes_s * SAMPLE_S))
        self.uplink_use.append(use)
        self.firmware_use.append(fw)
        lat = f.cloud.db.latency_ms
        self.latency.append((_pct(lat, 0.5) / 1000, _pct(lat, 0.95) / 1000, (max(lat) if lat else 0) / 1000))
        lat.clear()
        for rid, eng in f.cloud.engines.items():
            counts = Counter(r.state.value for r in eng.devices.values())
            self.rollouts.setdefault(rid, []).append((self.hours[-1], dict(counts)))

    def stage(self, rid: str, eng: Any) -> None:
        self.stages.append((self.hour(), rid, eng.stage, eng.state.value))

    def outcome(self, outcome: str) -> None:
        self.outcomes[outcome] += 1
