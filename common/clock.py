"""Clocks for drivers (cores never read a clock: they are handed ``now``).

``SteadyClock`` gives milliseconds that never go backwards and are not moved by
wall-clock steps (NTP corrections, an RTC reset, an operator's ``date -s``),
yet keep counting across restarts: record ages and TTLs are measured on it.

While the process runs it advances with ``time.monotonic()``. Its value is
checkpointed to a small file (with the wall time at the checkpoint); on the next
start it resumes from the checkpoint plus the downtime as the wall clock tells
it, but only if the wall clock moved forward: a wall clock that went backwards
(a step, or an RTC without battery) counts the downtime as zero rather than
making records younger or older than they are. The stated limit: downtime is
as accurate as the wall clock across the reboot, and is never negative.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from common.errors import ConfigError
from common.fileio import write_atomic

__all__ = ["SteadyClock", "wall_ms"]


def wall_ms() -> int:
    """Wall-clock milliseconds since the epoch (for timestamps people read, never for ages)."""
    return int(time.time() * 1000)


class SteadyClock:
    """Monotonic milliseconds that survive restarts; ``checkpoint()`` at least every few seconds."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._monotonic = monotonic
        self._wall = wall
        self._base_ms = 0
        self._mono0 = 0.0
        self.resumed_from_ms = 0
        self.downtime_ms = 0

    def start(self) -> SteadyClock:
        """Resume from the checkpoint file (if any)."""
        steady, wall_at = 0, None
        if self.path.exists():
            try:
                saved = json.loads(self.path.read_text())
                steady, wall_at = int(saved["steady_ms"]), int(saved["wall_ms"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"steady clock file {str(self.path)!r} is unreadable ({exc}); remove it to start from zero") from exc
        now_wall = int(self._wall() * 1000)
        self.downtime_ms = max(0, now_wall - wall_at) if wall_at is not None else 0
        self._base_ms = steady + self.downtime_ms
        self.resumed_from_ms = steady
        self._mono0 = self._monotonic()
        self.checkpoint()
        return self

    def now_ms(self) -> int:
        return self._base_ms + int((self._monotonic() - self._mono0) * 1000)

    def checkpoint(self) -> None:
        """Persist the current reading (temp file, fsync, rename)."""
        data = json.dumps({"steady_ms": self.now_ms(), "wall_ms": int(self._wall() * 1000)}).encode()
        write_atomic(self.path, data, 0o644)
