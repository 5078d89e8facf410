"""The two boards the agent's updater drives: the simulated one (demo) and a real one (a profile).

Both give the updater the same things: a ``Bootloader`` (the port), the slot
paths, the running version, health checks for a trial boot, the slot versions
for the inventory, the update modules the board installs, and ``reboot()``.

``SimBoard`` is ``DATA/board``: two slot files and a simulated U-Boot-like
environment, a factory image in slot A on first start, images whose header
names their version and the result of their self-test (``simimage``). Its
reboot is played in process (``in_process_reboot``).

``RealBoard`` follows a ``BoardProfile``: GRUB (``grub-editenv``) or U-Boot
(``fw_printenv``/``fw_setenv``), slot block devices (or files), the booted slot
and version read from the running system (no header of ours in an image), the
profile's health commands, and a real reboot: the reboot command runs and the
agent stops; on its next start it resumes the update from its record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from device_agent import simimage
from device_agent.board.probes import booted_slot, run_reboot, running_version
from device_agent.board.profile import BoardProfile

if TYPE_CHECKING:  # the update machinery loads when an update runs, not when the agent starts
    from device_agent.update.bootloader import Bootloader, SimBootloader
    from device_agent.update.health import HealthResult

__all__ = ["FACTORY_VERSION", "Board", "RealBoard", "SimBoard", "make_board"]

FACTORY_VERSION = "1.0.0"


class Board(Protocol):
    kind: str
    in_process_reboot: bool  # True: reboot() boots again here; False: the system reboots and the agent stops
    update_modules: tuple[str, ...]
    health_timeout_s: float

    def bootloader(self) -> Bootloader: ...

    def slot_paths(self) -> dict[str, Path]: ...

    def running_version(self) -> str: ...

    def slot_versions(self) -> dict[str, str]: ...

    def health(self, version: str, timeout_s: float) -> HealthResult | None: ...

    def reboot(self) -> None: ...


class SimBoard:
    kind = "sim"
    in_process_reboot = True
    update_modules = simimage.UPDATE_MODULES
    health_timeout_s = 60.0

    def __init__(self, root: Path, *, link_up: Callable[[], bool], gateway_within_s: float = 15.0) -> None:
        self.root = root
        self.link_up = link_up
        self.gateway_within_s = gateway_within_s

    def bootloader(self) -> SimBootloader:
        from device_agent.update.bootloader import SimBootloader

        if not (self.root / "bootenv.json").exists():
            factory = simimage.make(FACTORY_VERSION, "ok", 64 * 1024)
            return SimBootloader.create(self.root, {"A": factory, "B": None})
        return SimBootloader(self.root)

    def slot_paths(self) -> dict[str, Path]:
        sim = self.bootloader()
        return {s: sim.slot_path(s) for s in sim.slots}

    def running(self) -> dict[str, str]:
        """The header of the image the board runs (version and self-test)."""
        sim = self.bootloader()
        return simimage.info(sim.slot_path(sim.active_slot()).read_bytes()) or {"version": "?", "health": "corrupt"}

    def running_version(self) -> str:
        return self.running()["version"]

    def slot_versions(self) -> dict[str, str]:
        sim = self.bootloader()
        out = {"active": sim.active_slot()}
        for slot in sim.slots:
            path = sim.slot_path(slot)
            info = simimage.info(path.read_bytes()) if path.exists() else None
            out[slot] = info["version"] if info else ("empty" if not path.exists() else "corrupt")
        return out

    def health(self, version: str, timeout_s: float) -> HealthResult | None:
        from device_agent.update.health import HealthResult

        info = self.running()
        if info["health"] != "ok":
            return HealthResult(False, f"self-test of {info['version']} failed ({info['health']})")
        if info["version"] != version:
            return HealthResult(False, f"running version {info['version']!r} is not the manifest's {version!r}")
        deadline = time.monotonic() + min(timeout_s, self.gateway_within_s)
        while not self.link_up():
            if time.monotonic() > deadline:
                return HealthResult(False, f"did not reach the gateway within {self.gateway_within_s:g} s")
            time.sleep(0.2)  # a worker thread waiting for the event loop's link state
        return HealthResult(True)

    def reboot(self) -> None:
        self.bootloader().power_on()  # the bootloader runs: trial slot, or fall back


class RealBoard:
    """A board described by a profile; nothing on it is simulated."""

    kind = "real"
    in_process_reboot = False
    update_modules: tuple[str, ...] = ("rootfs-image",)

    def __init__(self, profile: BoardProfile, *, link_up: Callable[[], bool]) -> None:
        self.profile = profile
        self.link_up = link_up
        self.health_timeout_s = profile.health_timeout_s
        devices = profile.slot_devices
        booted = lambda: booted_slot(profile.booted_slot, devices)  # noqa: E731
        if profile.bootloader == "grub":
            from device_agent.update.grub import GrubBootloader

            self._bootloader: Bootloader = GrubBootloader(profile.grubenv, booted=booted)
        else:
            from device_agent.update.uboot import UBootBootloader

            self._bootloader = UBootBootloader(profile.fw_env_config, booted=booted, attempts=profile.uboot_attempts)

    def bootloader(self) -> Bootloader:
        return self._bootloader

    def slot_paths(self) -> dict[str, Path]:
        return {slot: Path(dev) for slot, dev in self.profile.slot_devices.items()}

    def running_version(self) -> str:
        return running_version(self.profile.version_from)

    def slot_versions(self) -> dict[str, str]:
        """The booted slot and the version it runs (the other slot's is not read: a partition is not hashed
        for an inventory)."""
        slot = self._bootloader.active_slot()
        return {"active": slot, slot: self.running_version()}

    def health(self, version: str, timeout_s: float) -> HealthResult | None:
        from device_agent.update.health import gateway_reached, hook_commands, run_health_checks, version_matches

        p = self.profile
        checks = [version_matches(self.running_version)]
        if p.health_commands:
            checks.append(hook_commands(p.health_commands, timeout_s=p.health_command_timeout_s))
        checks.append(gateway_reached(self.link_up, within_s=p.gateway_within_s, clock=time.monotonic,
                                      wait=time.sleep))
        return run_health_checks(checks, version, timeout_s=min(timeout_s, p.health_timeout_s))

    def reboot(self) -> None:
        run_reboot(self.profile.reboot_command)


def make_board(profile: BoardProfile, data_dir: Path, *, link_up: Callable[[], bool],
               gateway_within_s: float = 15.0) -> Any:
    """The board a profile describes (``sim``: the simulated board in ``DATA/board``)."""
    if profile.real:
        return RealBoard(profile, link_up=link_up)
    return SimBoard(data_dir / "board", link_up=link_up, gateway_within_s=gateway_within_s)
