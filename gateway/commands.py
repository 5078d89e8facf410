"""Commands held at the gateway for devices that may be offline (downlink store-and-forward).

Sans-IO bookkeeping over the gateway's durable ``commands`` queue: a command is
appended when the cloud sends it, delivered whenever its device is connected,
and finished when the device acknowledges it or it expires. The queue is
acknowledged up to the longest finished prefix, so a restart re-reads every
unfinished command (a device runs each command number once, so a redelivery
after a crash is harmless).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.protocol import Command

__all__ = ["HeldCommands"]


@dataclass
class HeldCommands:
    held: dict[int, Command] = field(default_factory=dict)  # queue sequence -> command
    finished: set[int] = field(default_factory=set)  # queue sequences done or expired
    acked: int = 0  # queue acknowledged up to here

    def load(self, items: list[tuple[int, Command]], next_seq: int) -> None:
        """Unfinished commands read back from the queue at start; ``next_seq`` is the queue's next sequence."""
        self.acked = (items[0][0] if items else next_seq) - 1
        for qseq, cmd in items:
            self.held[qseq] = cmd

    def add(self, qseq: int, cmd: Command) -> None:
        self.held[qseq] = cmd

    def for_device(self, device_id: str) -> list[Command]:
        return [c for _, c in sorted(self.held.items()) if c.device_id == device_id]

    def has(self, device_id: str, seq: int) -> bool:
        return any(c.device_id == device_id and c.seq == seq for c in self.held.values())

    def finish(self, device_id: str, seq: int) -> Command | None:
        for qseq, c in self.held.items():
            if c.device_id == device_id and c.seq == seq:
                del self.held[qseq]
                self.finished.add(qseq)
                return c
        return None

    def expired(self, now_ms: int) -> list[Command]:
        gone = [(q, c) for q, c in self.held.items() if c.expires_ms <= now_ms]
        for q, _ in gone:
            del self.held[q]
            self.finished.add(q)
        return [c for _, c in gone]

    def ackable(self) -> int | None:
        """The queue sequence up to which every command is finished, if it moved."""
        up_to = self.acked
        while up_to + 1 in self.finished:
            up_to += 1
            self.finished.discard(up_to)
        if up_to == self.acked:
            return None
        self.acked = up_to
        return up_to
