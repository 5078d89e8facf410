"""Commands a device agent runs when the cloud asks (delivered through its gateway)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from common.fileio import write_atomic
from common.protocol import Command

__all__ = ["HANDLERS", "CommandLog", "run_command"]


def _ping(cmd: Command) -> tuple[str, str]:
    return "done", "pong"


def _echo(cmd: Command) -> tuple[str, str]:
    return "done", json.dumps(cmd.args, sort_keys=True)[:200]


HANDLERS: dict[str, Callable[[Command], tuple[str, str]]] = {"ping": _ping, "echo": _echo}


def run_command(cmd: Command) -> tuple[str, str]:
    """(status, detail): "done" or "failed"."""
    handler = HANDLERS.get(cmd.name)
    if handler is None:
        return "failed", f"unknown command {cmd.name!r}; this agent runs: {', '.join(sorted(HANDLERS))}"
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
