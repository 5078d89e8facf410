"""The power-cut harness's device on the real tools: a grubenv edited by ``grub-editenv``, or a U-Boot
environment read and written by ``fw_printenv``/``fw_setenv`` (``python -m simulations.powercut --board grub``).

``ToolBoard`` has what the harness uses of ``SimBootloader``: the Bootloader port (the real
``GrubBootloader``/``UBootBootloader``), ``power_on()`` playing the bootloader's script on the real
environment, ``slot_path()``, ``bootable()`` (the slots the script may pick) and an ``after_write`` hook
called after every environment write, where the harness cuts power. The booted slot is what the "kernel
command line" says: a file the power-on writes.

GRUB's script (``simulations.grub_script.GRUB_CFG``, RAUC's scheme): the first slot in ORDER with OK=1
and TRY=0, its TRY set before it boots; when none is left (a power cut between the boot and the agent's
mark-good of the only good slot) it resets TRY of every OK slot and boots the first of them. With
``grub-emu`` the real GRUB runs that script; with ``grub`` its rules are emulated in Python over the real
``grub-editenv``. U-Boot's is RAUC's: the first slot in BOOT_ORDER with attempts left, one attempt taken.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from common.errors import BootloaderError
from common.fileio import write_atomic
from device_agent.update.bootloader import SLOTS, BootState, other_slot
from device_agent.update.grub import GrubBootloader
from device_agent.update.uboot import UBootBootloader, uboot_boot
from simulations.grub_script import grub_emu_boot, grub_script_boot

__all__ = ["BOARDS", "ToolBoard"]

BOARDS = ("grub", "grub-emu", "uboot")  # grub-emu: GRUB's script run by the real GRUB (simulations.grub_script)


class _HookedGrub(GrubBootloader):
    hook: Callable[[str], None] | None = None

    def _set(self, doing: str, **values: str) -> None:
        super()._set(doing, **values)
        if self.hook is not None:
            self.hook(doing)


class _HookedUBoot(UBootBootloader):
    hook: Callable[[str], None] | None = None

    def _set(self, doing: str, **values: str) -> None:
        super()._set(doing, **values)
        if self.hook is not None:
            self.hook(doing)


class ToolBoard:
    def __init__(self, root: str | os.PathLike[str], kind: str, *,
                 after_write: Callable[[str], None] | None = None, attempts: int = 3) -> None:
        if kind not in BOARDS:
            raise ValueError(f"board {kind!r}: one of {', '.join(BOARDS)}")
        self.root, self.kind, self.slots = Path(root), kind, SLOTS
        self.booted_path = self.root / "booted"
        if kind in ("grub", "grub-emu"):
            self.bl: GrubBootloader | UBootBootloader = _HookedGrub(self.root / "grubenv", booted=self.active_slot)
        else:
            self.bl = _HookedUBoot(self.root / "fw_env.config", booted=self.active_slot, attempts=attempts)
        self.bl.hook = after_write  # type: ignore[union-attr]

    @classmethod
    def create(cls, root: str | os.PathLike[str], kind: str, images: dict[str, bytes | None], *,
               primary: str = "A", bootlimit: int = 3) -> ToolBoard:
        """Slot files with ``images`` (None: empty and bad), ``primary`` first in the boot order."""
        board = cls(root, kind, attempts=bootlimit)
        board.root.mkdir(parents=True, exist_ok=True)
        for slot in SLOTS:
            write_atomic(board.slot_path(slot), images.get(slot) or b"", 0o644)
        if kind in ("grub", "grub-emu"):
            GrubBootloader.create(board.root / "grubenv", primary=primary)
        else:
            UBootBootloader.create(board.root / "fw_env.config", board.root / "uboot.env", primary=primary,
                                   attempts=bootlimit)
        if images.get(other_slot(primary)):
            board.bl.mark_good(other_slot(primary))
        write_atomic(board.booted_path, primary.encode(), 0o644)
        return board

    def slot_path(self, slot: str) -> Path:
        other_slot(slot)  # validates
        return self.root / f"slot_{slot}.img"

    def power_on(self) -> str:
        if self.kind == "grub-emu":
            slot = grub_emu_boot(self.root / "grubenv", self.root / "grub-emu")
            if self.bl.hook is not None:  # type: ignore[union-attr]
                self.bl.hook("booting")  # type: ignore[union-attr]
        else:
            slot = grub_script_boot(self.bl) if isinstance(self.bl, GrubBootloader) else uboot_boot(self.bl)
        if slot is None:
            raise BootloaderError("Failed booting: no slot is bootable (the device is bricked)")
        write_atomic(self.booted_path, slot.encode(), 0o644)
        return slot

    def bootable(self) -> set[str]:
        """The slots the bootloader's script may boot now or after a reset."""
        env = self.bl.env("reading the boot state")
        if self.kind != "uboot":
            return {s for s in self.slots if env.get(f"{s}_OK") == "1"}
        return {s for s in self.slots if env.get(f"BOOT_{s}_LEFT", "0") not in ("0", "")}

    # -- the port ---------------------------------------------------------------------------

    def active_slot(self) -> str:
        return self.booted_path.read_text().strip()

    def boot_state(self) -> BootState:
        return self.bl.boot_state()

    def mark_good(self, slot: str) -> None:
        self.bl.mark_good(slot)

    def mark_bad(self, slot: str) -> None:
        self.bl.mark_bad(slot)

    def set_try_once(self, slot: str) -> None:
        self.bl.set_try_once(slot)
