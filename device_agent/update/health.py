"""Health checks for a trial boot: each answers ``HealthResult(ok, reason)``; the first failure wins.

    checks = [
        version_matches(read_running_version),
        gateway_reached(uplink_is_up, within_s=60, clock=time.monotonic, wait=event.wait),
        hook_commands([["/usr/libexec/selftest"]], timeout_s=30),
    ]
    result = run_health_checks(checks, expected_version="1.4.0", timeout_s=120)  # None: hung

``run_health_checks`` runs the checks in a worker thread and returns None if
they have not finished within ``timeout_s`` (a hang; the update core then rolls
back on its own timeout). Hook commands run with their own timeout and are
killed when it passes.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "HealthCheck",
    "HealthResult",
    "gateway_reached",
    "hook_commands",
    "run_health_checks",
    "version_matches",
]


@dataclass(frozen=True, slots=True)
class HealthResult:
    ok: bool
    reason: str = ""


class HealthCheck(Protocol):
    def __call__(self, expected_version: str) -> HealthResult: ...


def version_matches(read_version: Callable[[], str]) -> HealthCheck:
    """The running system reports the manifest's version."""

    def check(expected_version: str) -> HealthResult:
        running = read_version()
        if running != expected_version:
            return HealthResult(False, f"running version {running!r} is not the manifest's {expected_version!r}")
        return HealthResult(True)

    return check


def gateway_reached(
    reached: Callable[[], bool], *, within_s: float, clock: Callable[[], float], wait: Callable[[float], object]
) -> HealthCheck:
    """The agent reached its gateway within ``within_s`` (``reached`` polled; ``wait(s)`` blocks up to s)."""

    def check(expected_version: str) -> HealthResult:
        deadline = clock() + within_s
        while not reached():
            left = deadline - clock()
            if left <= 0:
                return HealthResult(False, f"did not reach the gateway within {within_s:g} s")
            wait(min(left, 0.5))
        return HealthResult(True)

    return check


def hook_commands(commands: Sequence[Sequence[str]], *, timeout_s: float) -> HealthCheck:
    """Each user hook command exits 0 within ``timeout_s`` (run without a shell; killed on timeout)."""

    def check(expected_version: str) -> HealthResult:
        for cmd in commands:
            name = " ".join(cmd)
            try:
                done = subprocess.run(
                    list(cmd), capture_output=True, text=True, timeout=timeout_s, check=False, stdin=subprocess.DEVNULL
                )
            except subprocess.TimeoutExpired:
                return HealthResult(False, f"hook {name!r} did not exit within {timeout_s:g} s")
            except OSError as exc:
                return HealthResult(False, f"hook {name!r} could not run: {exc}")
            if done.returncode != 0:
                tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
                return HealthResult(False, f"hook {name!r} exited with {done.returncode}: {tail[0]}".rstrip(": "))
        return HealthResult(True)

    return check


def run_health_checks(checks: Sequence[HealthCheck], expected_version: str, *, timeout_s: float) -> HealthResult | None:
    """Run the checks in order, first failure wins; None if they did not finish within ``timeout_s``."""
    box: list[HealthResult] = []

    def work() -> None:
        result = HealthResult(True)
        for check in checks:
            try:
                result = check(expected_version)
            except Exception as exc:  # a crashing check is a failed check, named
                result = HealthResult(False, f"health check {getattr(check, '__name__', check)!r} raised {exc!r}")
            if not result.ok:
                break
        box.append(result)

    worker = threading.Thread(target=work, name="update-health", daemon=True)
    worker.start()
    worker.join(timeout_s)
    return box[0] if box else None
