"""The gateway's upstream side, sans-IO: the session to the cloud and the outbox drained over it.

Each outbox stream is streamed to the cloud (critical first, then state, then
bulk) and entries are dropped only when the cloud acknowledges that they are
committed. An optional token bucket caps the uplink's byte rate, and optional
link windows (cron + duration) confine state and bulk traffic to the hours a
metered link may be used; critical traffic is never held back by a window.

    drain = UplinkDrain("gw-1", "site-1", outbox, rng=random.Random())
    drain.open(now)                      # Hello (and again until answered)
    if drain.session(msg, now): ...      # this message brought the cloud session up (senders rewound)
    drain.drain(now)                     # ForwardBatch sends the windows, the cap and the link allow
    drain.acknowledged(stream, up_to, now)   # AckQueue, then more sends
    drain.tick(now)                      # every heartbeat: liveness, resends after an ack timeout
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from common.backoff import Backoff
from common.effects import Effect, QueueReader, SetTimer
from common.protocol import STREAMS, SUPPORTED_VERSIONS, ForwardBatch, Hello, Message, pack_entries
from common.shaping import LinkWindows, TokenBucket
from common.uplink import QueueSender, Uplink
from gateway.reports import OUTBOX

__all__ = ["CAPPED_BATCH_SHARE", "FRAME_OVERHEAD", "UplinkDrain"]

FRAME_OVERHEAD = 64  # bytes of a ForwardBatch beyond its blob, for the byte-rate cap
CAPPED_BATCH_SHARE = 0.01  # under a cap, a batch is at most this share of a second's bytes


class UplinkDrain:
    """The cloud session (``uplink``) and one ``QueueSender`` per outbox stream (``senders``)."""

    def __init__(
        self,
        gateway_id: str,
        site: str,
        outbox: QueueReader,
        *,
        rng: random.Random,
        heartbeat_s: float = 1.0,
        ack_timeout_s: float = 5.0,
        batch_max: int = 1000,
        window: int = 8000,
        bucket: TokenBucket | None = None,
        link_windows: LinkWindows | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        self.site = site
        self.bucket = bucket
        self.link_windows = link_windows
        self.batch_max = batch_max
        self.record_cost = 64.0  # compressed bytes a forwarded record costs (a running average)
        self.counters = {"uplink_bytes": 0}
        self.uplink = Uplink(
            Hello(gateway_id, "gateway", site, *SUPPORTED_VERSIONS),
            heartbeat_s=heartbeat_s,
            # an uplink back from an outage is tried again within 10 s; the first try after losing the
            # cloud is spread over 2 s so a cloud restart does not meet every gateway at once
            backoff=Backoff(initial_s=0.5, max_s=10.0, multiplier=2.0, rng=rng),
            first_spread_s=2.0,
        )
        self.senders = {
            s: QueueSender(OUTBOX, s, outbox, self._builder(s), batch_max=batch_max, window=window, ack_timeout_s=ack_timeout_s,
                           fast_retransmit=True)  # the cloud's ack jumps over what it stored past a gap
            for s in STREAMS
        }

    def _builder(self, stream: str):  # noqa: ANN202
        def build(items: list[tuple[int, bytes]]) -> ForwardBatch:
            base = self.senders[stream].acked
            blob = pack_entries([p for _, p in items])
            return ForwardBatch(self.gateway_id, self.site, stream, base, items[0][0], items[-1][0], blob)

        return build

    @property
    def up(self) -> bool:
        return self.uplink.up

    # -- the session -------------------------------------------------------------------

    def open(self, now: float) -> list[Effect]:
        """The link is (re)connected, or the cloud asked for Hello first: say Hello."""
        return self.uplink.open(now)

    def retry_hello(self, now: float) -> list[Effect]:
        return self.uplink.retry_hello(now)

    def session(self, msg: Message, now: float) -> bool:
        """Any message from the cloud (liveness); True when it brought the session up: everything
        not yet acknowledged is sent again, so the caller drains."""
        if not self.uplink.received(msg, now):
            return False
        for snd in self.senders.values():
            snd.rewind()
        return True

    def acknowledged(self, stream: str, up_to: int, now: float) -> list[Effect]:
        """The cloud committed ``stream`` up to ``up_to``: drop it from the outbox, send more."""
        snd = self.senders.get(stream)
        if snd is None:
            return []
        return [*snd.acknowledged(up_to, now), *self.drain(now)]

    def tick(self, now: float) -> list[Effect]:
        """Every heartbeat: the session's liveness; streams with no acknowledgement for a while are resent."""
        out = self.uplink.tick(now)
        if self.uplink.up and any([snd.tick(now) for snd in self.senders.values()]):  # noqa: C419 - tick every one
            out += self.drain(now)
        return out

    # -- the drain ---------------------------------------------------------------------

    def drain(self, now: float) -> list[Effect]:
        """Send what the windows, the byte-rate cap and the link allow, critical first."""
        if not self.uplink.up:
            return []
        out: list[Effect] = []
        at = datetime.fromtimestamp(now, UTC)
        window_open = self.link_windows is None or self.link_windows.is_open(at)
        capped = False

        def budget(msg: ForwardBatch) -> bool:
            nonlocal capped
            cost = len(msg.blob) + FRAME_OVERHEAD
            if self.bucket is not None and not self.bucket.take(cost, now):
                capped = True
                return False
            self.counters["uplink_bytes"] += cost
            # what a record costs on the wire, compressed: sizes the next batches under a cap
            self.record_cost += 0.2 * (cost / (msg.last - msg.first + 1) - self.record_cost)
            return True

        if self.bucket is not None:
            # Under a byte-rate cap a batch is a small slice of a second of link time, so the cap holds
            # within every second (not one batch over it) and the drain timer keeps the link busy.
            per_batch = max(10, int(self.bucket.rate * CAPPED_BATCH_SHARE / self.record_cost))
            for snd in self.senders.values():
                snd.batch_max = min(self.batch_max, per_batch)
        for stream, snd in self.senders.items():
            if stream != "critical" and not window_open:
                continue
            out += snd.pump(now, budget)
            if capped:
                break
        if capped and self.bucket is not None:
            next_cost = int(self.senders["bulk"].batch_max * self.record_cost) + FRAME_OVERHEAD
            out.append(SetTimer("drain", now + max(self.bucket.wait_time(next_cost, now), 0.005)))
        elif not window_open and self.link_windows is not None:
            nxt = self.link_windows.next_open(at)
            if nxt is not None:
                out.append(SetTimer("drain", nxt.timestamp()))
        return out
