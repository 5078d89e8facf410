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
from collections.abc import Callable, Mapping
from pathlib import Path

from common.fileio import write_atomic
from common.protocol import Command

__all__ = ["HANDLERS", "CommandLog", "Simulation", "run_command"]


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


class CommandLog:
    """The number of the last command run, persisted before running the next (each runs at most once)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def last(self) -> int:
        if not self.path.exists():
            return 0
        return int(json.loads(self.path.read_text())["last_command"])

    def starting(self, seq: int) -> None:
        write_atomic(self.path, json.dumps({"last_command": seq}).encode(), 0o644)
