"""Virtual time and an in-memory network with seeded latency and loss.

Nothing here reads the wall clock: ``VirtualClock.run_until`` jumps from event to
event, so an hour of fleet time takes as long as its events take to compute, and
the same seed always yields the same sequence of events.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["LinkProfile", "Network", "VirtualClock"]


class VirtualClock:
    """A heap of callbacks ordered by (time, insertion order)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._n = 0

    def call_at(self, at: float, fn: Callable[[], None]) -> None:
        self._n += 1
        heapq.heappush(self._heap, (max(at, self.now), self._n, fn))

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        self.call_at(self.now + delay, fn)

    def run_until(self, t: float, stop: Callable[[], bool] | None = None) -> None:
        while self._heap and self._heap[0][0] <= t:
            at, _, fn = heapq.heappop(self._heap)
            self.now = at
            fn()
            if stop is not None and stop():
                return
        self.now = max(self.now, t)


@dataclass(slots=True)
class LinkProfile:
    """One direction of a link: latency drawn uniformly in [min, max], a loss probability, up or down."""

    latency_min_s: float = 0.005
    latency_max_s: float = 0.050
    loss: float = 0.0
    up: bool = True


@dataclass
class Network:
    """Delivers frames between named nodes after a seeded delay, or loses them."""

    clock: VirtualClock
    rng: random.Random
    default: LinkProfile = field(default_factory=LinkProfile)
    links: dict[tuple[str, str], LinkProfile] = field(default_factory=dict)
    sent: int = 0
    lost: int = 0

    def profile(self, src: str, dst: str) -> LinkProfile:
        return self.links.get((src, dst), self.default)

    def set_link(self, a: str, b: str, profile: LinkProfile) -> None:
        """Both directions between ``a`` and ``b``."""
        self.links[(a, b)] = profile
        self.links[(b, a)] = profile

    def send(self, src: str, dst: str, deliver: Callable[[], None]) -> None:
        p = self.profile(src, dst)
        self.sent += 1
        if not p.up or self.rng.random() < p.loss:
            self.lost += 1
            return
        self.clock.call_later(self.rng.uniform(p.latency_min_s, p.latency_max_s), deliver)
