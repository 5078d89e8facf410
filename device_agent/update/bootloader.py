"""Slots and bootloaders behind one port, and the simulated bootloader.

Two slots, ``A`` and ``B``. The port (``Bootloader``) is what the update driver
needs: which slot booted, mark a slot good or bad, and arm a slot for trial
boots ("try once"): the next boots go to it, and if it is not marked good
within the boot limit the bootloader falls back to the other slot by itself.

Backends: ``SimBootloader`` here (the default for tests and simulations),
``GrubBootloader`` (``device_agent.update.grub``, RAUC's GRUB scheme through
``grub-editenv``) and ``UBootBootloader`` (``device_agent.update.uboot``, RAUC's
U-Boot scheme through ``fw_printenv``/``fw_setenv``). Errors are
``BootloaderError`` naming the slot and the cause.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from common.errors import BootloaderError
from common.fileio import write_atomic

__all__ = [
    "SLOTS",
    "BootState",
    "Bootloader",
    "SimBootloader",
    "booted_from_cmdline",
    "other_slot",
    "run_tool",
]

SLOTS = ("A", "B")


def other_slot(slot: str, slots: Sequence[str] = SLOTS) -> str:
    """The slot that is not ``slot`` (the inactive one, when ``slot`` is running)."""
    if slot not in slots:
        raise BootloaderError(f"unknown slot {slot!r}; slots are {', '.join(slots)}")
    return next(s for s in slots if s != slot)


@dataclass(frozen=True, slots=True)
class BootState:
    """What a bootloader's environment says. ``trial``/``bootcount`` are None where the scheme cannot tell."""

    booted: str  # the slot running now
    primary: str | None  # the slot the next boot picks; None: no slot is bootable
    good: frozenset[str]  # slots the next boots may pick
    trial: str | None = None  # a slot armed for try-once boots, not yet marked good
    bootcount: int | None = None  # boots of the trial slot so far
    bootlimit: int | None = None  # boots allowed before falling back


@runtime_checkable
class Bootloader(Protocol):
    """The port the update driver uses; one implementation per bootloader."""

    slots: tuple[str, ...]

    def active_slot(self) -> str:
        """The slot that booted (is running now)."""
        ...

    def boot_state(self) -> BootState: ...

    def mark_good(self, slot: str) -> None:
        """The slot booted and passed its checks: keep booting it (commit)."""
        ...

    def mark_bad(self, slot: str) -> None:
        """Never boot the slot (before writing it, or to roll back from it)."""
        ...

    def set_try_once(self, slot: str) -> None:
        """Boot the slot next, on trial: unless it is marked good within the boot limit, fall back."""
        ...


def booted_from_cmdline(path: str = "/proc/cmdline", keys: Sequence[str] = ("edgefleet.slot", "rauc.slot")) -> str:
    """The booted slot as the bootloader passed it on the kernel command line (``rauc.slot=A``)."""
    try:
        words = Path(path).read_text().split()
    except OSError as exc:
        raise BootloaderError(f"Failed reading the booted slot from {path}: {exc}") from exc
    for word in words:
        key, _, value = word.partition("=")
        if key in keys and value:
            return value
    raise BootloaderError(f"Failed reading the booted slot: no {' or '.join(keys)}= on {path}")


def run_tool(args: Sequence[str], doing: str, *, input: str | None = None, timeout_s: float = 30.0) -> str:
    """Run a bootloader tool; translate any failure into ``BootloaderError(f"Failed {doing}: ...")``."""
    try:
        done = subprocess.run(
            list(args), input=input, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise BootloaderError(f"Failed {doing}: {args[0]}: {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise BootloaderError(f"Failed {doing}: {args[0]} exited with {done.returncode}: {detail}")
    return done.stdout


# -- the simulated bootloader --------------------------------------------------------------

_ENV_FORMAT = 1


class SimBootloader:
    """Two slot files and an environment file, booted like U-Boot with bootcount.

    The environment (``bootenv.json``, replaced atomically) holds the boot order
    (primary first), each slot's status (good/bad), the try-once slot, the boot
    counter and the boot limit. ``power_on()`` plays the bootloader: with a
    try-once slot armed it increments the counter and boots that slot while the
    counter is within the limit; past the limit it marks the trial slot bad,
    disarms it and boots the primary (``altbootcmd``). Without a trial it boots
    the first good slot in boot order.

    ``after_write`` is called after every environment write (the power-cut
    harness cuts power there).
    """

    def __init__(self, root: str | os.PathLike[str], *, after_write: Callable[[str], None] | None = None) -> None:
        self.root = Path(root)
        self.env_path = self.root / "bootenv.json"
        self.after_write = after_write
        self.slots = SLOTS

    def slot_path(self, slot: str) -> Path:
        other_slot(slot)  # validates
        return self.root / f"slot_{slot}.img"

    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        images: dict[str, bytes | None],
        *,
        primary: str = "A",
        bootlimit: int = 3,
        after_write: Callable[[str], None] | None = None,
    ) -> SimBootloader:
        """Lay out a fresh device: slot files with ``images`` (None: empty and bad), ``primary`` booting."""
        sim = cls(root, after_write=after_write)
        sim.root.mkdir(parents=True, exist_ok=True)
        status = {}
        for slot in SLOTS:
            data = images.get(slot)
            write_atomic(sim.slot_path(slot), data or b"", 0o644)
            status[slot] = "good" if data else "bad"
        if status[primary] != "good":
            raise BootloaderError(f"Failed creating the simulated device: primary slot {primary} has no image")
        env = {
            "format": _ENV_FORMAT,
            "order": [primary, other_slot(primary)],
            "status": status,
            "try_once": "",
            "bootcount": 0,
            "bootlimit": bootlimit,
            "booted": primary,
        }
        write_atomic(sim.env_path, json.dumps(env).encode(), 0o644)
        return sim

    # -- the environment ------------------------------------------------------------------

    def _read(self, doing: str) -> dict:
        try:
            env = json.loads(self.env_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise BootloaderError(f"Failed {doing}: environment {str(self.env_path)!r}: {exc}") from exc
        if not isinstance(env, dict) or env.get("format") != _ENV_FORMAT:
            raise BootloaderError(f"Failed {doing}: environment {str(self.env_path)!r} has an unknown format")
        return env

    def _write(self, env: dict, doing: str) -> None:
        try:
            write_atomic(self.env_path, json.dumps(env).encode(), 0o644)
        except OSError as exc:
            raise BootloaderError(f"Failed {doing}: {exc}") from exc
        if self.after_write is not None:
            self.after_write(doing)

    # -- the bootloader itself (what runs before the OS) --------------------------------------

    def power_on(self) -> str:
        """Boot: pick a slot like U-Boot's bootcount/altbootcmd, save the environment, return the slot."""
        doing = "booting"
        env = self._read(doing)
        trial = env["try_once"]
        if trial and env["status"].get(trial) != "bad":
            env["bootcount"] += 1
            if env["bootcount"] <= env["bootlimit"]:
                env["booted"] = trial
                self._write(env, doing)
                return trial
            env["status"][trial] = "bad"  # altbootcmd: the trial slot used up its boots
            env["try_once"], env["bootcount"] = "", 0
        for slot in env["order"]:
            if env["status"].get(slot) == "good":
                env["booted"] = slot
                self._write(env, doing)
                return slot
        raise BootloaderError("Failed booting: no slot is marked good (the device is bricked)")

    # -- the port ---------------------------------------------------------------------------

    def active_slot(self) -> str:
        return str(self._read("reading the booted slot")["booted"])

    def boot_state(self) -> BootState:
        env = self._read("reading the boot state")
        good = frozenset(s for s, st in env["status"].items() if st == "good")
        trial = env["try_once"] or None
        primary = trial if trial and env["bootcount"] < env["bootlimit"] else next(
            (s for s in env["order"] if s in good), None
        )
        return BootState(env["booted"], primary, good, trial, env["bootcount"], env["bootlimit"])

    def mark_good(self, slot: str) -> None:
        doing = f"marking slot {slot} as good"
        self._check(slot, doing)
        env = self._read(doing)
        env["status"][slot] = "good"
        if env["try_once"] == slot:  # commit: the trial slot becomes primary
            env["try_once"], env["bootcount"] = "", 0
            env["order"] = [slot, *(s for s in env["order"] if s != slot)]
        self._write(env, doing)

    def mark_bad(self, slot: str) -> None:
        doing = f"marking slot {slot} as bad"
        self._check(slot, doing)
        env = self._read(doing)
        env["status"][slot] = "bad"
        if env["try_once"] == slot:
            env["try_once"], env["bootcount"] = "", 0
        env["order"] = [*(s for s in env["order"] if s != slot), slot]
        self._write(env, doing)

    def set_try_once(self, slot: str) -> None:
        doing = f"setting slot {slot} to boot once"
        self._check(slot, doing)
        env = self._read(doing)
        env["try_once"], env["bootcount"] = slot, 0
        env["status"][slot] = "trial"
        self._write(env, doing)

    def _check(self, slot: str, doing: str) -> None:
        if slot not in self.slots:
            raise BootloaderError(f"Failed {doing}: no such slot (slots are {', '.join(self.slots)})")
