"""Commands a device agent runs when the cloud asks (delivered through its gateway).

    ping                      "pong"
    echo                      its arguments, as JSON
    simulate METRIC=VALUE...  drills and demos: from the next sample on, METRIC reads VALUE
                              (a number); METRIC= (empty) clears it. Only on an agent started
                              with --allow-simulation; kept in memory, so a restart clears it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from common.fileio import write_atomic
from common.protocol import Command

__all__ = ["HANDLERS", "CommandLog", "RunWindow", "Simulation", "run_command"]


def _ping(cmd: Command) -> tuple[str, str]:
    return "done", "pong"


def _echo(cmd: Command) -> tuple[str, str]:
    return "done", json.dumps(cmd.args, sort_keys=True)[:200]


HANDLERS: dict[str, Callable[[Command], tuple[str, str]]] = {"ping": _ping, "echo": _echo}


_METRIC = re.compile(r"[a-z][a-z0-9_.]{0,63}")
MAX_OVERRIDES = 16


class Simulation:
    """Metric overrides the ``simulate`` command sets, for the sampler; refused unless ``enabled``."""

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled
        self.overrides: dict[str, float] = {}

    def apply(self, args: Mapping[str, str]) -> tuple[str, str]:
        """Set (``"10"``) or clear (``""``) each metric in ``args``; all or nothing."""
        if not self.enabled:
            return "failed", "simulation is disabled on this agent (start it with --allow-simulation)"
        if not args:
            return "failed", "simulate needs METRIC=VALUE arguments (an empty VALUE clears METRIC)"
        changes: dict[str, float | None] = {}
        for metric, text in args.items():
            if not _METRIC.fullmatch(metric):
                return "failed", f"simulate: {metric!r} is not a metric name (lower case, digits, _ and .)"
            if text == "":
                changes[metric] = None
                continue
            try:
                value = float(text)
            except ValueError:
                return "failed", f"simulate: {metric}={text!r} is not a number"
            if not math.isfinite(value):
                return "failed", f"simulate: {metric}={text!r} is not a finite number"
            changes[metric] = value
        kept = dict(self.overrides)
        for metric, value in changes.items():
            if value is None:
                kept.pop(metric, None)
            else:
                kept[metric] = value
        if len(kept) > MAX_OVERRIDES:
            return "failed", f"simulate: at most {MAX_OVERRIDES} metrics may be overridden at once"
        self.overrides = kept
        shown = ", ".join(f"{k}={v:g}" for k, v in sorted(kept.items())) or "none"
        return "done", f"simulating: {shown}"


def run_command(cmd: Command, simulation: Simulation | None = None) -> tuple[str, str]:
    """(status, detail): "done" or "failed". ``simulate`` uses ``simulation`` (none: disabled)."""
    if cmd.name == "simulate":
        return (simulation or Simulation(enabled=False)).apply(cmd.args)
    handler = HANDLERS.get(cmd.name)
    if handler is None:
        known = ", ".join(sorted([*HANDLERS, "simulate"]))
        return "failed", f"unknown command {cmd.name!r}; this agent runs: {known}"
    return handler(cmd)


class RunWindow:
    """Which command numbers have run, so each runs at most once, in whatever order they arrive.

    A gateway may hold one command (a rollout's, until its window) while a later-numbered one is
    delivered: both must run. So this is a sliding window (as IPsec's anti-replay window): the highest
    number run, and the numbers run within ``WINDOW`` below it; anything older counts as run. Pure.
    """

    WINDOW = 1024

    def __init__(self, high: int = 0, recent: Iterable[int] = (), floor: int | None = None) -> None:
        self.high = high
        self.floor = max(high - self.WINDOW, 0) if floor is None else floor  # numbers <= floor count as run
        self.recent = {s for s in recent if s > self.floor}

    def ran(self, seq: int) -> bool:
        return seq <= self.floor or seq in self.recent

    def add(self, seq: int) -> None:
        self.recent.add(seq)
        self.high = max(self.high, seq)
        floor = max(self.high - self.WINDOW, self.floor)
        if floor > self.floor:
            self.floor = floor
            self.recent = {s for s in self.recent if s > floor}

    def discard(self, seq: int) -> None:
        """``seq`` did not run after all (deferred: a late install); it may run when it comes again."""
        self.recent.discard(seq)

    def to_dict(self) -> dict[str, object]:
        return {"last_command": self.high, "floor": self.floor, "recent": sorted(self.recent)}

    @classmethod
    def from_dict(cls, d: dict) -> RunWindow:
        if "recent" not in d:  # the first format: one number, everything up to it ran
            return cls(int(d["last_command"]), (), floor=int(d["last_command"]))
        return cls(int(d["last_command"]), [int(s) for s in d["recent"]], floor=int(d["floor"]))


class CommandLog:
    """The run window (``RunWindow``), persisted before a command runs (each runs at most once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.window = self.load()

    def load(self) -> RunWindow:
        if not self.path.exists():
            return RunWindow()
        return RunWindow.from_dict(json.loads(self.path.read_text()))

    def starting(self, seq: int) -> None:
        self.window.add(seq)
        write_atomic(self.path, json.dumps(self.window.to_dict()).encode(), 0o644)

    def deferred(self, seq: int) -> None:
        """Command ``seq`` started but did not run (a late install): it runs when its gateway sends it again."""
        self.window.discard(seq)
        write_atomic(self.path, json.dumps(self.window.to_dict()).encode(), 0o644)
