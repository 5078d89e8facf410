"""A device: the real ``AgentCore`` (telemetry, commands) and the real ``UpdateCore`` on a ``MemoryBoard``.

Each telemetry record summarises ``samples_per_record`` one-minute samples (mean and max): at ten
thousand devices one record per device per interval keeps the run inside its time budget while
every record still crosses every core (buffer, gateway outbox, cloud store). An ``update`` command
(site-gated, released by the site's rollout) fetches the release through the gateway's site cache,
then hands it to the update core, unless the install deadline the cloud signed into the command
has passed meanwhile (``common.install_deadline``: reported ``late_install_refused``, the command
deferred to the site's next release); its outcome goes upstream as a critical ``update`` record, which
the gateway's rollout relay reads on its way through. A reboot (the update's own, or a power cut)
takes the agent down with the device; it comes back with its durable buffer and command window.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from common.effects import (
    AckQueue,
    Append,
    CommandResult,
    InventoryTaken,
    Log,
    PersistFailed,
    Persisted,
    RunCommand,
    Sampled,
    Send,
    SetTimer,
    Start,
    TakeInventory,
    TakeSample,
)
from common.errors import QueueError
from common.install_deadline import DEFERRED, LATE_INSTALL_REFUSED, late
from common.memory_queue import MemoryQueue
from device_agent.commands import RunWindow
from device_agent.core import BUFFER, AgentCore
from device_agent.update.core import UpdateReport
from simulations.fleet_sim.board import BoardUpdater, MemoryBoard
from simulations.nodes import COMMIT_DELAY_S, SimNode

if TYPE_CHECKING:
    from simulations.fleet_sim.gateway import GatewayNode

__all__ = ["DeviceNode"]

_PLAIN = frozenset({Send, SetTimer, Append})


class DeviceNode(SimNode):
    def __init__(self, name: str, site: str, buffer: MemoryQueue, *, fleet: Any, rng: random.Random) -> None:
        sc = fleet.sc
        self.name, self.site, self.fleet, self.buffer = name, site, fleet, buffer
        self.ran = RunWindow()  # persisted before a command runs (the driver's copy)
        self.board = MemoryBoard()
        self.acked: dict[str, int] = {}  # stream -> highest sequence the gateway acknowledged (buffer dropped it)
        self.epoch = 0
        self.gateway: GatewayNode | None = None
        super().__init__(name, self._agent(rng), fleet.clock, fleet.net, upstream=f"gw-{site}", queues={BUFFER: buffer}, rng=rng)
        lo, hi = sc.install_minutes
        self.updater = BoardUpdater(name, self.board, self.clock.call_later, lambda: self.clock.now,
                                    report=self._report, healthy=fleet.healthy, rebooted=self._up,
                                    install_s=rng.uniform(lo, hi) * 60)
        self.updater.on_install = lambda version: fleet.on_install(self, version)
        self.updater.on_down = self._down
        self.updater.power_on()  # the first boot
        self.updates_refused = 0

    def _agent(self, rng: random.Random) -> AgentCore:
        sc = self.fleet.sc
        return AgentCore(self.name, self.site, self.buffer, rng=rng, sample_interval_s=sc.sample_interval_s,
                         heartbeat_s=sc.heartbeat_s, ack_timeout_s=2 * sc.heartbeat_s, ran=self.ran,
                         rejoin_spread_s=min(60.0, sc.heartbeat_s), inventory_interval_s=6 * 3600.0)

    # -- power ------------------------------------------------------------------------

    def _down(self) -> None:
        """The device goes down: the agent's memory with it (sessions, windows, timers)."""
        self.alive = False
        self.epoch += 1
        self.timers = {k: g + 1 for k, g in self.timers.items()}

    def _up(self) -> None:
        self.alive = True
        self.core = self._agent(self.rng)
        self.feed(Start())

    # -- effects ----------------------------------------------------------------------

    def _do(self, effect: Any) -> None:
        if type(effect) in _PLAIN:  # the common effects, straight to the shared runner
            SimNode._do(self, effect)
            return
        match effect:
            case TakeSample():
                n = self.fleet.sc.samples_per_record
                cpu = [self.rng.uniform(0, 100) for _ in range(n)]
                self.feed(Sampled({"cpu_mean": round(sum(cpu) / n, 1), "cpu_max": round(max(cpu), 1), "samples": n,
                                   "battery_percent": round(self.rng.uniform(10, 100), 1)}))
            case TakeInventory():
                self.feed(InventoryTaken({"model": "sim-board-1", "firmware_version": self.board.slots[self.board.active_slot()][0]}))
            case AckQueue(_, stream, up_to):
                if up_to > self.acked.get(stream, 0):
                    self.acked[stream] = up_to
                super()._do(effect)
            case Log():
                pass  # a device's logs stay on the device
            case RunCommand(cmd):
                self.ran.add(cmd.seq)  # durable before it runs
                self._command(cmd)
            case _:
                super()._do(effect)

    def _append(self, queue: str, stream: str, payloads: list[bytes], token: Any) -> None:
        epoch = self.epoch
        try:
            seqs = self.queues[queue].append_many_sync(payloads, stream=stream)
        except QueueError as exc:
            err = exc
            self.clock.call_later(COMMIT_DELAY_S, lambda: self.feed(PersistFailed(token, err)) if self.epoch == epoch else None)
            return
        self.clock.call_later(COMMIT_DELAY_S, lambda: self.feed(Persisted(token, seqs)) if self.epoch == epoch else None)

    # -- updates ----------------------------------------------------------------------

    def _command(self, cmd: Any) -> None:
        if cmd.name != "update":
            self.feed(CommandResult(cmd.seq, "failed", f"{cmd.name} is not simulated"))
            return
        version = cmd.args.get("version", "")
        if self.updater.busy:
            self.updates_refused += 1
            self.feed(CommandResult(cmd.seq, "failed", "an update is in progress"))
            return
        epoch = self.epoch

        def fetched(ok: bool, why: str) -> None:
            if self.epoch != epoch or not self.alive:
                return  # the device went down meanwhile; the held command comes again
            if not ok:
                self.feed(CommandResult(cmd.seq, "failed", why))
                return
            why = late(cmd.args, int(self.clock.now * 1000))
            if why is not None:  # the release came after the window closed: not begun, the command held for the next
                self.ran.discard(cmd.seq)
                self._report(UpdateReport(self.name, version, LATE_INSTALL_REFUSED, why, self.board.slots[self.board.active_slot()][0]))
                self.feed(CommandResult(cmd.seq, DEFERRED, why))
                return
            self.fleet.plan_power_cut(self)
            started = self.updater.start(version, self.fleet.release_size(version))
            if self.epoch == epoch:
                self.feed(CommandResult(cmd.seq, "done" if started else "failed", "installing" if started else "busy"))

        assert self.gateway is not None
        self.gateway.firmware.fetch(version, self.name, fetched)

    def _report(self, r: UpdateReport) -> None:
        values = {"version": r.version, "outcome": r.outcome, "reason": r.reason[:200], "running": r.running_version}
        for e in self.core.record("critical", "update", values, self.clock.now):
            self._do(e)
        self.fleet.on_outcome(self, r)
