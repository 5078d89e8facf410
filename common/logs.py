"""Structured logging for every tier, on the stdlib ``logging`` root.

``setup_logging`` installs one handler on the root logger. The ``json`` format
writes one JSON object per line::

    {"ts": "2026-05-09T07:35:25.123Z", "level": "info", "logger": "gateway.driver",
     "msg": "device up", "node": "gw-1", "device_id": "dev-7"}

``ts`` is ISO-8601 in UTC (millisecond precision), and every ``extra={...}`` field
a caller passes follows the fixed keys. An extra that would shadow a fixed key
(``ts``, ``level``, ``logger``, ``node``) is kept under ``extra_<key>``; values JSON
cannot hold are written as ``str(value)``. Exceptions go in ``exc`` (and a stack in
``stack``), inside the same line. The ``text`` format is the same content for a
human: ``ts LEVEL logger [node] msg key=value ...``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

from common.errors import ConfigError

__all__ = ["FORMATS", "LEVELS", "JsonFormatter", "TextFormatter", "setup_logging"]

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FORMATS = ("json", "text")
_FIXED = ("ts", "level", "logger", "msg", "node")
# every attribute a bare LogRecord has; anything else on a record came from ``extra=``
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    out = {}
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRS and not key.startswith("_"):
            out[f"extra_{key}" if key in _FIXED else key] = value
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def __init__(self, node: str | None = None) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "node": self.node,
        }
        doc.update(_extras(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    """A readable line: ``ts LEVEL logger [node] msg key=value ...`` (then any traceback)."""

    def __init__(self, node: str | None = None) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record.created), f"{record.levelname:<8}", record.name]
        if self.node is not None:
            parts.append(f"[{self.node}]")
        parts.append(record.getMessage())
        parts += [f"{k}={json.dumps(v, default=str)}" for k, v in _extras(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class _Handler(logging.StreamHandler):
    """Marks the handler ``setup_logging`` owns, so a second call replaces it and leaves others alone."""


def setup_logging(
    level: str = "info",
    fmt: str = "json",
    stream: TextIO | None = None,
    node: str | None = None,
) -> logging.Handler:
    """Configure the root logger; ``stream`` defaults to ``sys.stderr`` as it is at call time.

    Calling it again replaces the handler it installed before (handlers added by
    anyone else stay). Returns the installed handler.
    """
    try:
        numeric = LEVELS[level.lower()]
    except (KeyError, AttributeError):
        raise ConfigError(f"log level {level!r} is not one of {', '.join(LEVELS)}") from None
    if fmt not in FORMATS:
        raise ConfigError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    handler = _Handler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter(node) if fmt == "json" else TextFormatter(node))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    return handler
