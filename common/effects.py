"""The vocabulary between sans-IO cores and their drivers.

A core is fed events with ``core.handle(event, now) -> list[effect]`` and
never does I/O itself: it does not read the clock, sleep, touch a socket or
write a file. A driver (asyncio + ZeroMQ + LMDB + the system clock) or the
virtual-time simulator runs the effects and feeds the outcomes back as events.

Peers: ``UPSTREAM`` ("") is the one server a node connects to (the gateway for a
device, the cloud for a gateway); any other peer string is a client connected
to this node's server socket (its ZeroMQ routing id, hex).

Reads of a node's own durable queue go through the ``QueueReader`` port: they
are local, synchronous and deterministic. Writes are effects, because their
completion (a durable commit) arrives later as ``Persisted``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from common.errors import EdgeFleetError, ProtocolError
from common.protocol import Message

__all__ = [
    "Firmware",
    "UPSTREAM",
    "Append",
    "AckQueue",
    "Buffered",
    "CommandResult",
    "CommandsReady",
    "LoadCommands",
    "RunCommand",
    "StoreCommandStatus",
    "Effect",
    "Event",
    "InventoryTaken",
    "Log",
    "LinkUp",
    "Malformed",
    "Persisted",
    "PersistFailed",
    "QueueReader",
    "Received",
    "Reconnect",
    "Sampled",
    "Send",
    "SetTimer",
    "Start",
    "Stop",
    "Stored",
    "StoreIngest",
    "StoreTouch",
    "TakeInventory",
    "TakeSample",
    "TimerFired",
]

UPSTREAM = ""


class QueueReader(Protocol):
    """What a core may read of its durable queue (DurableQueue and MemoryQueue both fit)."""

    def read(
        self, after: int = 0, limit: int = 1000, max_bytes: int = 1 << 20, *, stream: str = "default"
    ) -> list[tuple[int, bytes]]: ...

    def stats(self, stream: str = "default") -> Any: ...


# -- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """The node starts (its queues are open)."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop producing, drain what is buffered, then the driver may exit."""


@dataclass(frozen=True, slots=True)
class Received:
    peer: str
    msg: Message


@dataclass(frozen=True, slots=True)
class Malformed:
    """A frame from ``peer`` that did not decode."""

    peer: str
    error: ProtocolError


@dataclass(frozen=True, slots=True)
class TimerFired:
    name: str


@dataclass(frozen=True, slots=True)
class LinkUp:
    """The upstream socket was (re)created after a Reconnect."""


@dataclass(frozen=True, slots=True)
class Persisted:
    token: Any
    seqs: list[int]


@dataclass(frozen=True, slots=True)
class PersistFailed:
    token: Any
    error: EdgeFleetError


@dataclass(frozen=True, slots=True)
class Sampled:
    values: dict[str, float]


@dataclass(frozen=True, slots=True)
class Stored:
    token: Any
    stored: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A command the driver ran (after RunCommand): ``status`` "done" or "failed"."""

    seq: int
    status: str
    detail: str


@dataclass(frozen=True, slots=True)
class Buffered:
    """Records were appended to the node's queue outside the core (a worker thread's report): send them."""


@dataclass(frozen=True, slots=True)
class CommandsReady:
    """Commands waiting in the cloud store, each with the gateway that serves its device."""

    commands: list[tuple[str, Any]]


@dataclass(frozen=True, slots=True)
class InventoryTaken:
    """The node's inventory now (a flat map); the core reports it only if it changed."""

    values: dict[str, Any]


Event = (
    Start | Stop | Received | Malformed | TimerFired | LinkUp | Persisted | PersistFailed | Sampled | Stored
    | CommandResult | CommandsReady | Buffered | InventoryTaken
)

# -- effects -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    peer: str
    msg: Message


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Fire ``TimerFired(name)`` at absolute time ``at``; replaces a pending timer of that name."""

    name: str
    at: float


@dataclass(frozen=True, slots=True)
class Append:
    """Durably append ``payloads`` to ``stream`` of queue ``queue``; answer with Persisted/PersistFailed(token)."""

    queue: str
    stream: str
    payloads: list[bytes]
    token: Any


@dataclass(frozen=True, slots=True)
class AckQueue:
    """Drop entries of ``stream`` up to ``up_to`` (they are safe further along)."""

    queue: str
    stream: str
    up_to: int


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Close the upstream socket, wait ``delay`` seconds, open a new one, then feed LinkUp."""

    delay: float


@dataclass(frozen=True, slots=True)
class TakeSample:
    """Read the platform's metrics; answer with Sampled."""


@dataclass(frozen=True, slots=True)
class StoreIngest:
    """Commit records to the cloud store; answer with Stored(token)."""

    token: Any
    gateway_id: str
    site: str
    records: list[Any]


@dataclass(frozen=True, slots=True)
class StoreTouch:
    """Record that a gateway was seen."""

    gateway_id: str
    site: str


@dataclass(frozen=True, slots=True)
class RunCommand:
    """Run a command on the device; persist its sequence as done first; answer with CommandResult."""

    command: Any


@dataclass(frozen=True, slots=True)
class Firmware:
    """A firmware transfer message for the tier's transfer service (``common.transfer``), which answers
    with its own sends. ``peer`` and ``node_id`` name a downstream asker (a device at the gateway, a
    gateway at the cloud); both are "" for an answer from upstream."""

    peer: str
    node_id: str
    msg: Any


@dataclass(frozen=True, slots=True)
class LoadCommands:
    """Find the queued commands for devices behind ``gateway_id``; answer with CommandsReady."""

    gateway_id: str


@dataclass(frozen=True, slots=True)
class StoreCommandStatus:
    device_id: str
    seq: int
    status: str
    detail: str


@dataclass(frozen=True, slots=True)
class Log:
    level: str
    event: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TakeInventory:
    """Read the node's inventory; answer with InventoryTaken."""


Effect = (
    Send | SetTimer | Append | AckQueue | Reconnect | TakeSample | StoreIngest | StoreTouch | RunCommand
    | LoadCommands | StoreCommandStatus | Log | TakeInventory
)
