"""The rollout engine, sans-IO: ``handle(event, now_ms) -> effects``; no clock, no sleep, no I/O.

One class serves three places with the same code and gates:

- the cloud, driving devices itself (``execute=True``, every stage approved): each
  ``Install`` effect becomes an ``update`` command through the device's gateway;
- a gateway, driving its own site from a signed site plan (``execute=True``,
  ``approved_stage`` from the plan): it never starts a stage the cloud has not
  approved, applies the gates and ``local_failure`` threshold itself, and keeps
  going while its uplink is down;
- the cloud coordinating sites that drive themselves (``execute=False``): device
  states arrive as ``DeviceReport`` s, promotion emits ``Approve(stage)``.

Per tick, in order: start a scheduled rollout; time out devices past their
deadline and retry failed ones after a backoff (bounded); evaluate the failure
threshold (halt: pause or abort as planned); evaluate the current stage (success
threshold reached -> soak; soak over and health gate passed -> promote or
complete); dispatch pending devices of started stages (install inside the site's
window and rate limits, download-only ahead of it). Every state change is in a
``Persist`` effect that comes *before* the effects acting on it.

Health gate: a device updated by this rollout is unhealthy if, during its soak
(``soak_s`` from its commit), it reboots unexpectedly, misses heartbeats (3
intervals) or breaks a metric rule (a rollback is a failure, counted apart);
promotion needs the unhealthy share among updated devices to be no more than the
share among devices not yet updated plus ``health_margin``.

Why one module of ~470 lines: it is one class over one set of device records, and a tick is one
pass through them (timeouts, threshold, promotion, dispatch) whose order is the contract above;
spreading those steps over mixins would hide that order. Its events, effects and ``DeviceRecord``
are apart, in ``common.rollouts.events``.
"""
# one-piece: one class over one set of device records, a tick is one ordered pass (see the docstring)

from __future__ import annotations

from typing import Any

from common.errors import RolloutError
from common.install_deadline import MIN_WINDOW_LEFT_MS
from common.rollouts.events import (
    Approve,
    Control,
    DeviceHealth,
    DeviceRecord,
    DeviceReport,
    DeviceSeen,
    Install,
    Persist,
    Revert,
    Tick,
)
from common.rollouts.plan import DeviceInfo, RolloutPlan, assign_stages, eligibility
from common.rollouts.states import (
    DEVICE_ACTIVE,
    DeviceEvent,
    DeviceState,
    RolloutEvent,
    RolloutState,
    step_device,
    step_rollout,
)
from common.rollouts.windows import SiteWindows

__all__ = ["MIN_WINDOW_LEFT_MS", "RolloutEngine"]


_D, _E = DeviceState, DeviceEvent
MINUTE_MS = 60_000
_FAILED = (_D.FAILED, _D.TIMED_OUT)


class RolloutEngine:
    def __init__(
        self,
        rollout_id: str,
        plan: RolloutPlan,
        *,
        execute: bool = True,
        approved_stage: int | None = None,
        site: str | None = None,
        seed: str = "",
    ) -> None:
        self.id = rollout_id
        self.plan = plan
        self.execute = execute
        self.approved_stage = approved_stage  # None: every stage (the cloud's own engine)
        self.site = site  # a site engine takes only this site's devices
        self.seed = seed or rollout_id
        self.windows = SiteWindows(plan.windows, plan.timezones)
        self.state = RolloutState.DRAFT
        self.reason = ""
        self.stage = 0
        self.stage_started_ms = 0
        self.soak_until_ms = 0  # 0: the current stage has not reached its success threshold
        self.start_ms = 0
        self.devices: dict[str, DeviceRecord] = {}
        self.starts: list[int] = []  # install starts in the last minute (fleet-wide rate limit)
        self.counters = {"installs": 0, "downloads": 0, "retries": 0, "timeouts": 0,
                         "reverts": 0, "ignored_reports": 0, "late_installs_refused": 0}
        self._dirty: set[str] = set()
        self._head_dirty = True
        self._stage_of: dict[str, int] = {}
        self.failures_accepted = 0  # failures a resume accepted: the threshold counts those after
        self.gate_waived_stage = -1  # a stage whose failed health gate a resume accepted
        self._recheck = True  # something changed that the stage check has not seen
        self._flags: dict[str, tuple[int, int]] = {}  # device -> (failed, finished), summed in _totals
        self._totals = [0, 0]
        self._members: tuple[dict[int, list[DeviceRecord]], list[DeviceRecord]] | None = None  # index by stage

    # -- inputs ------------------------------------------------------------------------

    def target(
        self, devices: list[DeviceInfo], held: dict[str, str] | None = None, stages: dict[str, int] | None = None
    ) -> None:
        """The initial target: assigns stages (canary first) for every matching device.

        A site engine is given ``stages`` (the cloud's fleet-wide assignment, from its signed site plan)."""
        held = held or {}
        mine = [d for d in devices if self.plan.selector.matches(d) and (self.site is None or d.site == self.site)]
        if stages is not None:
            mine = [d for d in mine if d.device_id in stages]
        self._stage_of = stages if stages is not None else assign_stages(mine, self.plan, self.seed)
        for d in mine:
            self._add(d, self._stage_of[d.device_id], held.get(d.device_id, ""))

    def _add(self, d: DeviceInfo, stage: int, held_by: str) -> None:
        rec = DeviceRecord(d.device_id, d.site, stage)
        ok, why = eligibility(d, self.plan.release, self.plan)
        if held_by:
            ok, why = False, f"held by rollout {held_by} (a device belongs to the oldest active rollout targeting it)"
        if not ok:
            rec.state, rec.reason = step_device(self.id, d.device_id, rec.state, _E.SKIP), why
        self.devices[d.device_id] = rec
        self._dirty.add(d.device_id)

    def handle(self, event: object, now_ms: int) -> list[object]:
        """One event, then the tick at ``now_ms``."""
        return self.handle_batch([event], now_ms)

    def handle_batch(self, events: list[object], now_ms: int) -> list[object]:
        """Several events (a site's report, a burst of outcomes), then one tick: same result, less work."""
        out: list[object] = []
        for event in events:
            match event:
                case Tick():
                    pass
                case DeviceSeen(info=info, held_by=held):
                    if info.device_id not in self.devices and self.state not in (RolloutState.COMPLETED, RolloutState.ABORTED) \
                            and self.plan.selector.matches(info) and (self.site is None or info.site == self.site):
                        # continuous targeting: a newcomer joins the stage running now
                        self._add(info, self.stage if self.state != RolloutState.DRAFT else 0, held)
                case DeviceReport():
                    self._report(event, now_ms)
                case DeviceHealth():
                    self._health(event, now_ms)
                case Control():
                    out += self._control(event, now_ms)
                case Approve(stage=stage):
                    self.approved_stage = max(self.approved_stage or 0, stage)
                    self._head_dirty = True
                case _:
                    raise TypeError(f"rollout engine: unknown event {event!r}")
        return out + self._tick(now_ms)

    def _report(self, ev: DeviceReport, now_ms: int) -> None:
        rec = self.devices.get(ev.device_id)
        if rec is None:
            self.counters["ignored_reports"] += 1
            return
        if ev.state is not None and not self.execute:  # a site's report: take its state as the truth
            if rec.state != ev.state:
                rec.state, rec.reason = ev.state, ev.reason
                rec.updated = rec.updated or ev.state == _D.SUCCEEDED
                rec.exhausted = ev.state in _FAILED
                self._dirty.add(rec.device_id)
            return
        if ev.event == _E.COMMIT and rec.state == _D.SUCCEEDED or ev.event == _E.ROLLBACK and rec.state == _D.ROLLED_BACK:
            return  # a repeated report
        try:
            rec.state = step_device(self.id, rec.device_id, rec.state, ev.event)
        except RolloutError:
            self.counters["ignored_reports"] += 1
            return
        rec.reason = ev.reason
        if rec.state == _D.SUCCEEDED:
            rec.updated, rec.deadline_ms, rec.finished_ms = True, 0, now_ms
        elif rec.state in (_D.ROLLED_BACK, _D.FAILED):
            rec.deadline_ms = 0
        elif rec.state in (_D.DOWNLOADED,):
            rec.deadline_ms = 0
            if ev.event == _E.LATE:  # not begun past its window: not an attempt, not a failure; the next window
                rec.attempts, rec.exhausted = max(0, rec.attempts - 1), False
                self.counters["late_installs_refused"] += 1
        self._dirty.add(rec.device_id)

    def _health(self, ev: DeviceHealth, now_ms: int) -> None:
        rec = self.devices.get(ev.device_id)
        if rec is None:
            return
        rec.last_seen_ms = now_ms
        why = ""
        if ev.kind == "reboot" and rec.state not in (_D.INSTALLING, _D.TRIAL):
            why = "rebooted unexpectedly"
        elif ev.kind == "metrics":
            broken = [str(r) for r in self.plan.metric_rules if r.metric in ev.metrics and not r.holds(ev.metrics[r.metric])]
            why = f"broke {', '.join(broken)}" if broken else ""
        in_soak = rec.updated and now_ms - rec.finished_ms <= self.plan.soak_s * 1000
        if why and in_soak and not rec.unhealthy:
            rec.unhealthy = why
            self._dirty.add(rec.device_id)
        elif why and not rec.updated and not rec.unhealthy_before:
            rec.unhealthy_before = why
            self._dirty.add(rec.device_id)

    def _control(self, ev: Control, now_ms: int) -> list[object]:
        out: list[object] = []
        if ev.action == "start":
            self.start_ms = ev.at_ms
            event = RolloutEvent.SCHEDULE if ev.at_ms > now_ms else RolloutEvent.START
            self._set(step_rollout(self.id, self.state, event), ev.reason)
            if self.state == RolloutState.RUNNING:
                self.stage_started_ms = now_ms
        elif ev.action == "pause":
            self._set(step_rollout(self.id, self.state, RolloutEvent.PAUSE), ev.reason or "paused by the operator")
        elif ev.action == "resume":
            self._set(step_rollout(self.id, self.state, RolloutEvent.RESUME), ev.reason or "resumed by the operator")
            # the operator has seen what halted it: failures so far and this stage's health gate are accepted
            self.failures_accepted = self.failures()[0]
            self.gate_waived_stage = self.stage
        elif ev.action == "abort":
            self._set(step_rollout(self.id, self.state, RolloutEvent.ABORT), ev.reason or "aborted by the operator")
            if ev.revert:
                out += self._revert_all()
        else:
            raise RolloutError(self.id, "invalid", f"unknown control {ev.action!r}: start, pause, resume or abort")
        return self._flush() + out

    def _revert_all(self) -> list[object]:
        out: list[object] = []
        for rec in self.devices.values():
            if rec.updated and rec.state == _D.SUCCEEDED:
                rec.state = step_device(self.id, rec.device_id, rec.state, _E.ROLLBACK)
                rec.reason, rec.reverted = "returned to the previous release on abort", True
                self._dirty.add(rec.device_id)
                self.counters["reverts"] += 1
                out.append(Revert(rec.device_id, rec.site))
        return self._flush() + out

    def _set(self, state: RolloutState, reason: str) -> None:
        self.state, self.reason, self._head_dirty = state, reason, True

    # -- the tick ----------------------------------------------------------------------

    def _tick(self, now_ms: int) -> list[object]:
        if self.state == RolloutState.SCHEDULED and now_ms >= self.start_ms:
            self._set(step_rollout(self.id, self.state, RolloutEvent.START), "start time reached")
            self.stage_started_ms = now_ms
        if self.state not in (RolloutState.RUNNING, RolloutState.PAUSED):
            return self._flush()
        self._timeouts(now_ms)
        if self.state == RolloutState.RUNNING:
            halted = bool(self._dirty) and self._failure_threshold()  # failures change only with device states
            out: list[object] = []
            if not halted:
                out += self._promote(now_ms)
            if self.state == RolloutState.RUNNING and self.execute:
                out += self._dispatch(now_ms)
            return self._flush() + out
        return self._flush()

    def _timeouts(self, now_ms: int) -> None:
        hb_ms = int(self.plan.heartbeat_s * 3000)
        if not self.execute and not hb_ms:
            return
        for rec in self.devices.values():
            if rec.state == _D.SUCCEEDED and not rec.unhealthy and hb_ms and rec.last_seen_ms and now_ms - rec.last_seen_ms > hb_ms \
                and now_ms - rec.finished_ms <= self.plan.soak_s * 1000:
                rec.unhealthy = "heartbeats late"
                self._dirty.add(rec.device_id)
            if not self.execute:
                continue
            if rec.state in DEVICE_ACTIVE and rec.deadline_ms and now_ms >= rec.deadline_ms:
                rec.state = step_device(self.id, rec.device_id, rec.state, _E.TIMEOUT)
                rec.reason = f"no outcome within {self.plan.timeout_s:g} s"
                self.counters["timeouts"] += 1
                self._dirty.add(rec.device_id)
            if rec.state in _FAILED and not rec.exhausted:
                if rec.attempts <= self.plan.max_retries:
                    rec.state = step_device(self.id, rec.device_id, rec.state, _E.RETRY)
                    rec.not_before_ms = now_ms + int(self.plan.backoff_s * 1000 * 2 ** max(0, rec.attempts - 1))
                    self.counters["retries"] += 1
                else:
                    rec.exhausted = True
                self._dirty.add(rec.device_id)

    def failures(self) -> tuple[int, int]:
        """(failed devices, finished devices) rollout-wide (kept up to date from the devices that changed)."""
        self._account(self._dirty)
        return self._totals[0], self._totals[1]

    def _account(self, ids: set[str] | list[str]) -> None:
        for i in ids:
            rec = self.devices[i]
            if rec.state == _D.ROLLED_BACK and not rec.reverted or rec.state in _FAILED and rec.exhausted:
                flags = (1, 1)
            elif rec.state in (_D.ROLLED_BACK, _D.SUCCEEDED):  # reverted on abort: finished, not a failure
                flags = (0, 1)
            else:
                flags = (0, 0)
            old = self._flags.get(i, (0, 0))
            if old != flags:
                self._totals[0] += flags[0] - old[0]
                self._totals[1] += flags[1] - old[1]
                self._flags[i] = flags

    def _failure_threshold(self) -> bool:
        failed, finished = self.failures()
        failed -= self.failures_accepted
        limit = (self.plan.local_failure or self.plan.failure) if self.site is not None else self.plan.failure
        if failed and limit.reached(failed, finished, self.plan.min_sample):
            why = f"failure threshold {limit} reached: {failed} of {finished} finished devices failed"
            event = RolloutEvent.ABORT if self.plan.on_failure == "abort" else RolloutEvent.HALT
            self._set(step_rollout(self.id, self.state, event), why)
            return True
        return False

    def stage_devices(self, stage: int) -> list[DeviceRecord]:
        if self._members is None or len(self._members[1]) != len(self.devices):
            order = sorted(self.devices.values(), key=lambda r: (r.stage, r.device_id))
            by_stage: dict[int, list[DeviceRecord]] = {}
            for r in order:
                by_stage.setdefault(r.stage, []).append(r)
            self._members = (by_stage, order)
        return [r for r in self._members[0].get(stage, ()) if r.state != _D.SKIPPED]

    def health_gate(self) -> tuple[bool, str]:
        """``(passed, reason)``: updated devices no less healthy than the others (plus the margin)."""
        updated = [r for r in self.devices.values() if r.updated and r.state in (_D.SUCCEEDED, _D.ROLLED_BACK)]
        targeted = [r for r in self.devices.values() if r.state != _D.SKIPPED]
        later = [r for r in targeted if r.stage > self.stage]
        targeted = later or targeted  # devices of later stages are the control group; at the end, everyone
        if len(updated) < self.plan.min_sample:
            return True, ""  # too few to judge (a site engine sees only its part)
        bad = [r for r in updated if r.unhealthy]
        rate = len(bad) / len(updated)
        # the same signals on devices this rollout has not touched: the background rate
        base = sum(1 for r in targeted if r.unhealthy_before) / len(targeted)
        if rate > base + self.plan.health_margin:
            return False, (f"health gate: {len(bad)} of {len(updated)} updated devices unhealthy ({bad[0].device_id}: "
                           f"{bad[0].unhealthy}) against {base:.0%} of devices not yet updated")
        return True, ""

    def _promote(self, now_ms: int) -> list[object]:
        changed, self._recheck = self._recheck or bool(self._dirty) or self._head_dirty, False
        if not changed and not self.soak_until_ms:
            return []  # nothing changed since the last look, and no soak is running
        if self.soak_until_ms and now_ms < self.soak_until_ms:
            return []  # soaking
        last = len(self.plan.waves)
        members = self.stage_devices(self.stage)
        ok = sum(1 for r in members if r.state == _D.SUCCEEDED)
        reached = not members or 100.0 * ok / len(members) >= self._success_pct(len(members))
        if not reached:
            if all(self._settled(r) for r in members):  # nothing left to try: it can never be reached
                self._set(step_rollout(self.id, self.state, RolloutEvent.HALT),
                          f"{self.plan.stage_names()[self.stage]} finished with {ok} of {len(members)} devices updated, "
                          f"below the success threshold {self.plan.success}")
            return []
        if not self.soak_until_ms:
            self.soak_until_ms = now_ms + int(self.plan.soak_s * 1000)
            self._head_dirty = True
        if now_ms < self.soak_until_ms:
            return []
        passed, why = self.health_gate()
        if not passed and self.gate_waived_stage != self.stage:
            self._set(step_rollout(self.id, self.state, RolloutEvent.HALT), why)
            return []
        if self.stage < last:
            if self.approved_stage is not None and self.stage + 1 > self.approved_stage:
                return []  # a site waits for the cloud to approve the next stage
            self.stage += 1
            self.stage_started_ms, self.soak_until_ms, self._head_dirty = now_ms, 0, True
            return [Approve(self.stage)] if not self.execute or self.approved_stage is None else []
        if all(self._settled(r) for r in self.devices.values()):
            self._set(step_rollout(self.id, self.state, RolloutEvent.COMPLETE), "every stage soaked and passed its gates")
        return []

    @staticmethod
    def _settled(r: DeviceRecord) -> bool:
        return r.state in (_D.SUCCEEDED, _D.ROLLED_BACK, _D.SKIPPED) or r.exhausted

    def _success_pct(self, n: int) -> float:
        s = self.plan.success
        return s.percent if s.percent is not None else 100.0 * min(s.count or 0, n) / n

    def _dispatch(self, now_ms: int) -> list[object]:
        out: list[object] = []
        self.starts = [t for t in self.starts if now_ms - t < MINUTE_MS]
        installing: dict[str, int] = {}
        for r in self.devices.values():
            if r.state in (_D.INSTALLING, _D.TRIAL):
                installing[r.site] = installing.get(r.site, 0) + 1
        version = self.plan.release.version
        open_cache: dict[str, bool] = {}
        self.stage_devices(self.stage)  # builds the index
        assert self._members is not None
        for rec in self._members[1]:
            if rec.stage > self.stage:
                break
            if rec.stage > self.stage or rec.state not in (_D.PENDING, _D.DOWNLOADED) or rec.not_before_ms > now_ms:
                continue
            if rec.site not in open_cache:
                open_cache[rec.site] = self.windows.is_open(rec.site, now_ms)
            if open_cache[rec.site]:
                if installing.get(rec.site, 0) >= self.plan.max_installing_per_site:
                    continue
                if len(self.starts) >= self.plan.max_starts_per_minute:
                    break
                closes = self.windows.closes_at_ms(rec.site, now_ms)
                if closes and closes - now_ms < MIN_WINDOW_LEFT_MS:
                    continue  # too late in this window to start: the next one
                not_after = min(closes, now_ms + int(self.plan.timeout_s * 1000)) if closes else now_ms + int(self.plan.timeout_s * 1000)
                rec.state = step_device(self.id, rec.device_id, rec.state, _E.INSTALL)
                rec.attempts += 1
                rec.started_ms, rec.deadline_ms = now_ms, now_ms + int(self.plan.timeout_s * 1000)
                installing[rec.site] = installing.get(rec.site, 0) + 1
                self.starts.append(now_ms)
                self.counters["installs"] += 1
                out.append(Install(rec.device_id, rec.site, version, False, not_after))
                self._dirty.add(rec.device_id)
            elif rec.state == _D.PENDING and self.plan.download_ahead:
                rec.state = step_device(self.id, rec.device_id, rec.state, _E.DOWNLOAD)
                rec.deadline_ms = now_ms + int(self.plan.timeout_s * 1000)
                self.counters["downloads"] += 1
                out.append(Install(rec.device_id, rec.site, version, True, rec.deadline_ms))
                self._dirty.add(rec.device_id)
        return out

    # -- persistence -------------------------------------------------------------------

    def header(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state.value, "reason": self.reason, "stage": self.stage,
                "stage_started_ms": self.stage_started_ms, "soak_until_ms": self.soak_until_ms, "start_ms": self.start_ms,
                "approved_stage": self.approved_stage, "counters": dict(self.counters),
                "failures_accepted": self.failures_accepted, "gate_waived_stage": self.gate_waived_stage}

    def _flush(self) -> list[object]:
        if not self._dirty and not self._head_dirty:
            return []
        self._account(self._dirty)
        self._recheck = True
        devices = [self.devices[d].to_dict() for d in sorted(self._dirty)]
        self._dirty.clear()
        self._head_dirty = False
        return [Persist(self.header(), devices)]

    @classmethod
    def restore(cls, plan: RolloutPlan, header: dict[str, Any], devices: list[dict[str, Any]], **kw: Any) -> RolloutEngine:
        """An engine as it was persisted (after a restart)."""
        eng = cls(header["id"], plan, **kw)
        eng.state, eng.reason, eng.stage = RolloutState(header["state"]), header.get("reason", ""), header["stage"]
        eng.stage_started_ms, eng.soak_until_ms = header["stage_started_ms"], header["soak_until_ms"]
        eng.start_ms = header.get("start_ms", 0)
        if header.get("approved_stage") is not None:
            eng.approved_stage = header["approved_stage"]
        eng.counters.update(header.get("counters") or {})
        eng.failures_accepted = header.get("failures_accepted", 0)
        eng.gate_waived_stage = header.get("gate_waived_stage", -1)
        eng.devices = {d["device_id"]: DeviceRecord.from_dict(d) for d in devices}
        eng._members = None
        eng._account(list(eng.devices))
        eng._head_dirty = False
        return eng

    def progress(self) -> dict[str, Any]:
        """Per stage, per site: device counts by state."""
        out: dict[str, Any] = {}
        names = self.plan.stage_names()
        for r in self.devices.values():
            site = out.setdefault(names[r.stage], {}).setdefault(r.site, {})
            site[r.state.value] = site.get(r.state.value, 0) + 1
        return out
