"""``edgefleet sim rollout``: a staged rollout across many sites in virtual time, under random uplink outages.

The real cores: the cloud runs the rollout engine as coordinator (``execute=False``);
each gateway gets its site's part as a signed site plan (``common.rollouts.siteplan``,
Ed25519 envelope verified with ``common.signed.EnvelopeVerifier``) and drives its
devices with the same engine (``execute=True``), inside its maintenance windows
(cron + duration in the site's IANA zone; the run crosses Europe's DST change), under
its share of the rate limits. Uplinks go down at random; a site keeps executing
approved stages while cut off, buffers its reports and reconciles on reconnect.
Devices are modelled: download, install and health outcome take seeded random
times, a few fail their health check and roll back, a few miss their first command.

Independent checks, made where the device is, not by the engine:
``installs_outside_window`` counts installs that *began* while the site's window
(evaluated afresh with ``common.shaping.LinkWindows``) was closed; ``stuck_devices``
counts devices still in flight at the end, or whose state at the cloud differs
from the gateway's (once every link is back). A forged site plan (signed by a key the gateway does not trust) is
offered once and must be refused (``plans_refused``).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.errors import RolloutError
from common.rollouts import (
    Approve,
    Control,
    DeviceEvent,
    DeviceHealth,
    DeviceInfo,
    DeviceReport,
    DeviceState,
    Install,
    Persist,
    ReleaseInfo,
    RolloutEngine,
    RolloutPlan,
    RolloutState,
    Threshold,
    Tick,
)
from common.rollouts.siteplan import SitePlan, apply_site_plan, sign_site_plan, site_engine, site_share, verify_site_plan
from common.shaping import LinkWindows
from common.signed import EnvelopeVerifier, key_id_for
from simulations.virtual import VirtualClock

__all__ = ["RolloutScenario", "run_rollout_sim"]

ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney", "America/Los_Angeles", "UTC")
WINDOWS = (("0 1 * * *", 4 * 3600.0), ("30 2 * * *", 3 * 3600.0))  # the second is in Berlin's DST gap on 29 March
START = datetime(2026, 3, 27, 0, 0, tzinfo=UTC)
TTL_MS = 60 * 86_400_000


@dataclass(frozen=True, slots=True)
class RolloutScenario:
    seed: int = 7
    sites: int = 50
    devices_per_site: int = 100
    outages_per_site_day: float = 1.0
    max_days: float = 20.0
    bad_rate: float = 0.003  # devices whose new image fails its health check
    deaf_rate: float = 0.003  # devices that miss their first install command
    reboot_rate_day: float = 0.01  # background: unexpected reboots per device-day, updated or not


class _Sim:
    def __init__(self, sc: RolloutScenario) -> None:
        self.sc = sc
        self.rng = random.Random(sc.seed)
        self.clock = VirtualClock(START.timestamp())
        total = sc.sites * sc.devices_per_site
        self.sites = [f"site-{s:02d}" for s in range(1, sc.sites + 1)]
        self.zone = {s: ZONES[i % len(ZONES)] for i, s in enumerate(self.sites)}
        self.window = {s: WINDOWS[i % len(WINDOWS)] for i, s in enumerate(self.sites)}
        self.devices = [DeviceInfo(f"{s}-d{i:03d}", s, "board-a", "1.0.0") for s in self.sites for i in range(sc.devices_per_site)]
        self.by_site: dict[str, list[DeviceInfo]] = defaultdict(list)
        for d in self.devices:
            self.by_site[d.site].append(d)
        self.bad = {d.device_id for d in self.devices if self.rng.random() < sc.bad_rate}
        self.deaf = {d.device_id for d in self.devices if self.rng.random() < sc.deaf_rate}
        self.plan = RolloutPlan(
            release=ReleaseInfo("2.0.0", ("board-a",), 2),
            canary=max(1, total // 100), waves=("25%", "100%"), soak_s=3600,
            success=Threshold(percent=95), failure=Threshold(percent=3), min_sample=max(1, total // 100),
            local_failure=Threshold(percent=10), max_installing_per_site=25, max_starts_per_minute=200,
            windows={s: (self.window[s],) for s in self.sites}, timezones=dict(self.zone),
            timeout_s=2 * 3600, max_retries=2, backoff_s=600, heartbeat_s=0, health_margin=0.05,
        )
        self.key = Ed25519PrivateKey.generate()
        self.key_id = key_id_for(self.key.public_key())
        self.verifiers = {s: EnvelopeVerifier({self.key_id: self.key.public_key()}) for s in self.sites}
        self.cloud = RolloutEngine("rollout-1", self.plan, execute=False)
        self.cloud.target(self.devices)
        self.seq = 0
        self.up = {s: True for s in self.sites}
        self.outbox: dict[str, list[object]] = defaultdict(list)  # gateway -> cloud, while cut off
        self.pending_plan: dict[str, bytes] = {}  # cloud -> gateway, the latest not yet delivered
        self.engines: dict[str, RolloutEngine] = {}
        self.dev_state: dict[str, str] = {}  # what each device runs: "1.0.0" or "2.0.0"
        self.got_first: set[str] = set()
        self.counters = {"installs_outside_window": 0, "installs_while_offline": 0, "plans_verified": 0,
                         "plans_refused": 0, "link_outages": 0, "outage_seconds": 0.0, "late_install_refused": 0}
        self.checks = {s: LinkWindows((self.window[s],), self.zone[s]) for s in self.sites}

    @property
    def now_ms(self) -> int:
        return int(self.clock.now * 1000)

    # -- cloud -----------------------------------------------------------------------------

    def cloud_effects(self, effects: list[object]) -> None:
        for e in effects:
            if isinstance(e, Approve) or isinstance(e, Persist) and e.rollout["state"] != self._last_cloud_state:
                self._last_cloud_state = self.cloud.state.value
                self.send_plans()

    def send_plans(self) -> None:
        total = len(self.devices)
        for s in self.sites:
            self.seq += 1
            plan = _replace_rate(self.plan, site_share(self.plan.max_starts_per_minute, len(self.by_site[s]), total))
            sp = SitePlan("rollout-1", s, plan, {d.device_id: self.cloud.devices[d.device_id].stage for d in self.by_site[s]},
                          self.cloud.stage, self.cloud.state.value)
            blob = sign_site_plan(sp, seq=self.seq, now_ms=self.now_ms, ttl_ms=TTL_MS, key=self.key, key_id=self.key_id)
            self.pending_plan[s] = blob
            if self.up[s]:
                self._deliver_plan(s)

    def _deliver_plan(self, s: str) -> None:
        blob = self.pending_plan.pop(s, None)
        if blob is not None:
            self.clock.call_later(0.2, lambda: self.gateway_plan(s, blob))

    def cloud_tick(self) -> None:
        self.cloud_effects(self.cloud.handle(Tick(), self.now_ms))
        if self.cloud.state.value in ("running", "paused", "scheduled"):
            self.clock.call_later(300, self.cloud_tick)

    def cloud_receive(self, events: list[object]) -> None:
        self.cloud_effects(self.cloud.handle_batch(events, self.now_ms))

    # -- gateways --------------------------------------------------------------------------

    def gateway_plan(self, s: str, blob: bytes) -> None:
        try:
            sp = verify_site_plan(self.verifiers[s], blob, s, self.now_ms)
        except RolloutError:
            self.counters["plans_refused"] += 1
            return
        self.counters["plans_verified"] += 1
        if s not in self.engines:
            eng, effects = site_engine(sp, self.by_site[s], self.now_ms)
            self.engines[s] = eng
            self.gateway_effects(s, effects)
            self.clock.call_later(120, lambda: self.gateway_tick(s))
        else:
            self.gateway_effects(s, apply_site_plan(self.engines[s], sp, self.now_ms))

    def gateway_tick(self, s: str) -> None:
        self.gateway_effects(s, self.engines[s].handle(Tick(), self.now_ms))
        self.clock.call_later(120, lambda: self.gateway_tick(s))

    def gateway_event(self, s: str, event: object) -> None:
        self.gateway_effects(s, self.engines[s].handle(event, self.now_ms))
        if isinstance(event, DeviceHealth):
            self.uplink(s, [event])

    def gateway_effects(self, s: str, effects: list[object]) -> None:
        reports: list[object] = []
        for e in effects:
            if isinstance(e, Persist):
                reports += [DeviceReport(d["device_id"], DeviceEvent.COMMIT, d["reason"], DeviceState(d["state"]))
                            for d in e.devices]
            elif isinstance(e, Install):
                if not e.download_only and not self.up[s]:
                    self.counters["installs_while_offline"] += 1
                self.clock.call_later(0.05, lambda e=e: self.device_install(s, e))
        if reports:
            self.uplink(s, reports)

    def uplink(self, s: str, events: list[object]) -> None:
        self.outbox[s] += events
        if self.up[s]:
            self._flush(s)

    def _flush(self, s: str) -> None:
        batch, self.outbox[s] = self.outbox[s], []
        if batch:
            self.clock.call_later(0.3, lambda: self.cloud_receive(batch))

    # -- links -----------------------------------------------------------------------------

    def schedule_outages(self, s: str) -> None:
        gap = self.rng.expovariate(self.sc.outages_per_site_day / 86_400)
        self.clock.call_later(gap, lambda: self.cut(s))

    def cut(self, s: str) -> None:
        if self.done():
            return
        self.up[s] = False
        self.counters["link_outages"] += 1
        length = self.rng.uniform(1800, 12 * 3600)
        self.counters["outage_seconds"] += length
        self.clock.call_later(length, lambda: self.restore(s))

    def restore(self, s: str) -> None:
        self.up[s] = True
        self._flush(s)  # the gateway's buffered reports: reconcile
        self._deliver_plan(s)  # and the newest plan the cloud made meanwhile
        self.schedule_outages(s)

    # -- devices ---------------------------------------------------------------------------

    def device_install(self, s: str, e: Install) -> None:
        d = e.device_id
        if d in self.deaf and d not in self.got_first:
            self.got_first.add(d)  # this one never arrives
            return
        if e.download_only:
            self.clock.call_later(self.rng.uniform(60, 300), lambda: self.gateway_event(s, DeviceReport(d, DeviceEvent.DOWNLOADED)))
            return
        if self.now_ms > e.not_after_ms:
            self.counters["late_install_refused"] += 1  # the command expired with the window: it must not start
            return
        if not self.checks[s].is_open(datetime.fromtimestamp(self.clock.now, UTC)):
            self.counters["installs_outside_window"] += 1
        took = self.rng.uniform(120, 480)
        self.clock.call_later(took * 0.7, lambda: self.gateway_event(s, DeviceReport(d, DeviceEvent.TRIAL)))
        ok = d not in self.bad
        outcome = DeviceEvent.COMMIT if ok else DeviceEvent.ROLLBACK
        self.clock.call_later(took, lambda: self._outcome(s, d, outcome))

    def _outcome(self, s: str, d: str, outcome: DeviceEvent) -> None:
        self.dev_state[d] = "2.0.0" if outcome == DeviceEvent.COMMIT else "1.0.0"
        self.gateway_event(s, DeviceReport(d, outcome, "" if outcome == DeviceEvent.COMMIT else "health check failed"))

    def background_reboots(self) -> None:
        n = len(self.devices)
        gap = self.rng.expovariate(self.sc.reboot_rate_day * n / 86_400)
        d = self.rng.choice(self.devices)
        if d.site in self.engines:
            self.gateway_event(d.site, DeviceHealth(d.device_id, "reboot"))
        if not self.done():
            self.clock.call_later(gap, self.background_reboots)

    # -- run -------------------------------------------------------------------------------

    def done(self) -> bool:
        return self.cloud.state in (RolloutState.COMPLETED, RolloutState.ABORTED) or (
            self.cloud.state == RolloutState.PAUSED and self.cloud.reason.startswith(("failure", "health", "canary")))

    def run(self) -> dict[str, object]:
        self._last_cloud_state = ""
        self.cloud_effects(self.cloud.handle(Control("start"), self.now_ms))
        self.clock.call_later(300, self.cloud_tick)
        for s in self.sites:
            self.schedule_outages(s)
        self.clock.call_later(3600, self.forged_plan)
        self.clock.call_later(60, self.background_reboots)
        end = START.timestamp() + self.sc.max_days * 86_400
        self.clock.run_until(end, stop=self.done)
        # the end: every link back, everything buffered delivered, so the views can be compared
        for s in self.sites:
            self.up[s] = True
            self._flush(s)
        self.clock.run_until(self.clock.now + 5)
        return self.result()

    def forged_plan(self) -> None:
        """A plan for site 1 signed by a key the gateway does not trust: refused, nothing installs from it."""
        s = self.sites[0]
        rogue = Ed25519PrivateKey.generate()
        sp = SitePlan("rollout-evil", s, self.plan, {d.device_id: 0 for d in self.by_site[s]}, 2, "running")
        blob = sign_site_plan(sp, seq=10**9, now_ms=self.now_ms, ttl_ms=TTL_MS, key=rogue, key_id=self.key_id)
        self.gateway_plan(s, blob)

    def result(self) -> dict[str, object]:
        truth = {d: r.state for e in self.engines.values() for d, r in e.devices.items()}
        # stuck: still in flight at the end (an install that never finished, a retry never made), or the
        # cloud's view differs from the gateway's after every link came back; a halted rollout's pending
        # devices are waiting by design, not stuck
        waiting = {DeviceState.PENDING, DeviceState.DOWNLOADED} if self.cloud.state != RolloutState.COMPLETED else set()
        settled = {DeviceState.SUCCEEDED, DeviceState.SKIPPED, DeviceState.ROLLED_BACK} | waiting
        stuck = [d for d, r in self.cloud.devices.items()
                 if not (r.state in settled or r.exhausted) or truth.get(d, r.state) != r.state]
        states = [r.state for r in self.cloud.devices.values()]
        return {
            "rollout_state": self.cloud.state.value,
            "rollout_reason": self.cloud.reason,
            "sites": self.sc.sites,
            "devices": len(self.devices),
            "seed": self.sc.seed,
            "stages": len(self.plan.waves) + 1,
            "canary_size": sum(1 for r in self.cloud.devices.values() if r.stage == 0),
            "devices_updated": states.count(DeviceState.SUCCEEDED),
            "devices_rolled_back": states.count(DeviceState.ROLLED_BACK),
            "devices_failed": sum(1 for r in self.cloud.devices.values() if r.state in (DeviceState.FAILED, DeviceState.TIMED_OUT)),
            "bad_images": len(self.bad),
            "stuck_devices": len(stuck),
            "installs_outside_window": self.counters["installs_outside_window"],
            "installs_while_offline": self.counters["installs_while_offline"],
            "late_installs_refused": self.counters["late_install_refused"],
            "link_outages": self.counters["link_outages"],
            "outage_hours": round(self.counters["outage_seconds"] / 3600, 1),
            "site_plans_verified": self.counters["plans_verified"],
            "site_plans_refused": self.counters["plans_refused"],
            "retries": sum(e.counters["retries"] for e in self.engines.values()),
            "virtual_seconds": round(self.clock.now - START.timestamp()),
            "virtual_hours": round((self.clock.now - START.timestamp()) / 3600, 1),
        }


def _replace_rate(plan: RolloutPlan, per_minute: int) -> RolloutPlan:
    from dataclasses import replace

    return replace(plan, max_starts_per_minute=per_minute)


def run_rollout_sim(sc: RolloutScenario) -> dict[str, object]:
    return _Sim(sc).run()
