"""No orphans: a benchmark or the demo ended by ``timeout`` (SIGTERM or SIGINT) leaves no process it started.

Every process the run starts inherits a marker in its environment (``EDGEFLEET_TEST_RUN``), so the test finds
them all in /proc (the nodes, their own children, helpers), wherever they were reparented.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from simulations.teardown import Stopped, exit_on_signals

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def marked(marker: str) -> dict[int, str]:
    """Live (not zombie) processes whose environment carries ``marker``: pid -> command line."""
    want = f"EDGEFLEET_TEST_RUN={marker}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if want not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if state != "Z":
            found[int(entry.name)] = cmdline
    return found


def run_under_timeout(argv: list[str], sig: str, seconds: int, nodes: set[str]) -> tuple[int, set[str], str]:
    """Run ``argv`` under ``timeout -s SIG SECONDS``; returns its exit code, which of ``nodes``
    (``edgefleet <node>`` processes) were seen running before the signal, and its output."""
    marker = uuid.uuid4().hex
    proc = subprocess.Popen(["timeout", "-s", sig, str(seconds), *argv], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "EDGEFLEET_TEST_RUN": marker})
    seen: set[str] = set()
    while proc.poll() is None:
        for cmd in marked(marker).values():
            seen |= {n for n in nodes if f" -m common {n} " in cmd}
        time.sleep(0.2)
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    left = marked(marker)
    for pid in left:  # do not leave them to skew the rest of the suite, whatever the verdict
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"still running after the run ended: {left}\n{out[-3000:]}"
    return proc.returncode, seen, out


def test_the_drain_benchmark_ended_by_sigterm_stops_its_cloud_and_gateway() -> None:
    code, seen, out = run_under_timeout(
        [sys.executable, "benchmarks/drain.py", "--records", "20000", "--target-seconds", "600"], "TERM", 40,
        {"cloud", "gateway"})
    assert code == 124, f"timeout did not end it (exit {code}):\n{out[-3000:]}"  # 124: timeout fired
    assert seen == {"cloud", "gateway"}, f"the fleet was not up before the signal; the test proved nothing:\n{out[-3000:]}"
    assert "SIGTERM: stopping every process this started" in out


def test_the_demo_ended_by_sigint_stops_every_node() -> None:
    code, seen, out = run_under_timeout(
        [sys.executable, "-m", "common", "demo", "--sites", "1", "--devices-per-site", "2", "--duration", "600"], "INT", 30,
        {"cloud", "gateway", "agent"})
    assert code == 124, f"timeout did not end it (exit {code}):\n{out[-3000:]}"
    assert seen == {"cloud", "gateway", "agent"}, f"the fleet was not up before the signal:\n{out[-3000:]}"


def test_a_signal_raises_stopped_in_the_main_thread_and_further_ones_wait_for_the_teardown() -> None:
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        exit_on_signals()
        with pytest.raises(Stopped) as info:
            signal.raise_signal(signal.SIGTERM)
        assert info.value.code == 128 + signal.SIGTERM and str(info.value) == "stopped by SIGTERM"
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # a second Ctrl-C does not cut the teardown short
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
