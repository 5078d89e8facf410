"""The cloud: the real ``CloudCore`` over an in-memory store, the rollout coordinator and revocations.

The store keeps what the invariants need: the (device, stream, sequence) keys stored (a second
store of one is refused and counted), the gaps reported, the commands queued for each device and
their status. Rollouts run as in ``cloud.rollouts.service`` with site autonomy: a coordinator
``RolloutEngine`` (``execute=False``) decides stages; every install is an ``update`` command made at
the start and held, site-gated, at the device's gateway; each site gets its part as an Ed25519-signed
site plan (``SitePlanEnvelope``) whenever the stage or the state changes and at each gateway session
start, and reports device states back as ``rollout`` reports, which the coordinator takes in.
Revocations: the next signed list version is fed to the core (``RevocationsChanged``), which pushes it
to every gateway session and again at each Hello.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any

from common.effects import CommandsReady, LoadCommands, Log, Send, SetTimer, StoreCommandStatus, Stored, StoreIngest, StoreTouch
from common.protocol import Command, ForwardRecord, SitePlanEnvelope
from common.revocation import RevocationList, sign_revocation_list
from common.rollouts import Control, DeviceEvent, DeviceInfo, DeviceReport, DeviceState, Persist, ReleaseInfo, RolloutEngine, RolloutPlan, RolloutState, Threshold, Tick
from common.rollouts.siteplan import SitePlan, sign_site_plan, site_share
from common.rollouts.windows import install_deadline_args
from common.security_events import RevocationsChanged
from simulations.nodes import COMMIT_DELAY_S, SimNode

__all__ = ["CloudNode", "FleetStore"]

_PLAIN = frozenset({Send, SetTimer})

TTL_MS = 30 * 86_400_000
TICK_S = 300.0


class FleetStore:
    """The cloud store's in-memory twin, reduced to what a 10,000-device run checks."""

    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], set[int]] = defaultdict(set)
        self.gaps: set[tuple[str, str, int, int, str]] = set()
        self.stored = self.duplicates = self.reports = 0
        self.latency_ms: list[int] = []  # sample to cloud, for the records stored in the current bucket
        self.commands: dict[str, list[Command]] = defaultdict(list)  # site -> queued
        self.command_status: dict[tuple[str, int], str] = {}

    def ingest(self, records: list[ForwardRecord], now_ms: int) -> tuple[int, int]:
        stored = dups = 0
        for r in records:
            if r.kind == "gap":
                v = r.values
                self.gaps.add((r.device_id, str(v.get("stream")), int(v.get("first", 0)), int(v.get("last", 0)), str(v.get("reason"))))
            if r.seq == 0:
                self.reports += 1
                continue
            seen = self.keys[(r.device_id, r.stream)]
            if r.seq in seen:
                dups += 1
                continue
            seen.add(r.seq)
            stored += 1
            self.latency_ms.append(now_ms - r.ts_ms)
        self.stored += stored
        self.duplicates += dups
        return stored, dups

    def stored_twice(self) -> int:
        """Rows counted as stored beyond the distinct keys held: the twin refuses a second copy as the real
        store's primary key does, and this says whether any was counted as stored anyway."""
        return self.stored - sum(len(s) for s in self.keys.values())


class CloudNode(SimNode):
    def __init__(self, core: Any, *, fleet: Any) -> None:
        super().__init__("cloud", core, fleet.clock, fleet.net)
        self.fleet = fleet
        self.db = FleetStore()
        self.engines: dict[str, RolloutEngine] = {}
        self.plan_seq = 0
        self.sent_head: dict[str, tuple[int, str]] = {}
        self.command_seq: dict[str, int] = defaultdict(int)
        self.revocation_list = RevocationList(0)
        self.device_site: dict[str, str] = {}

    # -- store effects ----------------------------------------------------------------

    def _do(self, effect: Any) -> None:
        if type(effect) in _PLAIN:  # the common effects, straight to the shared runner
            SimNode._do(self, effect)
            return
        match effect:
            case StoreIngest(token, _, site, records):
                stored, dups = self.db.ingest(records, int(self.clock.now * 1000))
                self._rollout_reports(records)
                self.clock.call_later(COMMIT_DELAY_S, lambda: self.feed(Stored(token, stored, dups)))
            case LoadCommands(gateway_id):
                site = gateway_id.removeprefix("gw-")
                ready = [(gateway_id, c) for c in self.db.commands[site] if self.db.command_status.get((c.device_id, c.seq)) == "queued"]
                if ready:
                    self.clock.call_later(COMMIT_DELAY_S, lambda: self.feed(CommandsReady(ready)))
            case StoreCommandStatus(device_id, seq, status, _):
                self.db.command_status[(device_id, seq)] = status
            case StoreTouch():
                pass
            case Log("info", "gateway session up", fields):
                self.send_plans(only_site=str(fields.get("site")))
            case Log():
                pass
            case _:
                super()._do(effect)

    # -- rollouts ---------------------------------------------------------------------

    def start_rollout(self, version: str, devices: list[DeviceInfo]) -> str:
        sc = self.fleet.sc
        rid = f"rollout-{version}"
        total = len(devices)
        sites = sorted({d.site for d in devices})
        plan = RolloutPlan(
            release=ReleaseInfo(version), canary=max(1, min(sc.canary, total)), waves=sc.waves, soak_s=sc.soak_s,
            success=Threshold(percent=90), failure=Threshold(percent=sc.failure_percent), min_sample=max(1, min(sc.canary, total)),
            max_installing_per_site=25, max_starts_per_minute=max(60, total // 20),
            windows={s: sc.maintenance for s in sites}, timezones=dict.fromkeys(sites, "UTC"),
            timeout_s=3 * 3600, max_retries=2, backoff_s=600, heartbeat_s=0, site_autonomy=True,
        )
        eng = RolloutEngine(rid, plan, execute=False)
        eng.target(devices)
        self.engines[rid] = eng
        now_ms = int(self.clock.now * 1000)
        for d in devices:  # every install made now, held and site-gated at the gateway
            if eng.devices[d.device_id].state == DeviceState.SKIPPED:
                continue
            self.command_seq[d.device_id] += 1
            args = {"version": version, "gate": "site", "rollout": rid,
                    **install_deadline_args(plan.windows, plan.timezones, d.site)}  # the device's install deadline
            cmd = Command(d.device_id, self.command_seq[d.device_id], "update", args, now_ms + TTL_MS)
            self.db.commands[d.site].append(cmd)
            self.db.command_status[(d.device_id, cmd.seq)] = "queued"
        for s in sites:  # pushed to gateways whose session is up now; the others get them at their Hello
            gw = f"gw-{s}"
            if self.core.peer_of(gw) is not None:
                self._do(LoadCommands(gw))
        self._effects(rid, eng.handle(Control("start"), now_ms))
        self.clock.call_later(TICK_S, lambda: self._tick(rid))
        return rid

    def _tick(self, rid: str) -> None:
        eng = self.engines[rid]
        self._effects(rid, eng.handle(Tick(), int(self.clock.now * 1000)))
        if eng.state in (RolloutState.RUNNING, RolloutState.SCHEDULED, RolloutState.PAUSED):
            self.clock.call_later(TICK_S, lambda: self._tick(rid))

    def _rollout_reports(self, records: list[ForwardRecord]) -> None:
        by_rollout: dict[str, list[object]] = defaultdict(list)
        for r in records:
            if r.seq == 0 and r.kind == "rollout":
                try:
                    state = DeviceState(str(r.values.get("state")))
                except ValueError:
                    continue
                by_rollout[str(r.values.get("rollout"))].append(DeviceReport(r.device_id, DeviceEvent.COMMIT, str(r.values.get("reason", "")), state))
        for rid, events in by_rollout.items():
            if rid in self.engines:
                self._effects(rid, self.engines[rid].handle_batch(events, int(self.clock.now * 1000)))

    def _effects(self, rid: str, effects: list[object]) -> None:
        eng = self.engines[rid]
        if any(isinstance(e, Persist) for e in effects) and self.sent_head.get(rid) != (eng.stage, eng.state.value):
            self.sent_head[rid] = (eng.stage, eng.state.value)
            self.fleet.on_stage(rid, eng)
            self.send_plans(rid=rid)

    def send_plans(self, *, rid: str | None = None, only_site: str | None = None) -> None:
        """Sign each site's part of the rollout(s) and send it to the site's gateway if its session is up."""
        now_ms = int(self.clock.now * 1000)
        for r, eng in self.engines.items():
            if rid is not None and r != rid:
                continue
            by_site: dict[str, dict[str, int]] = defaultdict(dict)
            for d, rec in eng.devices.items():
                by_site[rec.site][d] = rec.stage
            total = len(eng.devices)
            for site, stages in sorted(by_site.items()):
                if only_site is not None and site != only_site:
                    continue
                peer = self.core.peer_of(f"gw-{site}")
                if peer is None:
                    continue
                self.plan_seq += 1
                plan = replace(eng.plan, max_starts_per_minute=site_share(eng.plan.max_starts_per_minute, len(stages), total))
                sp = SitePlan(r, site, plan, stages, eng.stage, eng.state.value)
                blob = sign_site_plan(sp, seq=self.plan_seq, now_ms=now_ms, ttl_ms=TTL_MS, key=self.fleet.rollout_key,
                                      key_id=self.fleet.rollout_key_id)
                super()._do(Send(peer, SitePlanEnvelope(r, blob)))

    # -- revocations ------------------------------------------------------------------

    def revoke(self, device_id: str) -> None:
        self.revocation_list = self.revocation_list.with_revoked(device_id, "compromised (scenario)")
        now_ms = int(self.clock.now * 1000)
        blob = sign_revocation_list(self.revocation_list, issued_ms=now_ms, expires_ms=now_ms + 7 * 86_400_000,
                                    key=self.fleet.signing_key, key_id=self.fleet.signing_key_id)
        self.feed(RevocationsChanged(blob))

