"""A bounded tail of the agent's own log, in memory, for ``edgefleet devices logs ID --lines N``.

``LogTail`` is a ``logging.Handler`` on the root logger that keeps the last
``capacity`` formatted lines. The ``logs`` command turns the last N of them into
``log`` records in the bulk stream (one line each, cut to what a record value may
hold), so they travel through store-and-forward at bulk priority: they arrive when
the link allows and never crowd out critical traffic.
"""

from __future__ import annotations

import logging
from collections import deque

from common.logs import TextFormatter
from common.protocol.codec import MAX_STR

__all__ = ["LOG_KIND", "MAX_LINES", "LogTail"]

LOG_KIND = "log"
MAX_LINES = 1000


class LogTail(logging.Handler):
    """The last ``capacity`` log lines (text format)."""

    def __init__(self, capacity: int = MAX_LINES, node: str = "") -> None:
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=capacity)
        self.setFormatter(TextFormatter(node=node or None))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except (ValueError, TypeError):  # a record that does not format is left out, never raised
            return

    def tail(self, n: int) -> list[dict[str, object]]:
        """The last ``n`` lines as ``log`` record values: {"n": index, "line": text}, oldest first."""
        last = list(self.lines)[-n:] if n > 0 else []
        return [{"n": i, "line": line[:MAX_STR]} for i, line in enumerate(last)]
