"""A device's boot hardware in memory, and the real ``UpdateCore`` driven in virtual time, with power cuts.

``MemoryBoard`` is ``SimBootloader``'s in-memory twin (same U-Boot bootcount rules, same port) plus the
two slots' contents and the persisted update record: what survives a power cut. ``BoardUpdater`` runs
``device_agent.update.core.UpdateCore``'s effects against it, each taking virtual time (an install
takes minutes, a reboot and a health check seconds). A power cut can be planned at the Nth persisted
record (right after it is durable) or in the middle of writing the slot (the slot then holds a torn
image); everything in memory is dropped and the board boots again, the core resuming from the record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.effects import Log
from common.errors import BootloaderError
from device_agent.update.bootloader import SLOTS, BootState, other_slot
from device_agent.update.core import (
    ActionDone,
    Arm,
    Commit,
    Confirm,
    FetchImage,
    HealthDone,
    Install,
    MarkBad,
    PersistRecord,
    PowerOn,
    Reboot,
    Report,
    Reported,
    RollBack,
    RunHealth,
    StartUpdate,
    UpdateCore,
    UpdateReport,
    VerifyImage,
)
from device_agent.update.plan import LocalManifest
from device_agent.update.states import FINAL, State, UpdateRecord

__all__ = ["BoardUpdater", "MemoryBoard", "image_sha", "manifest_for"]

HW = "sim-board-1"
REBOOT_S = 40.0
HEALTH_S = 30.0
STEP_S = 0.5  # a persisted step's own work (verify, arm, commit)


def image_sha(version: str) -> str:
    return hashlib.sha256(f"edgefleet-image-{version}".encode()).hexdigest()


def manifest_for(version: str, size: int) -> LocalManifest:
    return LocalManifest(version, [HW], size, image_sha(version))


@dataclass
class MemoryBoard:
    """What survives a power cut: the boot environment, the slots (version, complete) and the record."""

    running: str = "1.0.0"
    env: dict[str, Any] = field(default_factory=dict)
    slots: dict[str, tuple[str, bool]] = field(default_factory=dict)
    record: UpdateRecord | None = None

    def __post_init__(self) -> None:
        if not self.env:
            self.env = {"order": ["A", "B"], "status": {"A": "good", "B": "bad"}, "try_once": "", "bootcount": 0,
                        "bootlimit": 3, "booted": "A"}
            self.slots = {"A": (self.running, True), "B": ("", False)}

    # -- the bootloader (SimBootloader's rules) -------------------------------------------

    def power_on(self) -> str:
        env = self.env
        trial = env["try_once"]
        if trial and env["status"].get(trial) != "bad":
            env["bootcount"] += 1
            if env["bootcount"] <= env["bootlimit"]:
                env["booted"] = trial
                return trial
            env["status"][trial] = "bad"
            env["try_once"], env["bootcount"] = "", 0
        for slot in env["order"]:
            if env["status"].get(slot) == "good":
                env["booted"] = slot
                return slot
        raise BootloaderError("Failed booting: no slot is marked good (the device is bricked)")

    def boots(self, slot: str) -> bool:
        """Whether the slot's image starts at all: a torn or empty slot does not (the boot falls back)."""
        version, complete = self.slots.get(slot, ("", False))
        return bool(version) and complete

    def active_slot(self) -> str:
        return str(self.env["booted"])

    def boot_state(self) -> BootState:
        env = self.env
        good = frozenset(s for s, st in env["status"].items() if st == "good")
        trial = env["try_once"] or None
        primary = trial if trial and env["bootcount"] < env["bootlimit"] else next((s for s in env["order"] if s in good), None)
        return BootState(env["booted"], primary, good, trial, env["bootcount"], env["bootlimit"])

    def mark_good(self, slot: str) -> None:
        other_slot(slot)
        env = self.env
        env["status"][slot] = "good"
        if env["try_once"] == slot:
            env["try_once"], env["bootcount"] = "", 0
            env["order"] = [slot, *(s for s in env["order"] if s != slot)]

    def mark_bad(self, slot: str) -> None:
        other_slot(slot)
        env = self.env
        env["status"][slot] = "bad"
        if env["try_once"] == slot:
            env["try_once"], env["bootcount"] = "", 0
        env["order"] = [*(s for s in env["order"] if s != slot), slot]

    def set_try_once(self, slot: str) -> None:
        other_slot(slot)
        self.env["try_once"], self.env["bootcount"] = slot, 0
        self.env["status"][slot] = "trial"

    def boot(self) -> str:
        """Power on until a slot whose image starts runs (a torn slot counts a failed boot)."""
        for _ in range(8):
            slot = self.power_on()
            if self.boots(slot):
                return slot
        raise BootloaderError("Failed booting: no slot holds an image that starts (the device is bricked)")

    def check(self) -> str:
        """'' when sound, else why the device is bricked or inconsistent (checked at the end of a run)."""
        try:
            booted = self.active_slot()
        except KeyError:
            return "no boot environment"
        if not self.boots(booted):
            return f"slot {booted} runs but holds no complete image"
        for slot in SLOTS:
            if self.env["status"].get(slot) == "good" and not self.boots(slot):
                return f"slot {slot} is marked good but holds no complete image"
        r = self.record
        if r is not None and r.state not in FINAL and r.state is not State.IDLE:
            return f"update record left in {r.state.value}"
        if r is not None and r.state is State.COMMITTED and self.slots[booted][0] != r.target_version:
            return f"committed {r.target_version} but runs {self.slots[booted][0]}"
        return ""


class BoardUpdater:
    """Runs one device's ``UpdateCore`` in virtual time. ``later(delay, fn)`` schedules; ``report`` hands an
    outcome to the agent's buffer (durable before it returns); ``healthy(version)`` is the health check;
    ``rebooted()`` tells the device a boot happened (the agent starts again)."""

    def __init__(self, device_id: str, board: MemoryBoard, later: Callable[[float, Callable[[], None]], None],
                 now: Callable[[], float], *, report: Callable[[UpdateReport], None],
                 healthy: Callable[[str], bool], rebooted: Callable[[], None], install_s: float) -> None:
        self.device_id, self.board, self.later, self.now = device_id, board, later, now
        self.report, self.healthy, self.rebooted, self.install_s = report, healthy, rebooted, install_s
        self.core = UpdateCore(device_id, HW, health_timeout_s=120.0)
        self.epoch = 0  # bumped by every boot: work scheduled before it is dropped
        self.cut_at: int | None = None  # cut power right after this many persisted records (None: never)
        self.cut_mid_write = False  # or in the middle of writing the slot
        self.persisted = 0
        self.cuts = 0
        self.installs_started = 0
        self.on_install: Callable[[str], None] | None = None  # the invariant check: an install begins now
        self.on_down: Callable[[], None] | None = None  # the device goes down (a cut or a reboot): the agent stops

    @property
    def busy(self) -> bool:
        return self.core.state not in FINAL and self.core.state is not State.IDLE

    def power_on(self) -> None:
        """A boot: the record and the booted slot decide what happens next."""
        self.epoch += 1
        self.core = UpdateCore(self.device_id, HW, health_timeout_s=120.0)
        booted = self.board.boot()
        self._feed(PowerOn(self.board.record, booted, self.board.slots[booted][0]))

    def start(self, version: str, size: int) -> bool:
        if self.busy:
            return False
        self._feed(StartUpdate(manifest_for(version, size), f"/data/fw-{version}.img"))
        return True

    def _feed(self, event: Any) -> None:
        epoch = self.epoch
        for effect in self.core.handle(event, self.now()):
            if self.epoch != epoch:
                return  # power was cut or the device rebooted: nothing after it runs
            self._run(effect)

    def _answer(self, delay: float, event: Any) -> None:
        epoch = self.epoch
        self.later(delay, lambda: self._feed(event) if self.epoch == epoch else None)

    def _cut(self) -> None:
        """Power is cut now: memory is gone; the board boots again after a while."""
        self.cuts += 1
        self.cut_at, self.cut_mid_write = None, False
        self._reboot()

    def _boot(self) -> None:
        self.rebooted()  # the agent first: an outcome reported at power-on goes to its buffer
        self.power_on()

    def _run(self, effect: Any) -> None:
        b = self.board
        match effect:
            case PersistRecord(record):
                b.record = record
                self.persisted += 1
                if self.cut_at is not None and self.persisted >= self.cut_at:
                    self._cut()
            case FetchImage(token, _, _):
                self._answer(STEP_S, ActionDone(token))  # the image was fetched through the site cache already
            case VerifyImage(token, _, _, _):
                self._answer(STEP_S, ActionDone(token))
            case Install(token, slot, _, _, _, _):
                b.mark_bad(slot)  # before the first byte (RAUC's order)
                self.installs_started += 1
                if self.on_install is not None:
                    self.on_install(b.record.target_version if b.record else "")
                b.slots[slot] = (b.record.target_version if b.record else "", False)
                if self.cut_mid_write:
                    epoch = self.epoch
                    self.later(self.install_s / 2, lambda: self._cut() if self.epoch == epoch else None)
                    return
                epoch, version = self.epoch, b.slots[slot][0]

                def written() -> None:
                    if self.epoch == epoch:
                        b.slots[slot] = (version, True)
                        self._feed(ActionDone(token))

                self.later(self.install_s, written)
            case Arm(token, slot):
                b.set_try_once(slot)
                self._answer(STEP_S, ActionDone(token))
            case Commit(token, slot):
                b.mark_good(slot)
                self._answer(STEP_S, ActionDone(token))
            case RollBack(_, slot):
                b.mark_bad(slot)
                self._reboot()
            case RunHealth(token, version, _, _):
                ok = self.healthy(version)
                self._answer(HEALTH_S, HealthDone(token, ok, "" if ok else "health check failed"))
            case Report(token, report):
                self.report(report)
                self._answer(0.01, Reported(token))
            case Confirm(slot):
                b.mark_good(slot)
            case MarkBad(slot):
                b.mark_bad(slot)
            case Reboot():
                self._reboot()
            case Log():
                pass

    def _reboot(self) -> None:
        self.epoch += 1
        if self.on_down is not None:
            self.on_down()
        epoch = self.epoch
        self.later(REBOOT_S, lambda: self._boot() if self.epoch == epoch else None)
