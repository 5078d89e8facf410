"""What the demo and every drill do around their fleet of real processes: wait for a step, and account
for every telemetry sample once the agents are stopped.

    wait = step_waiter(missed, say)            # wait(predicate, "every device to reach the cloud") -> bool
    codes, stats, sent, summary, dropped = drain_agents(fleet, agents)
    bulk_stored(summary) + dropped == sent     # nothing lost, nothing stored twice

The demo (``simulations/demo.py``) and the drills (``*_drill.py``) import these; none of them imports
another's helpers, so the drills and the demo form no import cycle.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from simulations.fleet import ProcFleet

__all__ = ["STEP_TIMEOUT_S", "bulk_stored", "drain_agents", "dropped_reported", "step_waiter"]

STEP_TIMEOUT_S = 60.0


def step_waiter(missed: list[str], say: Callable[[str], None],
                timeout_s: float = STEP_TIMEOUT_S) -> Callable[[Callable[[], bool], str], bool]:
    """``wait(predicate, what)``: poll until true; past ``timeout_s`` note ``what`` in ``missed``, say it, and
    return False (a drill goes on and reports the miss in its summary instead of hanging)."""

    def wait(predicate: Callable[[], bool], what: str) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                missed.append(what)
                say(f"MISSED: no {what} within {timeout_s:g} s; the drill goes on")
                return False
            time.sleep(0.25)
        return True

    return wait


def dropped_reported(fleet: ProcFleet) -> int:
    """Samples dropped by rule (quota or TTL) and reported as gaps, anywhere on the way."""
    totals = fleet.api("/v1/gaps")["totals"]
    return sum(t["count"] for t in totals if t["stream"] == "bulk")


def bulk_stored(summary: dict) -> int:
    """Telemetry samples (the bulk stream) the cloud holds, each (device, seq) once."""
    return sum(d["count"] for d in summary["devices"] if d["stream"] == "bulk")


def drain_agents(fleet: ProcFleet, agents: list[str], carried: int = 0,
                 timeout_s: float = 90.0) -> tuple[dict, dict, int, dict, int]:
    """Stop the agents (each drains its buffer first), then wait until the cloud holds, or a gap report
    accounts for, every bulk sample they made (plus ``carried``, made by earlier incarnations). Returns
    ``(exit codes, agent stats, samples sent, telemetry summary, samples dropped and reported)``."""
    codes = fleet.stop(agents, timeout_s=timeout_s)
    stats = {a: fleet.agent_stats(a) for a in agents}
    sent = sum(s["produced"]["bulk"] for s in stats.values()) + carried
    deadline = time.monotonic() + timeout_s
    while (bulk_stored(summary := fleet.api("/v1/telemetry/summary")) + dropped_reported(fleet) < sent
           and time.monotonic() < deadline):
        time.sleep(0.2)
    return codes, stats, sent, summary, dropped_reported(fleet)
