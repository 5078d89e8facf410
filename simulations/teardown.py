"""No orphans: a benchmark, a drill or the demo stops every process it started when it is told to stop.

Those scripts start nodes with ``ProcFleet`` (and helpers of their own with
``subprocess``) and stop them in a ``finally``. Two things defeat that:

- SIGTERM's default action ends Python at once: no ``finally`` runs, and neither
  does ``atexit``. ``timeout``, a CI job's cancel and ``kill`` all send SIGTERM.
- ``ProcFleet`` starts each node in a session of its own (so that killing a node
  takes its own children, e.g. the cloud's delta workers, with it), so a signal
  sent to the script's process group never reaches the nodes.

``exit_on_signals()`` (call it once, in the main thread, before starting anything)
turns SIGTERM, SIGINT and SIGHUP into ``Stopped``, a ``SystemExit`` with the
shell's code ``128 + signal``, raised in the main thread wherever it is, so every
``finally`` and ``with`` block unwinds and stops what it started. Further signals
are ignored while that runs, so a second Ctrl-C does not cut the teardown short.
``stop_at_exit(proc)`` is the backstop for anything a ``finally`` missed: at
interpreter exit it kills the process's group (``atexit`` runs after the
``SystemExit``).

    def main() -> int:
        exit_on_signals()
        fleet = ProcFleet(root)
        try:
            ...
        finally:
            fleet.kill_all()
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
import weakref

__all__ = ["Stopped", "exit_on_signals", "spin_cores", "stop_at_exit"]

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_at_exit: weakref.WeakSet[subprocess.Popen] = weakref.WeakSet()


class Stopped(SystemExit):
    """The script was told to stop by a signal; ``code`` is ``128 + signal``, as a shell reports it."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}"


def exit_on_signals() -> None:
    """SIGTERM, SIGINT and SIGHUP raise ``Stopped`` in the main thread (call from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("exit_on_signals() must be called from the main thread")

    def handler(signum: int, _frame: object) -> None:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # the teardown runs once, undisturbed
        print(f"{signal.Signals(signum).name}: stopping every process this started", file=sys.stderr, flush=True)
        raise Stopped(signum)

    for sig in SIGNALS:
        signal.signal(sig, handler)


def stop_at_exit(proc: subprocess.Popen) -> subprocess.Popen:
    """Kill ``proc`` (its process group if it leads one) at interpreter exit if it is still running."""
    _at_exit.add(proc)
    return proc


def spin_cores(n: int) -> list[subprocess.Popen]:
    """``n`` processes that each keep one core busy (a Python busy loop at normal priority) until killed:
    the benchmarks' ``--busy`` load, the same on every machine. They die with this process: killed at
    exit, and each also exits once its parent is gone."""
    code = "import os\nppid = os.getppid()\nwhile os.getppid() == ppid:\n    for _ in range(100_000): pass\n"
    return [stop_at_exit(subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)) for _ in range(n)]


def _kill_leftovers() -> None:
    for proc in list(_at_exit):
        if proc.poll() is not None:
            continue
        try:
            if os.getpgid(proc.pid) == proc.pid:  # it leads its own group: take its children too
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


atexit.register(_kill_leftovers)
