"""GRUB backend: RAUC's GRUB bootchooser scheme in a grubenv file, through the real ``grub-editenv``.

Variables: ``ORDER="A B"`` (primary first) and per slot ``X_OK`` (1: bootable)
and ``X_TRY`` (1: booted and not confirmed since). GRUB's script (RAUC's
example ``grub.cfg``, emulated by ``grub_boot`` for tests) boots the first
slot in ORDER with OK=1 and TRY=0 and sets its TRY=1 before booting, so a slot
that is not marked good again before the next boot is skipped: the boot limit
is one try. The agent therefore re-marks the running slot good on every boot
once it is committed (as RAUC's ``rauc status mark-good`` service does).

    mark_good(X)     X_OK=1 X_TRY=0
    mark_bad(X)      X_OK=0 X_TRY=0
    set_try_once(X)  ORDER="X Y" X_OK=1 X_TRY=0      (RAUC: set primary)

Each change is one ``grub-editenv set`` call, which writes the 1 KiB block to
``<file>.new`` and renames it over the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from common.errors import BootloaderError
from device_agent.update.bootloader import SLOTS, BootState, booted_from_cmdline, other_slot, run_tool

__all__ = ["GrubBootloader", "grub_boot"]


class GrubBootloader:
    def __init__(
        self,
        grubenv: str | os.PathLike[str],
        *,
        booted: str | Callable[[], str] = booted_from_cmdline,
        slots: Sequence[str] = SLOTS,
        editenv: str = "grub-editenv",
    ) -> None:
        self.path = Path(grubenv)
        self._booted = booted
        self.slots = tuple(slots)
        self.editenv = editenv

    @classmethod
    def create(
        cls, grubenv: str | os.PathLike[str], *, primary: str = "A", editenv: str = "grub-editenv", **kw: object
    ) -> GrubBootloader:
        """Make a new grubenv with ``primary`` good and first in ORDER, the other slot bad."""
        bl = cls(grubenv, editenv=editenv, **kw)  # type: ignore[arg-type]
        other = other_slot(primary, bl.slots)
        run_tool([editenv, str(bl.path), "create"], f"creating GRUB environment {str(bl.path)!r}")
        bl._set(f"creating GRUB environment {str(bl.path)!r}", ORDER=f"{primary} {other}",
                **{f"{primary}_OK": "1", f"{primary}_TRY": "0", f"{other}_OK": "0", f"{other}_TRY": "0"})
        return bl

    def env(self, doing: str = "reading the GRUB environment") -> dict[str, str]:
        out = run_tool([self.editenv, str(self.path), "list"], doing)
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def _set(self, doing: str, **values: str) -> None:
        run_tool([self.editenv, str(self.path), "set", *(f"{k}={v}" for k, v in values.items())], doing)

    def _slot(self, slot: str, doing: str) -> None:
        if slot not in self.slots:
            raise BootloaderError(f"Failed {doing}: no such slot (slots are {', '.join(self.slots)})")

    # -- the port ---------------------------------------------------------------------------

    def active_slot(self) -> str:
        return self._booted() if callable(self._booted) else self._booted

    def boot_state(self) -> BootState:
        env = self.env("reading the boot state")
        order = env.get("ORDER", " ".join(self.slots)).split()
        good = frozenset(s for s in self.slots if env.get(f"{s}_OK") == "1")
        primary = next((s for s in order if s in good and env.get(f"{s}_TRY", "0") == "0"), None)
        return BootState(self.active_slot(), primary, good, bootlimit=1)

    def mark_good(self, slot: str) -> None:
        doing = f"marking slot {slot} as good"
        self._slot(slot, doing)
        self._set(doing, **{f"{slot}_OK": "1", f"{slot}_TRY": "0"})

    def mark_bad(self, slot: str) -> None:
        doing = f"marking slot {slot} as bad"
        self._slot(slot, doing)
        self._set(doing, **{f"{slot}_OK": "0", f"{slot}_TRY": "0"})

    def set_try_once(self, slot: str) -> None:
        doing = f"setting slot {slot} to boot once"
        self._slot(slot, doing)
        order = " ".join([slot, *(s for s in self.slots if s != slot)])
        self._set(doing, ORDER=order, **{f"{slot}_OK": "1", f"{slot}_TRY": "0"})


def grub_boot(
    grubenv: str | os.PathLike[str], *, editenv: str = "grub-editenv", slots: Sequence[str] = SLOTS
) -> str | None:
    """What GRUB's script does at power-on (RAUC's example ``grub.cfg``): pick a slot, set its TRY, save.

    Returns the slot booted, or None when no slot has OK=1 and TRY=0 (RAUC's
    script then boots its default entry; here that is reported as no slot).
    """
    bl = GrubBootloader(grubenv, booted="", slots=slots, editenv=editenv)
    env = bl.env("booting")
    for slot in env.get("ORDER", " ".join(slots)).split():
        if env.get(f"{slot}_OK") == "1" and env.get(f"{slot}_TRY", "0") == "0":
            bl._set("booting", **{f"{slot}_TRY": "1"})
            return slot
    return None
