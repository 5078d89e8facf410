"""The one exception tree of EdgeFleet.

    EdgeFleetError
    ├── ProtocolError          untrusted bytes that are not a valid message
    │   └── VersionMismatch    no protocol version both peers speak
    ├── QueueError             the durable queue
    │   ├── QueueFullError     an append would exceed the byte bound (backpressure)
    │   └── QueueClosedError   the queue was closed before the request ran
    ├── StoreError             the cloud store (database)
    ├── ConfigError            a config file or flag that cannot be used
    ├── QueryError             a device filter query that does not parse (has .position)
    ├── AlertNotFound          an alert id that names no alert
    ├── KeyFileError           a key file that is missing, unreadable or malformed
    └── ApiError               the operator API answered with an error

Every message names the object and the cause. Library errors are translated at
the adapter with ``raise Mapped(...) from exc``.
"""

from __future__ import annotations

__all__ = [
    "AlertNotFound",
    "ApiError",
    "ConfigError",
    "EdgeFleetError",
    "KeyFileError",
    "ProtocolError",
    "QueryError",
    "QueueClosedError",
    "QueueError",
    "QueueFullError",
    "StoreError",
    "VersionMismatch",
]


class EdgeFleetError(Exception):
    """Base of every error EdgeFleet raises on purpose."""


class ProtocolError(EdgeFleetError, ValueError):
    """Bytes from a peer that do not decode to a valid message."""

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


class VersionMismatch(ProtocolError):
    """The peer offered no protocol version this side speaks."""


class QueueError(EdgeFleetError):
    """A durable queue operation failed."""


class QueueFullError(QueueError):
    """An append would take the queue past its byte bound."""

    def __init__(self, path: str, size: int, limit: int, incoming: int) -> None:
        super().__init__(
            f"queue {path!r} is full: {size} + {incoming} bytes would exceed its bound of {limit} bytes"
        )
        self.path, self.size, self.limit, self.incoming = path, size, limit, incoming


class QueueClosedError(QueueError):
    """The queue was closed before a request could run."""


class StoreError(EdgeFleetError):
    """The cloud store failed."""


class ConfigError(EdgeFleetError, ValueError):
    """A config file or command-line value that cannot be used."""


class QueryError(EdgeFleetError, ValueError):
    """A device filter query that cannot be parsed; ``position`` is the 0-based offset of the mistake."""

    def __init__(self, query: str, position: int, cause: str) -> None:
        shown = query.replace("\n", " ").replace("\t", " ")  # one line, so the caret lines up
        caret = " " * position + "^"
        super().__init__(f"invalid query at position {position}: {cause}\n  {shown}\n  {caret}")
        self.query, self.position, self.cause = query, position, cause


class AlertNotFound(EdgeFleetError, KeyError):
    """An alert id that names no alert (open or resolved) the engine knows."""

    def __init__(self, alert_id: str) -> None:
        super().__init__(f"No alert by the id of {alert_id!r} was found")
        self.alert_id = alert_id

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class KeyFileError(EdgeFleetError):
    """A key file is missing, unreadable, malformed or too open."""


class ApiError(EdgeFleetError):
    """The operator API refused or failed a request."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
