"""The in-memory network of ``simulations.virtual`` made FIFO per direction, as a TCP connection is.

``Network`` draws each frame's latency on its own, so two frames on one link can overtake each other:
ZeroMQ over TCP never reorders a connection's frames, and a reordered ForwardBatch makes the cloud
hold its acknowledgement (it only acknowledges contiguous batches) until the sender times out and
resends. Here a frame is never delivered before the one sent before it on the same link.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from simulations.virtual import Network

__all__ = ["FifoNetwork"]


@dataclass
class FifoNetwork(Network):
    _last: dict[tuple[str, str], float] = field(default_factory=dict)

    def send(self, src: str, dst: str, deliver: Callable[[], None]) -> None:
        p = self.links.get((src, dst), self.default)
        self.sent += 1
        if not p.up or (p.loss and self.rng.random() < p.loss):
            self.lost += 1
            return
        at = self.clock.now + self.rng.uniform(p.latency_min_s, p.latency_max_s)
        key = (src, dst)
        last = self._last.get(key, 0.0)
        if at < last:
            at = last
        self._last[key] = at
        self.clock.call_at(at, deliver)
