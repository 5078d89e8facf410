"""The end-of-run invariants (from the stores and the boards), and the run's summary."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from common.rollouts import DeviceState
from common.errors import VersionError
from common.firmware.version import Version

__all__ = ["at_end", "summary"]


def _lost(fleet: Any) -> int:
    db = fleet.cloud.db
    ranges: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for device, stream, first, last, _ in db.gaps:
        ranges[(device, stream)].append((first, last))
    lost = 0
    for d in fleet.devices:
        for stream, acked in sorted(d.acked.items()):
            stored = db.keys.get((d.name, stream), set())
            if sum(1 for s in stored if s <= acked) == acked:
                continue
            for seq in range(1, acked + 1):
                if seq in stored or any(a <= seq <= b for a, b in ranges[(d.name, stream)]):
                    continue
                lost += 1
                fleet.invariants.fail("nothing_acknowledged_lost", fleet.clock.now,
                                      f"{d.name} {stream} #{seq} acknowledged by its gateway, not stored, in no gap")
    return lost


def _newer_or_same(running: str, version: str) -> bool:
    try:
        return Version(running) >= Version(version)
    except VersionError:  # an empty slot's version
        return False


def at_end(fleet: Any) -> None:
    inv, now, db = fleet.invariants, fleet.clock.now, fleet.cloud.db
    fleet.records_lost = _lost(fleet)
    if db.stored_twice():
        inv.fail("nothing_stored_twice", now, "a (device, stream, seq) stored twice")
    revoked = set(fleet.cloud.revocation_list.revoked)
    for drop in sorted(fleet.drops):
        if drop[0] not in revoked and drop not in db.gaps:
            inv.fail("every_drop_reported", now, f"{drop[0]} {drop[1]} #{drop[2]}..{drop[3]} {drop[4]}: no gap stored")
    fleet.bricked = fleet.inconsistent = 0
    for d in fleet.devices:
        why = d.board.check()
        if why.startswith(("slot", "no boot")):
            fleet.bricked += 1
            inv.fail("none_bricked", now, f"{d.name}: {why}")
        elif why:
            fleet.inconsistent += 1
            inv.fail("none_inconsistent", now, f"{d.name}: {why}")
    if not fleet.settled():
        return  # the views could not converge: not judged (the summary says drained false)
    for rid, eng in fleet.cloud.engines.items():
        version = eng.plan.release.version
        for name, rec in eng.devices.items():
            d = fleet.by_name[name]
            running = d.board.slots[d.board.active_slot()][0]
            if rec.state == DeviceState.SUCCEEDED and not _newer_or_same(running, version):
                fleet.inconsistent += 1
                inv.fail("none_inconsistent", now, f"{name}: the cloud says {version} succeeded, the device runs {running}")
            elif rec.state in (DeviceState.ROLLED_BACK, DeviceState.FAILED) and running == version:
                fleet.inconsistent += 1
                inv.fail("none_inconsistent", now, f"{name}: the cloud says {version} {rec.state.value}, the device runs it")


def summary(fleet: Any, wall_s: float, cpu_s: float, peak_rss_mb: float) -> dict[str, Any]:
    """The JSON summary: equal for two runs of one seed but ``wall_s`` and ``peak_rss_mb`` (the CPU time,
    which differs too, is ``fleet.cpu_s``: in the report and on stderr)."""
    fleet.cpu_s = round(cpu_s, 2)
    sc, inv, db, tl = fleet.sc, fleet.invariants, fleet.cloud.db, fleet.timeline
    produced = sum(max(0, q.stats(s).next_seq - 1) for d in fleet.devices for q in [d.buffer] for s in ("critical", "state", "bulk"))
    rollouts = {}
    for rid, eng in fleet.cloud.engines.items():
        states = Counter(r.state.value for r in eng.devices.values())
        rollouts[rid] = {"state": eng.state.value, "reason": eng.reason, "stage": eng.stage, **dict(sorted(states.items()))}
    out = {
        "scenario": sc.name,
        "seed": sc.seed,
        "sites": sc.sites,
        "devices": len(fleet.devices),
        "virtual_hours": round((fleet.clock.now - inv.start) / 3600, 2),
        "scenario_hours": sc.hours,
        "drained": fleet.settled(),
        "records_produced": produced,
        "records_stored": db.stored,
        "records_lost": fleet.records_lost,
        "duplicates_refused": db.duplicates,
        "gaps_stored": len(db.gaps),
        "records_dropped": sum(b - a + 1 for _, _, a, b, _ in fleet.drops),
        "updates_committed": tl.outcomes["committed"],
        "updates_rolled_back": tl.outcomes["rolled_back"],
        "updates_failed": tl.outcomes["failed"],
        "late_installs_refused": tl.outcomes["late_install_refused"],
        "installs": tl.installs,
        "bricked": fleet.bricked,
        "inconsistent": fleet.inconsistent,
        "installs_outside_window": inv.failures["installs_inside_window"],
        "installs_outside_stage": inv.failures["installs_inside_approved_stage"],
        "power_cuts": sum(d.updater.cuts for d in fleet.devices),
        "gateway_crashes": sum(g.crashes for g in fleet.gateways),
        "link_outages": tl.outages,
        "revoked_devices": len(fleet.cloud.revocation_list.revoked),
        "revoked_accepted": sum(g.accepted_from_revoked for g in fleet.gateways),
        "revoked_refused": sum(g.core.security.counters["revoked_refused"] for g in fleet.gateways if g.core.security),
        "wan_transfers": sum(fleet.wan.values()),
        "wan_transfers_max_per_release_site": max(fleet.wan.values(), default=0),
        "frames_sent": fleet.net.sent,
        "frames_lost": fleet.net.lost,
        "rollouts": rollouts,
        "invariants": {r["name"]: r["violations"] for r in inv.table()},
        "invariants_failed": inv.failed,
        "first_violations": {n: {"virtual_s": v.virtual_s, "event": v.event} for n, v in sorted(inv.first.items())},
        "wall_s": round(wall_s, 2),
        "peak_rss_mb": round(peak_rss_mb, 1),
    }
    return out
