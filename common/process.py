"""What every tier's process does the same way: stop on SIGTERM/SIGINT (and end its own children), run a
callable periodically."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable

__all__ = ["Periodic", "kill_children", "stop_on_signals"]


def stop_on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (a clean shutdown); ignored where signals cannot be set (not the main thread)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread: tests drive ``stop`` themselves
            pass


def kill_children() -> int:
    """SIGKILL this process's child processes and theirs (a node's delta workers and their candidates) so that
    a stopping node does not wait for work it has given up; returns how many there were.

    Only from the main thread, where a node's CLI runs it and the process is the node; a node run in a thread
    of another program (tests run the cloud so) leaves that program's children alone, as ``stop_on_signals``
    leaves its signals.
    """
    if threading.current_thread() is not threading.main_thread():
        return 0
    import psutil  # only a stopping node pays for the import

    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    return len(children)


class Periodic:
    """Call ``fn`` now and then every ``interval_s`` on ``loop`` until ``cancel()``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_s: float, fn: Callable[[], None]) -> None:
        self.loop, self.interval_s, self.fn = loop, interval_s, fn
        self._handle: asyncio.TimerHandle | None = None
        self._run()

    def _run(self) -> None:
        self.fn()
        self._handle = self.loop.call_later(self.interval_s, self._run)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
