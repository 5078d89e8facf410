"""A rollout's dry run, computed with no I/O from its targeted engine: who each stage takes and when each
site could start (``RolloutService.preview``, ``POST /v1/rollouts/dry-run``, the console's wizard)."""

from __future__ import annotations

from typing import Any

from common.rollouts import DeviceState, RolloutEngine, RolloutPlan
from common.rollouts.windows import SiteWindows

__all__ = ["dry_run_view"]


def dry_run_view(plan: RolloutPlan, engine: RolloutEngine, start_ms: int) -> dict[str, Any]:
    """Stages with their devices (and per site), devices left out with why, and per site the earliest time an
    install may start at or after ``start_ms`` (its maintenance window; None: no window ever opens)."""
    skipped = {r.device_id: r.reason or "skipped" for r in engine.devices.values() if r.state == DeviceState.SKIPPED}
    stages: list[dict[str, Any]] = []
    for index, name in enumerate(plan.stage_names()):
        members = sorted((r for r in engine.devices.values() if r.stage == index and r.device_id not in skipped),
                         key=lambda r: r.device_id)
        sites: dict[str, int] = {}
        for r in members:
            sites[r.site] = sites.get(r.site, 0) + 1
        stages.append({"stage": name, "devices": [r.device_id for r in members], "sites": dict(sorted(sites.items()))})
    windows = SiteWindows(plan.windows, plan.timezones)
    starts = {site: start_ms if windows.is_open(site, start_ms) else windows.next_open_ms(site, start_ms)
              for site in sorted({r.site for r in engine.devices.values()})}
    return {"release": plan.release.version, "targeted": len(engine.devices) - len(skipped), "skipped": skipped,
            "stages": stages, "starts": starts}
