"""A site's gateway: the real ``GatewayCore`` with its security, its site rollout runner and a site cache.

What the gateway's driver does around its core is done here in virtual time: the outbox and the
held commands are ``MemoryQueue`` s (they survive a crash, as LMDB does); revocation lists go through
the real ``RevocationCache`` (verified, written to a file before they take effect, read back at
restart); site plans through the real ``SiteRollouts`` (its state kept in memory instead of
``rollouts.json``, read back at restart through its own ``load``). The site cache is modelled: one
transfer per release over the site's WAN at its bandwidth, paused while the link is down and resumed
where it stopped, single flight for every device asking; devices then fetch over the LAN.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.effects import AckQueue, Append, Firmware, Log, Send, SetTimer, Start, TimerFired
from common.errors import EdgeFleetError
from common.memory_queue import MemoryQueue
from common.revocation import RevocationCache
from common.security_events import ApplyRevocations, RevocationsApplied
from common.shaping import LinkWindows, TokenBucket
from common.signed import EnvelopeVerifier
from gateway.core import COMMANDS, OUTBOX, GatewayCore
from gateway.rollout_effects import DeviceOutcome, SitePlanArrived
from gateway.security import GatewaySecurity
from gateway.site_rollouts import SiteRollouts
from simulations.nodes import SimNode

__all__ = ["GatewayNode", "SiteCacheModel"]

_PLAIN = frozenset({Send, SetTimer, AckQueue})

ROLLOUT_TICK_S = 120.0
CHUNK_S = 60.0  # the WAN transfer advances in steps of this much link time


class MemorySiteRollouts(SiteRollouts):
    """``SiteRollouts`` whose saved state stays in memory. The real one writes ``rollouts.json`` at every
    engine ``Persist``, before it returns the events acting on it, so the state on disk at any instant
    is the state in memory; serializing that state (the same fields, through the same methods) costs
    5 ms at 100 devices, so it is done once, when the gateway crashes, not at every save."""

    saved = False

    def _save(self) -> None:
        self.saved = True

    def snapshot(self) -> str:
        return json.dumps({
            "verifier": self.verifier.state(),
            "rollouts": {rid: {"plan": self.plans[rid].body(), "seq": self.plans[rid].seq, "header": eng.header(),
                               "devices": [r.to_dict() for r in eng.devices.values()]}
                         for rid, eng in self.engines.items()},
        }) if self.saved else ""


class SiteCacheModel:
    """One site's firmware cache: a release crosses the WAN once (single flight), devices fetch over the LAN."""

    def __init__(self, node: GatewayNode) -> None:
        self.node = node
        self.held: set[str] = set()
        self.fetching: dict[str, float] = {}  # version -> bytes still to fetch
        self.waiters: dict[str, list[tuple[str, Callable[[bool, str], None]]]] = defaultdict(list)
        self.wan_transfers: dict[str, int] = defaultdict(int)
        self.wan_bytes = 0
        self.lan_bytes = 0

    def fetch(self, version: str, device: str, done: Callable[[bool, str], None]) -> None:
        if version in self.held:
            self._serve(version, device, done)
            return
        self.waiters[version].append((device, done))
        self.prefetch(version)

    def prefetch(self, version: str) -> None:
        if version in self.held or version in self.fetching:
            return
        self.fetching[version] = float(self.node.fleet.release_size(version))
        self.wan_transfers[version] += 1
        self.node.fleet.on_wan_transfer(self.node, version, self.wan_transfers[version])
        self._step(version)

    def _step(self, version: str) -> None:
        node = self.node
        if node.link_up and node.alive:
            chunk = min(self.fetching[version], node.link.bandwidth_bytes_s * CHUNK_S)
            self.fetching[version] -= chunk
            self.wan_bytes += int(chunk)
        if self.fetching[version] <= 0:
            del self.fetching[version]
            self.held.add(version)
            for device, done in self.waiters.pop(version, []):
                self._serve(version, device, done)
            return
        node.clock.call_later(CHUNK_S, lambda: self._step(version))

    def _serve(self, version: str, device: str, done: Callable[[bool, str], None]) -> None:
        size = self.node.fleet.release_size(version)
        self.lan_bytes += size
        self.node.clock.call_later(size / self.node.fleet.sc.lan_bytes_s, lambda: done(True, ""))


class GatewayNode(SimNode):
    def __init__(self, site: str, index: int, *, fleet: Any, rng: random.Random, state_dir: Path) -> None:
        self.site, self.index, self.fleet = site, index, fleet
        sc = fleet.sc
        self.link = sc.link_of(index)
        self.name = name = f"gw-{site}"
        self.outbox = MemoryQueue(f"{name}/outbox", streams=fleet.gateway_policies, clock=fleet.steady,
                                  on_drop=fleet.drop_hook(name, gateway=True)).start()
        self.held = MemoryQueue(f"{name}/commands", clock=fleet.steady).start()
        self.state_dir = state_dir
        self.verifier = EnvelopeVerifier({fleet.signing_key_id: fleet.signing_key.public_key()})
        self.revocations = RevocationCache(state_dir / "revocations.json", self.verifier)
        self.site_rollouts = MemorySiteRollouts(state_dir, site, fleet.rollout_key.public_key())
        self.firmware = SiteCacheModel(self)
        self.link_up = True
        self.rollouts_file = ""
        self.crashes = 0
        self.accepted_from_revoked = 0
        super().__init__(name, self._core(rng), fleet.clock, fleet.net, upstream="cloud",
                         queues={OUTBOX: self.outbox, COMMANDS: self.held}, rng=rng)

    def _core(self, rng: random.Random) -> GatewayCore:
        sc, link = self.fleet.sc, self.link
        bucket = TokenBucket(link.bandwidth_bytes_s, link.bandwidth_bytes_s * 2, now=self.fleet.clock.now)
        windows = LinkWindows(link.windows, "UTC") if link.windows else None
        return GatewayCore(self.name, self.site, self.outbox, rng=rng, commands=self.held, heartbeat_s=sc.heartbeat_s,
                           ack_timeout_s=2 * sc.heartbeat_s, bucket=bucket, link_windows=windows,
                           status_interval_s=sc.heartbeat_s, security=GatewaySecurity(), site_rollouts=True,
                           device_window=500)

    # -- crash and restart ------------------------------------------------------------

    def crash(self, down_s: float) -> None:
        """SIGKILL: memory is gone, the queues and files stay; back after ``down_s``."""
        if not self.alive:
            return
        self.crashes += 1
        self.alive = False
        self.rollouts_file = self.site_rollouts.snapshot()  # what rollouts.json holds
        self.timers = {k: g + 1 for k, g in self.timers.items()}
        self.clock.call_later(down_s, self.restart)

    def restart(self) -> None:
        self.alive = True
        self.core = self._core(self.rng)
        saved = self.rollouts_file
        self.site_rollouts = MemorySiteRollouts(self.state_dir, self.site, self.fleet.rollout_key.public_key())
        self.feed(Start())
        rl = self.revocations.load()
        self.feed(RevocationsApplied(rl.version, frozenset(rl.revoked), frozenset(rl.quarantined)))
        if saved:
            path = self.state_dir / "rollouts.json"
            path.write_text(saved)
            self.site_rollouts.saved = True
            self._events(self.site_rollouts.load(self._ms()))

    def start(self) -> None:
        self.feed(Start())
        self.clock.call_later(ROLLOUT_TICK_S, self._rollout_tick)

    def _rollout_tick(self) -> None:
        if self.alive:
            self._events(self.site_rollouts.tick(self._ms()))
        self.clock.call_later(ROLLOUT_TICK_S, self._rollout_tick)

    def _ms(self) -> int:
        return int(self.clock.now * 1000)

    def _events(self, events: list[object]) -> None:
        for e in events:
            self.feed(e)

    # -- effects ----------------------------------------------------------------------

    def _do(self, effect: Any) -> None:
        if type(effect) in _PLAIN:  # the common effects, straight to the shared runner
            SimNode._do(self, effect)
            return
        match effect:
            case Append(_, _, _, ("device", _, device_id, _, _, _)) if device_id in self.revocations.current.revoked:
                self.accepted_from_revoked += 1
                self.fleet.invariants.fail("revoked_not_accepted", self.clock.now,
                                           f"{self.name} accepted records from revoked {device_id}")
                super()._do(effect)
            case SitePlanArrived(_, blob):
                self._site_call(lambda: self.site_rollouts.plan(blob, self._ms()))
                for sp in self.site_rollouts.plans.values():
                    self.firmware.prefetch(sp.plan.release.version)  # ahead of the window (download_ahead)
            case DeviceOutcome(device_id, values):
                self._site_call(lambda: self.site_rollouts.outcome(device_id, values, self._ms()))
            case ApplyRevocations(envelope):
                try:
                    self.revocations.update(envelope, now_ms=self._ms())
                except EdgeFleetError as exc:  # refused (forged, replayed, malformed): logged, as the driver does
                    self.logs.append(Log("warning", "revocation list refused", {"error": str(exc)}))
                    return
                rl = self.revocations.current
                self.fleet.on_revocations(self, rl)
                self.feed(RevocationsApplied(rl.version, frozenset(rl.revoked), frozenset(rl.quarantined)))
            case Firmware():
                pass  # devices fetch through SiteCacheModel
            case Log(level="error" | "warning") if len(self.logs) < 200:
                self.logs.append(effect)
            case Log():
                pass
            case _:
                super()._do(effect)

    def _site_call(self, fn: Callable[[], list[object]]) -> None:
        self._events(fn())

    def _timer(self, name: str, gen: int) -> None:
        if self.timers.get(name) == gen and self.alive:
            self.feed(TimerFired(name))
