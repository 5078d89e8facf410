"""Sans-IO pieces shared by every node that connects upstream (device -> gateway, gateway -> cloud).

``Uplink`` keeps the session: HELLO until acknowledged, heartbeats, a dead peer
declared after three silent intervals, then a reconnect after an exponential,
jittered backoff. ``QueueSender`` streams a durable queue upstream in batches
with a bounded window of unacknowledged records, drops entries only on a
cumulative acknowledgement, and resends from the last acknowledgement when
acknowledgements stop coming (at-least-once; the receiver deduplicates). With
``fast_retransmit`` (the gateway's drain to the cloud, whose acknowledgement
jumps over what it stored past a gap) the third repeat of one acknowledgement
resends the batch after it alone, at once (TCP's fast retransmit), instead of
waiting for the ack timeout and sending everything after it again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from common.backoff import Backoff
from common.effects import UPSTREAM, AckQueue, Effect, Log, QueueReader, Reconnect, Send, SetTimer
from common.errors import VersionMismatch
from common.protocol import ErrorReply, Heartbeat, Hello, HelloAck, Message, negotiate

__all__ = ["DUP_ACKS", "LIVENESS", "QueueSender", "Uplink", "agreed_version", "silent_peers"]

LIVENESS = 3  # heartbeat intervals of silence before a peer is dead
DUP_ACKS = 3  # repeats of one acknowledgement that mean the batch after it was lost (fast retransmit)
HELLO_RETRY_S = 0.05  # first retry of an unanswered Hello; doubles up to the heartbeat interval


def agreed_version(peer: str, low: int, high: int) -> int | Send:
    """The server's side of HELLO: the version both speak, or the ErrorReply to send instead."""
    try:
        return negotiate(low, high)
    except VersionMismatch as exc:
        return Send(peer, ErrorReply("version", str(exc)))


def silent_peers(sessions: Mapping[str, Any], now: float, heartbeat_s: float) -> list[str]:
    """The server's side of liveness: peers whose sessions heard nothing for LIVENESS heartbeats."""
    return [p for p, s in sessions.items() if now - s.last_rx > LIVENESS * heartbeat_s]


class Uplink:
    """Session state of the one upstream link: ``connecting`` -> ``up`` -> ``waiting`` (to reconnect)."""

    def __init__(self, hello: Hello, *, heartbeat_s: float, backoff: Backoff, first_spread_s: float = 0.0) -> None:
        self.hello = hello
        # the first reconnect after losing a live server waits uniformly in [0, first_spread_s]: every
        # client of a server that died notices within one heartbeat, so without a wide first spread they
        # would all come back in the same second (later attempts follow the backoff)
        self.first_spread_s = first_spread_s
        self.heartbeat_s = heartbeat_s
        self.backoff = backoff
        self.state = "down"
        self.version = 0
        self.last_rx = 0.0
        self.hello_at = 0.0
        self.hello_gap = HELLO_RETRY_S
        self.reconnects = 0

    @property
    def up(self) -> bool:
        return self.state == "up"

    def open(self, now: float) -> list[Effect]:
        """The socket is (re)connected: say hello, and again soon if no answer comes (with CURVE the
        first Hello is often refused: the handshake has not finished when it is sent)."""
        self.state, self.last_rx, self.hello_at = "connecting", now, now
        self.hello_gap = HELLO_RETRY_S
        return [Send(UPSTREAM, self.hello), SetTimer("hello", now + self.hello_gap)]

    def retry_hello(self, now: float) -> list[Effect]:
        """The "hello" timer: while still connecting, say hello again, each time waiting twice as long."""
        if self.state != "connecting":
            return []
        self.hello_at = now
        self.hello_gap = min(self.hello_gap * 2, self.heartbeat_s)
        return [Send(UPSTREAM, self.hello), SetTimer("hello", now + self.hello_gap)]

    def received(self, msg: Message, now: float) -> bool:
        """Note liveness; True when this message brought the session up."""
        self.last_rx = now
        if isinstance(msg, HelloAck) and self.state != "up":
            self.state, self.version = "up", msg.version
            self.backoff.reset()
            return True
        return False

    def tick(self, now: float) -> list[Effect]:
        """Called every heartbeat interval."""
        if self.state == "waiting":
            return []
        if now - self.last_rx > LIVENESS * self.heartbeat_s:
            delay = self.backoff.next_delay()
            if self.backoff.attempts == 1 and self.first_spread_s:
                delay = self.backoff.rng.uniform(0.0, self.first_spread_s)
            self.state = "waiting"
            self.reconnects += 1
            return [
                Log("warning", "upstream silent: reconnecting", {"silent_s": round(now - self.last_rx, 3), "delay_s": round(delay, 3)}),
                Reconnect(delay),
            ]
        if self.state == "connecting":
            if now - self.hello_at >= self.heartbeat_s:
                self.hello_at = now
                return [Send(UPSTREAM, self.hello)]
            return []
        return [Send(UPSTREAM, Heartbeat(int(now * 1000)))]


class QueueSender:
    """Streams one stream of a durable queue upstream with a window of unacknowledged records."""

    def __init__(
        self,
        queue: str,
        stream: str,
        reader: QueueReader,
        build: Callable[[list[tuple[int, bytes]]], Message],
        *,
        batch_max: int,
        window: int,
        ack_timeout_s: float,
        batch_bytes: int = 512 * 1024,
        fast_retransmit: bool = False,
    ) -> None:
        self.queue = queue
        self.stream = stream
        self.reader = reader
        self.build = build
        self.batch_max = batch_max
        self.batch_bytes = batch_bytes
        self.window = window  # records in flight allowed; the receiver's credit can lower it to 0
        self.ack_timeout_s = ack_timeout_s
        self.acked = 0  # everything <= acked is safe upstream
        self.sent_upto = 0  # highest sequence sent since the last rewind
        self.last_progress = 0.0
        self.resends = 0
        self.fast_retransmit = fast_retransmit
        self.dup_acks = 0  # repeats of the acknowledgement ``acked`` while records are in flight
        self.retransmit = False  # the batch after ``acked`` goes again first (fast retransmit)
        self.fast_resends = 0

    def rewind(self) -> None:
        """Send again everything not yet acknowledged (new session, or acks stopped)."""
        self.sent_upto = self.acked
        self.dup_acks, self.retransmit = 0, False

    def pump(self, now: float, budget: Callable[[Message], bool] | None = None) -> list[Effect]:
        """Batches that fit the window (and ``budget``, which may refuse a batch: it waits)."""
        out: list[Effect] = []
        if self.retransmit:
            items = self.reader.read(after=self.acked, limit=min(self.batch_max, self.sent_upto - self.acked),
                                     max_bytes=self.batch_bytes, stream=self.stream)
            if items:
                msg = self.build(items)
                if budget is not None and not budget(msg):
                    return out  # under the cap: it goes first when the budget allows
                out.append(Send(UPSTREAM, msg))
                self.fast_resends += 1
            self.retransmit, self.last_progress = False, now
        while self.sent_upto - self.acked < self.window:
            limit = min(self.batch_max, self.window - (self.sent_upto - self.acked))
            items = self.reader.read(after=self.sent_upto, limit=limit, max_bytes=self.batch_bytes, stream=self.stream)
            if not items:
                break
            if self.sent_upto == self.acked and items[0][0] - 1 > self.acked:
                self.acked = self.sent_upto = items[0][0] - 1  # entries below were acknowledged (or evicted) earlier
            msg = self.build(items)
            if budget is not None and not budget(msg):
                break
            if self.sent_upto == self.acked:
                self.last_progress = now
            out.append(Send(UPSTREAM, msg))
            self.sent_upto = items[-1][0]
        return out

    def acknowledged(self, up_to: int, now: float) -> list[Effect]:
        """A cumulative acknowledgement: drop the queue up to it. The caller pumps afterwards."""
        if up_to <= self.acked:
            if self.fast_retransmit and up_to == self.acked and self.sent_upto > self.acked:
                self.dup_acks += 1
                if self.dup_acks == DUP_ACKS:  # once per acknowledgement value; the ack timeout stays the fallback
                    self.retransmit = True
            return []
        self.acked, self.dup_acks, self.retransmit = up_to, 0, False
        self.sent_upto = max(self.sent_upto, up_to)
        self.last_progress = now
        return [AckQueue(self.queue, self.stream, up_to)]

    def tick(self, now: float) -> bool:
        """True (and rewound) when no acknowledgement came for ``ack_timeout_s``: the caller pumps again."""
        if self.sent_upto > self.acked and now - self.last_progress > self.ack_timeout_s:
            self.resends += 1
            self.last_progress = now
            self.rewind()
            return True
        return False

    @property
    def idle(self) -> bool:
        """Nothing in flight and nothing more to read."""
        return self.sent_upto <= self.acked and not self.reader.read(after=self.acked, limit=1, stream=self.stream)
