"""A thin, synchronous driver: runs ``UpdateCore``'s effects against a Bootloader, slot files and a RecordStore.

    driver = UpdateDriver(UpdateCore("dev-1", "rpi4"), RecordStore(data / "update.json"), bootloader,
                          slot_paths={"A": Path("/dev/mmcblk0p2"), "B": Path("/dev/mmcblk0p3")},
                          read_version=os_release_version, health=checks, send_report=outbox.put,
                          reboot=request_reboot)
    driver.power_on()                       # on every boot, before anything else
    driver.start(manifest, "/data/fw.img")  # when the cloud asks

``send_report`` must make the report durable (e.g. append it to the agent's
queue) before it returns: the record leaves its final state only after that.
``reboot`` asks the system to reboot; the driver runs nothing after it.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path

from common.effects import Log
from common.errors import BootloaderError, EdgeFleetError, UpdateError
from device_agent.update.bootloader import Bootloader
from device_agent.update.core import (
    ActionDone,
    ActionFailed,
    Arm,
    Commit,
    Confirm,
    FetchImage,
    HealthDone,
    HealthTimedOut,
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
    UpdateEffect,
    UpdateEvent,
    UpdateReport,
    VerifyImage,
)
from device_agent.update.health import HealthResult
from device_agent.update.installer import Writer, check_image, write_slot
from device_agent.update.plan import Manifest
from device_agent.update.store import RecordStore

__all__ = ["UpdateDriver"]

log = logging.getLogger("edgefleet.update")


class UpdateDriver:
    def __init__(
        self,
        core: UpdateCore,
        store: RecordStore,
        bootloader: Bootloader,
        slot_paths: Mapping[str, str | os.PathLike[str]],
        *,
        read_version: Callable[[], str],
        health: Callable[[str, float], HealthResult | None],
        send_report: Callable[[UpdateReport], None],
        reboot: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        write: Writer = os.write,
        sync_every: int = 4 << 20,
        after_install: Callable[[str], None] | None = None,
    ) -> None:
        self.core = core
        self.store = store
        self.bootloader = bootloader
        self.slot_paths = {k: Path(v) for k, v in slot_paths.items()}
        self.read_version = read_version
        self.health = health
        self.send_report = send_report
        self.reboot = reboot
        self.clock = clock
        self.write = write
        self.sync_every = sync_every
        self.after_install = after_install  # an update module's own install step, once the slot verified
        self.halted = False  # a reboot was requested: nothing more runs

    def power_on(self) -> None:
        """Load the record and resume whatever it says was in progress."""
        self.feed(PowerOn(self.store.load(), self.bootloader.active_slot(), self.read_version()))

    def start(self, manifest: Manifest, image_path: str, *, allow_downgrade: bool = False) -> None:
        """Plan and run an update (a refusal ends as a ``failed`` report); UpdateError if one is in progress."""
        if self.halted:
            raise UpdateError(f"update to {manifest.version!r} cannot start: the device is rebooting")
        self.feed(StartUpdate(manifest, image_path, allow_downgrade))

    def feed(self, event: UpdateEvent) -> None:
        """Handle ``event`` and every answer it leads to, until the core waits for nothing (or reboots)."""
        pending: deque[UpdateEvent] = deque([event])
        while pending and not self.halted:
            for effect in self.core.handle(pending.popleft(), self.clock()):
                if self.halted:
                    break
                answer = self._run(effect)
                if answer is not None:
                    pending.append(answer)

    def _run(self, effect: UpdateEffect) -> UpdateEvent | None:
        token = getattr(effect, "token", None)
        try:
            return self._execute(effect)
        except (EdgeFleetError, OSError) as exc:
            if isinstance(effect, PersistRecord):
                raise  # nothing may run on a record that is not durable
            if isinstance(effect, Report):
                log.error("update report not delivered; it is sent again at the next power-on: %s", exc)
                return None
            if token is None:
                log.error("update effect %s failed: %s", type(effect).__name__, exc)
                return None
            return ActionFailed(token, str(exc))

    def _execute(self, effect: UpdateEffect) -> UpdateEvent | None:
        bl = self.bootloader
        match effect:
            case PersistRecord(record):
                self.store.save(record)
            case FetchImage(token, image_path, size):
                # a local image is the only source so far: check it is there
                if not os.path.isfile(image_path):
                    raise UpdateError(f"image {image_path!r} is not there")
                return ActionDone(token)
            case VerifyImage(token, image_path, size, sha256):
                check_image(image_path, size, sha256)
                return ActionDone(token)
            case Install(token, slot, image_path, size, sha256, block_size):
                bl.mark_bad(slot)  # before the first byte is written (RAUC's order)
                write_slot(slot, self._slot_path(slot), image_path, size=size, sha256=sha256,
                           block_size=block_size, sync_every=self.sync_every, write=self.write)
                if self.after_install is not None:
                    self.after_install(slot)
                return ActionDone(token)
            case Arm(token, slot):
                bl.set_try_once(slot)
                return ActionDone(token)
            case Commit(token, slot):
                bl.mark_good(slot)
                return ActionDone(token)
            case RollBack(token, slot):
                bl.mark_bad(slot)
                self._reboot()
            case RunHealth(token, version, timeout_s, _deadline):
                result = self.health(version, timeout_s)
                return HealthTimedOut(token) if result is None else HealthDone(token, result.ok, result.reason)
            case Report(token, report):
                self.send_report(report)
                return Reported(token)
            case Confirm(slot):
                bl.mark_good(slot)
            case MarkBad(slot):
                bl.mark_bad(slot)
            case Reboot():
                self._reboot()
            case Log(level, event, fields):
                log.log(logging.getLevelName(level.upper()), "%s %s", event, fields)
        return None

    def _slot_path(self, slot: str) -> Path:
        try:
            return self.slot_paths[slot]
        except KeyError:
            raise BootloaderError(f"Failed writing slot {slot}: no path configured for it") from None

    def _reboot(self) -> None:
        self.halted = True
        self.reboot()
