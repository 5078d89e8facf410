"""The telemetry scenario: 1 cloud, N gateways, M devices each, in virtual time.

Devices sample for ``duration_s`` over links with seeded latency and loss, then
stop sampling; the fleet runs until every device's buffer is acknowledged and
every gateway's outbox is empty (or a virtual deadline passes). The counters it
returns are computed from the stores themselves, never assumed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from cloud.core import CloudCore
from common.effects import Start, Stop
from common.memory_queue import MemoryQueue
from common.streams import DEVICE_POLICIES, GATEWAY_POLICIES
from device_agent.core import BUFFER, AgentCore, gap_record
from gateway.core import OUTBOX, GatewayCore, gap_reports
from simulations.nodes import MemoryStore, SimNode
from simulations.virtual import LinkProfile, Network, VirtualClock

__all__ = ["TelemetryScenario", "run_telemetry"]


@dataclass(frozen=True, slots=True)
class TelemetryScenario:
    seed: int = 7
    sites: int = 2
    devices_per_site: int = 10
    duration_s: float = 120.0
    sample_interval_s: float = 1.0
    loss: float = 0.05
    latency_min_s: float = 0.005
    latency_max_s: float = 0.080
    drain_deadline_s: float = 600.0


def run_telemetry(sc: TelemetryScenario) -> dict[str, object]:
    master = random.Random(sc.seed)
    clock = VirtualClock()
    net = Network(clock, random.Random(master.getrandbits(64)), LinkProfile(sc.latency_min_s, sc.latency_max_s, sc.loss))
    nodes: dict[str, SimNode] = {}

    def steady() -> int:  # virtual time is the steady clock
        return int(clock.now * 1000)

    wall = steady
    store = MemoryStore()
    nodes["cloud"] = SimNode("cloud", CloudCore(), clock, net, store=store)
    devices: list[SimNode] = []
    gateways: list[SimNode] = []
    for s in range(sc.sites):
        site = f"site-{s + 1}"
        gname = f"gw-{s + 1}"
        outbox = MemoryQueue(f"{gname}/outbox", streams=GATEWAY_POLICIES, clock=steady, on_drop=gap_reports(gname, wall)).start()
        gcore = GatewayCore(gname, site, outbox, rng=random.Random(master.getrandbits(64)))
        gateways.append(SimNode(gname, gcore, clock, net, upstream="cloud", queues={OUTBOX: outbox}))
        for d in range(sc.devices_per_site):
            dname = f"dev-{s + 1}-{d + 1:03d}"
            buf = MemoryQueue(f"{dname}/buffer", streams=DEVICE_POLICIES, clock=steady, on_drop=gap_record(dname, wall)).start()
            rng = random.Random(master.getrandbits(64))
            dcore = AgentCore(dname, site, buf, rng=rng, sample_interval_s=sc.sample_interval_s)
            devices.append(SimNode(dname, dcore, clock, net, upstream=gname, queues={BUFFER: buf}, rng=rng))
    for n in [*gateways, *devices]:
        nodes[n.name] = n
    for n in nodes.values():
        n.nodes = nodes
    start = clock.now
    for n in nodes.values():
        # stagger starts the way real processes come up
        clock.call_later(master.uniform(0, 1.0), lambda n=n: n.feed(Start()))
    clock.run_until(start + sc.duration_s)
    for d in devices:
        d.feed(Stop())

    def settled() -> bool:
        return all(d.core.drained for d in devices) and all(len(g.queues[OUTBOX]) == 0 for g in gateways)

    deadline = clock.now + sc.drain_deadline_s
    while not settled() and clock.now < deadline:
        clock.run_until(clock.now + 1.0, stop=settled)
    sent = sum(sum(d.core.produced.values()) for d in devices)
    stored = store.distinct()
    return {
        "scenario": "telemetry",
        "seed": sc.seed,
        "devices": len(devices),
        "gateways": len(gateways),
        "telemetry_sent": sent,
        "telemetry_stored": stored,
        "telemetry_duplicates_stored": len(store.rows) - stored,
        "telemetry_lost": sent - stored,
        "duplicates_dropped": store.duplicates,
        "frames_sent": net.sent,
        "frames_lost": net.lost,
        "device_resends": sum(snd.resends for d in devices for snd in d.core.senders.values()),
        "reconnects": sum(n.core.uplink.reconnects for n in [*devices, *gateways]),
        "drained": settled(),
        "virtual_seconds": round(clock.now - start, 3),
    }
