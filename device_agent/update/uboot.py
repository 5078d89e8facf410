"""U-Boot backend: RAUC's U-Boot bootchooser scheme through the real ``fw_printenv``/``fw_setenv``.

Variables: ``BOOT_ORDER="A B"`` (primary first) and per slot ``BOOT_X_LEFT``,
the boot attempts left. U-Boot's script (RAUC's example, emulated by
``uboot_boot`` for tests) boots the first slot in BOOT_ORDER with attempts
left and decrements them first, so a slot not marked good again within
``attempts`` boots is skipped. The agent re-marks the running slot good on
every boot once it is committed (as RAUC's mark-good service does).

    mark_good(X)     BOOT_X_LEFT=<attempts>
    mark_bad(X)      BOOT_X_LEFT=0
    set_try_once(X)  BOOT_ORDER="X Y" BOOT_X_LEFT=<attempts>    (RAUC: set primary)

Each change is one ``fw_setenv -s -`` call: all its variables land in one
environment write. The tools read a config file (``fw_env.config``) naming the
environment device or file, its offset and size; ``create`` makes an
environment file with ``mkenvimage -s 0x4000`` (``fw_setenv`` refuses a blank
file) and a config pointing at it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from common.errors import BootloaderError
from device_agent.update.bootloader import SLOTS, BootState, booted_from_cmdline, other_slot, run_tool

__all__ = ["ENV_SIZE", "UBootBootloader", "uboot_boot"]

ENV_SIZE = 0x4000


class UBootBootloader:
    def __init__(
        self,
        config: str | os.PathLike[str],
        *,
        booted: str | Callable[[], str] = booted_from_cmdline,
        slots: Sequence[str] = SLOTS,
        attempts: int = 3,
        printenv: str = "fw_printenv",
        setenv: str = "fw_setenv",
    ) -> None:
        self.config = Path(config)
        self._booted = booted
        self.slots = tuple(slots)
        self.attempts = attempts
        self.printenv, self.setenv = printenv, setenv

    @classmethod
    def create(
        cls,
        config: str | os.PathLike[str],
        env_file: str | os.PathLike[str],
        *,
        primary: str = "A",
        attempts: int = 3,
        mkenvimage: str = "mkenvimage",
        **kw: object,
    ) -> UBootBootloader:
        """Make an environment file (``mkenvimage -s 0x4000``) with ``primary`` first and good, and its config."""
        other = other_slot(primary)
        text = f"BOOT_ORDER={primary} {other}\nBOOT_{primary}_LEFT={attempts}\nBOOT_{other}_LEFT=0\n"
        doing = f"creating U-Boot environment {str(env_file)!r}"
        run_tool([mkenvimage, "-s", hex(ENV_SIZE), "-o", str(env_file), "-"], doing, input=text)
        try:
            Path(config).write_text(f"{Path(env_file).resolve()} 0x0000 {hex(ENV_SIZE)}\n")
        except OSError as exc:
            raise BootloaderError(f"Failed {doing}: config {str(config)!r}: {exc}") from exc
        return cls(config, attempts=attempts, **kw)  # type: ignore[arg-type]

    def env(self, doing: str = "reading the U-Boot environment") -> dict[str, str]:
        out = run_tool([self.printenv, "-c", str(self.config)], doing)
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def _set(self, doing: str, **values: str) -> None:
        script = "".join(f"{k}={v}\n" for k, v in values.items())
        run_tool([self.setenv, "-c", str(self.config), "-s", "-"], doing, input=script)

    def _slot(self, slot: str, doing: str) -> None:
        if slot not in self.slots:
            raise BootloaderError(f"Failed {doing}: no such slot (slots are {', '.join(self.slots)})")

    # -- the port ---------------------------------------------------------------------------

    def active_slot(self) -> str:
        return self._booted() if callable(self._booted) else self._booted

    def boot_state(self) -> BootState:
        env = self.env("reading the boot state")
        order = env.get("BOOT_ORDER", " ".join(self.slots)).split()
        left = {s: _int(env.get(f"BOOT_{s}_LEFT", "0")) for s in self.slots}
        good = frozenset(s for s in self.slots if left[s] > 0)
        primary = next((s for s in order if s in good), None)
        booted = self.active_slot()
        return BootState(booted, primary, good, bootcount=self.attempts - left.get(booted, 0), bootlimit=self.attempts)

    def mark_good(self, slot: str) -> None:
        doing = f"marking slot {slot} as good"
        self._slot(slot, doing)
        self._set(doing, **{f"BOOT_{slot}_LEFT": str(self.attempts)})

    def mark_bad(self, slot: str) -> None:
        doing = f"marking slot {slot} as bad"
        self._slot(slot, doing)
        self._set(doing, **{f"BOOT_{slot}_LEFT": "0"})

    def set_try_once(self, slot: str) -> None:
        doing = f"setting slot {slot} to boot once"
        self._slot(slot, doing)
        order = " ".join([slot, *(s for s in self.slots if s != slot)])
        self._set(doing, BOOT_ORDER=order, **{f"BOOT_{slot}_LEFT": str(self.attempts)})


def _int(value: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        return 0


def uboot_boot(bl: UBootBootloader) -> str | None:
    """What U-Boot's script does at power-on (RAUC's example): take one attempt of the first slot with any left.

    Returns the slot booted, or None when no slot has attempts left (RAUC's
    script then resets every slot's attempts and resets the board).
    """
    env = bl.env("booting")
    for slot in env.get("BOOT_ORDER", " ".join(bl.slots)).split():
        left = _int(env.get(f"BOOT_{slot}_LEFT", "0"))
        if left > 0:
            bl._set("booting", **{f"BOOT_{slot}_LEFT": str(left - 1)})
            return slot
    return None
