"""Commands held at the gateway for its devices, sans-IO: downlink store-and-forward and the site gate.

A command from the cloud is appended to the durable ``commands`` queue, then
acknowledged to the cloud as "held" and delivered whenever its device is
connected; it is finished when the device acknowledges it (a ``command`` report
goes to the cloud) or when it expires. A site-gated command (a rollout's
install, ``args["gate"] == GATE``) waits until the site's rollout releases its
device, and is not delivered after the release's deadline (the maintenance
window closed: the rollout releases it again). A device that got a released
command but could not begin before its window closed answers it ``deferred``
(``common.install_deadline``): the command stays held, its release is withdrawn,
and the rollout's next release delivers it again. ``HeldCommands`` keeps the
bookkeeping of the queue.

    relay = CommandRelay(queue, connected=sessions.peer_of)
    relay.start()                                  # unfinished commands read back from the queue
    relay.from_cloud(cmd)                          # Append (token ("command", cmd)), or "held" again
    relay.persisted(cmd, qseq, now)                # "held" to the cloud; delivered if its device is here
    relay.deliverable(device, peer, now)           # a device said Hello: its held commands
    relay.ready(device, now)                       # the held commands it may run now (DDI devices poll)
    relay.done(device, seq, status, detail, now)   # the device answered: a report, the queue acknowledged
    relay.release(device_ids, not_after_ms, now, rollout_id)   # the site's rollout opened the gate
    relay.tick(now)                                # expiry
"""

from __future__ import annotations

from collections.abc import Iterable

from common.effects import UPSTREAM, AckQueue, Append, Effect, QueueReader, Send
from common.install_deadline import DEFERRED
from common.protocol import Command, CommandAck, decode, encode
from gateway.commands import HeldCommands
from gateway.ports import Connected
from gateway.reports import COMMANDS, report
from gateway.rollout_effects import GATE

__all__ = ["CommandRelay"]


class CommandRelay:
    """``connected(device) -> peer or None`` says where a device can be reached now."""

    def __init__(self, queue: QueueReader | None, *, connected: Connected) -> None:
        self.queue = queue  # None: this gateway holds no commands
        self.connected = connected
        self.held = HeldCommands()
        # (device, rollout) -> until when (ms) its site-gated commands of that rollout may be delivered;
        # rollout "" stands for every rollout (a release that named none)
        self.released: dict[tuple[str, str], int] = {}
        self.ping_held: dict[tuple[str, int], int] = {}  # ping commands: (device, seq) -> when held here (ms)
        self.counters = {"commands_delivered": 0, "commands_expired": 0}

    def start(self) -> None:
        """Read back the commands not yet finished (after a restart)."""
        if self.queue is not None:
            items = self.queue.read(after=0, limit=1_000_000, max_bytes=1 << 30)
            self.held.load([(q, decode(p)) for q, p in items], self.queue.stats().next_seq)

    def count(self) -> int:
        return len(self.held.held)

    def _deliverable(self, cmd: Command, now: float) -> bool:
        if cmd.args.get("gate") != GATE:
            return True
        until = max(self.released.get((cmd.device_id, cmd.args.get("rollout", "")), 0),
                    self.released.get((cmd.device_id, ""), 0))
        return now * 1000 < until

    def from_cloud(self, cmd: Command) -> list[Effect]:
        """A command for a device: made durable here first (a resend of one held is acknowledged again)."""
        if self.queue is None:
            return []
        if self.held.has(cmd.device_id, cmd.seq):
            return [Send(UPSTREAM, CommandAck(cmd.device_id, cmd.seq, "held", "again"))]
        return [Append(COMMANDS, "default", [encode(cmd)], ("command", cmd))]

    def persisted(self, cmd: Command, qseq: int, now: float) -> list[Effect]:
        """``cmd`` is durable at queue sequence ``qseq``: tell the cloud, deliver it if its device is here."""
        self.held.add(qseq, cmd)
        if cmd.name == "ping":  # its answer carries this gateway's times (per-hop timing)
            self.ping_held[(cmd.device_id, cmd.seq)] = int(now * 1000)
        out: list[Effect] = [Send(UPSTREAM, CommandAck(cmd.device_id, cmd.seq, "held", ""))]
        peer = self.connected(cmd.device_id)
        if peer is not None and self._deliverable(cmd, now):
            out.append(Send(peer, cmd))
        return out

    def ready(self, device_id: str, now: float) -> list[Command]:
        """The held commands ``device_id`` may run now, oldest first (what a DDI device is offered)."""
        return [c for c in self.held.for_device(device_id) if self._deliverable(c, now)]

    def deliverable(self, device_id: str, peer: str, now: float) -> list[Effect]:
        """``device_id`` just connected on ``peer``: the held commands it may run now."""
        return [Send(peer, c) for c in self.held.for_device(device_id) if self._deliverable(c, now)]

    def release(self, device_ids: Iterable[str], not_after_ms: int, now: float, rollout_id: str = "") -> list[Effect]:
        """The site's part of rollout ``rollout_id`` lets these devices install until ``not_after_ms``: their
        gated commands of that rollout go (a command naming no rollout goes with any release; a release naming
        none releases every gated command), never another rollout's still waiting for its own stage."""
        out: list[Effect] = []
        for device_id in device_ids:
            self.released[(device_id, rollout_id)] = not_after_ms
            peer = self.connected(device_id)
            if peer is not None and now * 1000 < not_after_ms:
                out += [Send(peer, c) for c in self.held.for_device(device_id)
                        if c.args.get("gate") == GATE and rollout_id in ("", c.args.get("rollout") or rollout_id)]
        return out

    def done(self, device_id: str, seq: int, status: str, detail: str, now: float) -> list[Effect]:
        """The device answered command ``seq``: a ``command`` report for the cloud; the queue moves on.

        ``deferred`` (a late install the device did not begin): held until its rollout releases it again."""
        if status == DEFERRED:
            cmd = next((c for c in self.held.for_device(device_id) if c.seq == seq), None)
            if cmd is not None and cmd.args.get("gate") == GATE:
                self.released.pop((device_id, cmd.args.get("rollout", "")), None)
                self.released.pop((device_id, ""), None)
                return []
            status, detail = "failed", f"{DEFERRED}: {detail}"  # the cloud knows final statuses; its engine sends anew
        cmd = self.held.finish(device_id, seq)
        if cmd is None:
            return []  # a repeated acknowledgement
        self.counters["commands_delivered"] += 1
        held_ms = self.ping_held.pop((device_id, seq), None)
        if cmd.name == "ping" and held_ms is not None:
            detail = f"{detail} gateway_held_ms={held_ms} gateway_done_ms={int(now * 1000)}"
        out: list[Effect] = [report(device_id, "command", {"seq": seq, "status": status, "detail": detail}, now)]
        up_to = self.held.ackable()
        if up_to is not None:
            out.append(AckQueue(COMMANDS, "default", up_to))
        return out

    def tick(self, now: float) -> list[Effect]:
        """Commands past their expiry are reported expired and finished."""
        out: list[Effect] = []
        for cmd in self.held.expired(int(now * 1000)):
            self.counters["commands_expired"] += 1
            out.append(report(cmd.device_id, "command", {"seq": cmd.seq, "status": "expired", "detail": "expired at the gateway"}, now))
        if (up_to := self.held.ackable()) is not None:
            out.append(AckQueue(COMMANDS, "default", up_to))
        return out
