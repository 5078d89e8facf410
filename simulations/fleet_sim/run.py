"""``edgefleet sim fleet``: the whole fleet in virtual time, every tier's real core, invariants checked.

    result = run_fleet(load_scenario("simulations/scenarios/small.toml"), seed=7)

One seed drives every random choice (links, outages, faults, devices), through ``random.Random``
instances drawn from it in a fixed order, so a run replays exactly. The run: every node starts,
releases roll out at their hours, faults happen at theirs; at the scenario's end sampling stops,
every link comes back and the fleet drains (until every device buffer and gateway outbox is empty,
or a virtual deadline); then the end-of-run invariants are checked against the stores and boards.
"""

from __future__ import annotations

import random
import resource
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.core import CloudCore
from common.effects import Start, Stop
from common.memory_queue import MemoryQueue
from common.protocol import decode_record
from common.rollouts import DeviceInfo, DeviceState, RolloutEngine
from common.shaping import LinkWindows
from common.signed import key_id_for
from common.streams import DEVICE_POLICIES, GATEWAY_POLICIES, scaled
from device_agent.core import gap_record
from device_agent.update.core import UpdateReport
from gateway.reports import gap_reports
from simulations.fleet_sim.cloud import CloudNode
from simulations.fleet_sim.device import DeviceNode
from simulations.fleet_sim.gateway import GatewayNode
from simulations.fleet_sim.invariants import Invariants
from simulations.fleet_sim.network import FifoNetwork
from simulations.fleet_sim.scenario import Crash, FleetScenario
from simulations.fleet_sim.timeline import Timeline
from simulations.fleet_sim import checks
from simulations.virtual import LinkProfile, VirtualClock

__all__ = ["Fleet", "run_fleet"]

START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC).timestamp()
DRAIN_DEADLINE_S = 12 * 3600.0
LAN = LinkProfile(0.001, 0.005)


class Fleet:
    def __init__(self, sc: FleetScenario) -> None:
        self.sc = sc
        master = random.Random(sc.seed)
        self.rng = random.Random(master.getrandbits(64))  # faults and schedules
        self.clock = VirtualClock(START)
        self.net = FifoNetwork(self.clock, random.Random(master.getrandbits(64)), LAN)
        self.invariants = Invariants(START)
        self.timeline = Timeline(self)
        self.drops: list[tuple[str, str, int, int, str]] = []  # (device, stream, first, last, reason) dropped
        self.wan: dict[tuple[str, str], int] = {}
        self.revoked_at: dict[str, float] = {}  # device -> when its list reached its gateway
        key_rng = random.Random(master.getrandbits(64))
        self.signing_key = Ed25519PrivateKey.from_private_bytes(key_rng.randbytes(32))
        self.signing_key_id = key_id_for(self.signing_key.public_key())
        self.rollout_key = Ed25519PrivateKey.from_private_bytes(key_rng.randbytes(32))
        self.rollout_key_id = key_id_for(self.rollout_key.public_key())
        self.device_policies = scaled(DEVICE_POLICIES, bulk=sc.device_buffer_bytes, state=sc.device_buffer_bytes)
        self.gateway_policies = scaled(GATEWAY_POLICIES, bulk=sc.outbox_bytes, state=sc.outbox_bytes)
        self.releases = {r.version: r for r in sc.releases}
        self.windows = LinkWindows(sc.maintenance, "UTC")
        self._tmp = tempfile.TemporaryDirectory(prefix="edgefleet-fleet-sim-")
        self.cloud = CloudNode(CloudCore(heartbeat_s=sc.heartbeat_s, command_retry_s=600.0, verify_gateways=False), fleet=self)
        self.gateways: list[GatewayNode] = []
        self.devices: list[DeviceNode] = []
        for s in range(1, sc.sites + 1):
            site = f"s{s:03d}"
            state = Path(self._tmp.name) / site
            state.mkdir()
            gw = GatewayNode(site, s, fleet=self, rng=random.Random(master.getrandbits(64)), state_dir=state)
            link = sc.link_of(s)
            self.net.set_link(gw.name, "cloud", LinkProfile(link.latency_ms[0] / 1000, link.latency_ms[1] / 1000, link.loss))
            self.gateways.append(gw)
            for d in range(1, sc.devices_per_site + 1):
                name = f"{site}-d{d:03d}"
                buf = MemoryQueue(f"{name}/buffer", streams=self.device_policies, clock=self.steady,
                                  on_drop=self.drop_hook(name)).start()
                dev = DeviceNode(name, site, buf, fleet=self, rng=random.Random(master.getrandbits(64)))
                dev.gateway = gw
                self.devices.append(dev)
        self.nodes = {n.name: n for n in [self.cloud, *self.gateways, *self.devices]}
        for n in self.nodes.values():
            n.nodes = self.nodes
        self.by_name = {d.name: d for d in self.devices}

    # -- hooks the nodes call ---------------------------------------------------------

    def steady(self) -> int:
        return int(self.clock.now * 1000)

    def drop_hook(self, reporter: str, gateway: bool = False) -> Any:
        inner = gap_reports(reporter, self.steady) if gateway else gap_record(reporter, self.steady)

        def on_drop(stream: str, reason: str, dropped: list[tuple[int, bytes]]) -> list[tuple[str, bytes]]:
            out = inner(stream, reason, dropped)
            if not gateway:
                self.drops.append((reporter, stream, dropped[0][0], dropped[-1][0], reason))
            else:
                for _, raw in out:
                    v = decode_record(raw)
                    self.drops.append((v.device_id, str(v.values["stream"]), int(v.values["first"]), int(v.values["last"]), reason))
            return out

        return on_drop

    def release_size(self, version: str) -> int:
        return int(self.releases[version].size_mb * 1024 * 1024)

    def healthy(self, version: str) -> bool:
        r = self.releases.get(version)
        return r is None or not r.bad

    def plan_power_cut(self, dev: DeviceNode) -> None:
        if self.sc.power_cut_rate and dev.rng.random() < self.sc.power_cut_rate:
            if dev.rng.random() < 0.3:
                dev.updater.cut_mid_write = True
            else:
                dev.updater.cut_at = dev.updater.persisted + dev.rng.randint(1, 9)

    def on_install(self, dev: DeviceNode, version: str) -> None:
        now = self.clock.now
        if not self.windows.is_open(datetime.fromtimestamp(now, UTC)):
            self.invariants.fail("installs_inside_window", now, f"{dev.name} began installing {version} outside its window")
        eng = self.cloud.engines.get(f"rollout-{version}")
        rec = eng.devices.get(dev.name) if eng is not None else None
        if rec is None or rec.stage > eng.stage:
            self.invariants.fail("installs_inside_approved_stage", now,
                                 f"{dev.name} began installing {version} in stage {getattr(rec, 'stage', '?')} "
                                 f"while the cloud approved {getattr(eng, 'stage', '?')}")
        self.timeline.installs += 1

    def on_outcome(self, dev: DeviceNode, r: UpdateReport) -> None:
        self.timeline.outcome(r.outcome)

    def on_wan_transfer(self, gw: GatewayNode, version: str, n: int) -> None:
        self.wan[(gw.site, version)] = n
        if n > 1:
            self.invariants.fail("one_wan_transfer_per_release_site", self.clock.now,
                                 f"{gw.name} fetched {version} over its WAN a {n}th time")

    def on_revocations(self, gw: GatewayNode, rl: Any) -> None:
        for d in rl.revoked:
            self.revoked_at.setdefault(d, self.clock.now)

    def on_stage(self, rid: str, eng: RolloutEngine) -> None:
        self.timeline.stage(rid, eng)

    # -- faults and schedules ---------------------------------------------------------

    def _schedule(self) -> None:
        sc, end = self.sc, START + self.sc.hours * 3600
        for gw in self.gateways:
            link = sc.link_of(gw.index)
            if link.outages_per_day > 0:
                t = START
                while True:
                    t += self.rng.expovariate(link.outages_per_day / 86_400)
                    if t >= end:
                        break
                    length = self.rng.uniform(*link.outage_minutes) * 60
                    self.clock.call_at(t, lambda gw=gw, length=length: self._cut(gw, length))
        crashes = list(sc.crashes)
        for _ in range(sc.random_crashes):
            crashes.append(Crash(self.rng.randint(1, sc.sites), self.rng.uniform(0.5, sc.hours - 0.5), self.rng.uniform(*sc.crash_minutes)))
        for c in crashes:
            gw = self.gateways[c.site - 1]
            self.clock.call_at(START + c.at_hour * 3600, lambda gw=gw, c=c: gw.crash(c.down_minutes * 60))
        revoked = [r.device for r in sc.revocations]
        picks = self.rng.sample(self.devices, min(sc.random_revocations, len(self.devices)))
        revoked += [d.name for d in picks]
        for i, name in enumerate(revoked):
            at = sc.revocations[i].at_hour if i < len(sc.revocations) else sc.revoke_at_hour
            self.clock.call_at(START + at * 3600, lambda name=name: self.cloud.revoke(name))
        for r in sc.releases:
            self.clock.call_at(START + r.at_hour * 3600, lambda r=r: self._release(r.version))

    def _cut(self, gw: GatewayNode, length: float) -> None:
        gw.link_up = False
        self.net.set_link(gw.name, "cloud", LinkProfile(up=False))
        self.timeline.outages += 1
        self.clock.call_later(length, lambda: self._restore(gw))

    def _restore(self, gw: GatewayNode) -> None:
        link = self.sc.link_of(gw.index)
        gw.link_up = True
        self.net.set_link(gw.name, "cloud", LinkProfile(link.latency_ms[0] / 1000, link.latency_ms[1] / 1000, link.loss))

    def _release(self, version: str) -> None:
        revoked = set(self.cloud.revocation_list.revoked)
        targets = [DeviceInfo(d.name, d.site) for d in self.devices if d.name not in revoked]
        self.cloud.start_rollout(version, targets)

    # -- the run ----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        wall0, cpu0 = time.monotonic(), time.process_time()
        self.cloud.feed(Start())
        for gw in self.gateways:
            self.clock.call_later(self.rng.uniform(0, 2.0), gw.start)
        for d in self.devices:
            self.clock.call_later(self.rng.uniform(0, min(60.0, self.sc.heartbeat_s)), lambda d=d: d.feed(Start()))
        self._schedule()
        self.timeline.start()
        end = START + self.sc.hours * 3600
        self.clock.run_until(end)
        for d in self.devices:
            d.feed(Stop())
        for gw in self.gateways:
            if not gw.link_up:
                self._restore(gw)
        deadline = self.clock.now + DRAIN_DEADLINE_S
        while not self.settled() and self.clock.now < deadline:
            self.clock.run_until(self.clock.now + 600.0)
        self.timeline.sample()
        checks.at_end(self)
        return self.result(time.monotonic() - wall0, time.process_time() - cpu0)

    def settled(self) -> bool:
        revoked = set(self.cloud.revocation_list.revoked)
        return (all(d.core.drained or d.name in revoked for d in self.devices if d.alive)
                and all(len(g.outbox) == 0 for g in self.gateways)
                and not any(d.updater.busy for d in self.devices))

    def result(self, wall_s: float, cpu_s: float) -> dict[str, Any]:
        return checks.summary(self, wall_s, cpu_s, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def run_fleet(sc: FleetScenario) -> tuple[dict[str, Any], Fleet]:
    fleet = Fleet(sc)
    try:
        return fleet.run(), fleet
    finally:
        fleet._tmp.cleanup()
