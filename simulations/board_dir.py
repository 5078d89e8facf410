"""A board in a directory: real rootfs images in file-backed slots, a real boot environment, the machine played.

    board = DirBoard.create(root, "grub", make_rootfs(tmp / "1.0.0.img", "1.0.0"))
    board.power_on()                    # GRUB's (or U-Boot's) rules on the real environment pick a slot
    agent_flags = board.agent_flags()   # `edgefleet agent ... --bootloader grub --grubenv ... --slot-a ...`

What is real: the slot content is an ext2 root filesystem (``mke2fs -d``), the
agent's installer writes it raw; the boot environment is a real grubenv edited
by ``grub-editenv`` or a real U-Boot environment read and written by
``fw_printenv``/``fw_setenv``; the agent runs with a board profile, as on a
device. What is played here is the machine: at power-on the bootloader's script
(``simulations.grub_script.GRUB_CFG``, run by the real GRUB in ``grub-emu`` with
kind "grub-emu", emulated with "grub"; or RAUC's U-Boot script, ``uboot_boot``)
picks a slot from the real environment; the "kernel" then mounts that slot, which here
means copying its files out with ``debugfs`` into ``sysroot/`` and writing the
kernel command line (``cmdline``: ``root=<slot> rauc.slot=X``). A slot without
``/sbin/init`` (or not a filesystem) never comes up: the watchdog resets the
board and the bootloader runs again by its own rules. The agent reads its
version from ``sysroot/etc/os-release`` and runs ``sysroot/usr/lib/edgefleet/selftest``
as its health check; its reboot command writes ``reboot-requested``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common.fileio import write_atomic
from device_agent.board.profile import BoardProfile
from device_agent.update.bootloader import SLOTS, other_slot, run_tool
from device_agent.update.grub import GrubBootloader
from device_agent.update.uboot import UBootBootloader, uboot_boot
from simulations.grub_script import grub_emu_boot, grub_script_boot

__all__ = ["SELFTEST", "DirBoard", "make_rootfs"]

SELFTEST = "usr/lib/edgefleet/selftest"
MAX_RESETS = 8  # watchdog resets in a row before the board is called bricked


def make_rootfs(path: Path, version: str, health: str = "ok", size_kb: int = 192) -> Path:
    """An ext2 root filesystem image: /etc/os-release (VERSION_ID), a self-test that passes ("ok") or fails
    ("fail"), and /sbin/init unless ``health`` is "crash" (a system that never comes up)."""
    with tempfile.TemporaryDirectory(prefix="edgefleet-rootfs-") as tmp:
        top = Path(tmp)
        (top / "etc").mkdir()
        (top / "etc" / "os-release").write_text(f'NAME="EdgeFleet test OS"\nVERSION_ID="{version}"\n')
        (top / SELFTEST).parent.mkdir(parents=True)
        (top / SELFTEST).write_text(f"#!/bin/sh\necho 'self-test of {version}: {health}'\n"
                                    f"exit {0 if health == 'ok' else 1}\n")
        (top / SELFTEST).chmod(0o755)
        if health != "crash":
            (top / "sbin").mkdir()
            (top / "sbin" / "init").write_text("#!/bin/sh\n")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        run_tool(["mke2fs", "-q", "-F", "-t", "ext2", "-b", "1024", "-N", "32", "-m", "0", "-E", "root_owner=0:0",
                  "-d", str(top), str(path), str(size_kb)], f"making root filesystem {path}")
    return path


class DirBoard:
    """The files of one board under ``root``; ``kind`` is "grub", "grub-emu" (GRUB's script run by the real
    GRUB, ``grub-emu``, rather than emulated) or "uboot"."""

    def __init__(self, root: Path, kind: str) -> None:
        self.root, self.emu = Path(root), kind == "grub-emu"
        self.kind = "grub" if self.emu else kind
        self.cmdline = self.root / "cmdline"
        self.sysroot = self.root / "sysroot"
        self.reboot_flag = self.root / "reboot-requested"

    def slot_path(self, slot: str) -> Path:
        return self.root / f"slot_{slot}.img"

    @property
    def grubenv(self) -> Path:
        return self.root / "grubenv"

    @property
    def fw_env_config(self) -> Path:
        return self.root / "fw_env.config"

    @classmethod
    def create(cls, root: Path, kind: str, factory: Path | bytes, *, primary: str = "A",
               other: Path | bytes | None = None) -> DirBoard:
        """Lay out the board: ``factory`` in the ``primary`` slot (and ``other``, if given, in the other one,
        bootable too), the boot environment, and power it on."""
        board = cls(root, kind)
        board.root.mkdir(parents=True, exist_ok=True)
        second = other_slot(primary)
        for slot, image in ((primary, factory), (second, other)):
            data = image if isinstance(image, bytes) else (image.read_bytes() if image is not None else b"")
            write_atomic(board.slot_path(slot), data, 0o644)
        if board.kind == "grub":
            bl: GrubBootloader | UBootBootloader = GrubBootloader.create(board.grubenv, primary=primary)
        elif kind == "uboot":
            bl = UBootBootloader.create(board.fw_env_config, board.root / "uboot.env", primary=primary)
        else:
            raise ValueError(f"a board in a directory is grub, grub-emu or uboot, not {kind!r}")
        if other is not None:
            bl.mark_good(second)
        board.power_on()
        return board

    def bootloader(self, **kw: object) -> GrubBootloader | UBootBootloader:
        """The environment as the agent sees it (booted slot read from ``cmdline``)."""
        from device_agent.board.probes import booted_slot

        devices = {s: str(self.slot_path(s)) for s in SLOTS}
        booted = lambda: booted_slot(f"cmdline:{self.cmdline}", devices)  # noqa: E731
        if self.kind == "grub":
            return GrubBootloader(self.grubenv, booted=booted, **kw)  # type: ignore[arg-type]
        return UBootBootloader(self.fw_env_config, booted=booted, **kw)  # type: ignore[arg-type]

    # -- the machine ------------------------------------------------------------------------

    def pick(self) -> str | None:
        """One run of the bootloader's script on the real environment: the slot it boots, or None."""
        if self.emu:
            return grub_emu_boot(self.grubenv, self.root / "grub-emu")
        if self.kind == "grub":
            return grub_script_boot(GrubBootloader(self.grubenv, booted=""))
        return uboot_boot(UBootBootloader(self.fw_env_config))

    def power_on(self) -> str | None:
        """Boot: the bootloader picks a slot; a slot whose system does not come up is reset by the watchdog
        and the bootloader runs again. Returns the slot running, or None if the board is bricked."""
        self.reboot_flag.unlink(missing_ok=True)
        for _ in range(MAX_RESETS):
            slot = self.pick()
            if slot is None:
                return None
            if self.mount(slot):
                write_atomic(self.cmdline, f"root={self.slot_path(slot)} rauc.slot={slot} rw\n".encode(), 0o644)
                return slot
        return None

    def mount(self, slot: str) -> bool:
        """The "kernel" mounts the slot: its files into ``sysroot/``. False if it holds no bootable system."""
        shutil.rmtree(self.sysroot, ignore_errors=True)
        self.sysroot.mkdir(parents=True)
        done = subprocess.run(["debugfs", "-R", f"rdump / {self.sysroot}", str(self.slot_path(slot))],
                              capture_output=True, text=True, check=False)
        return done.returncode == 0 and (self.sysroot / "sbin" / "init").exists()

    def running_version(self) -> str:
        from device_agent.board.probes import running_version

        return running_version(f"os-release:{self.sysroot / 'etc' / 'os-release'}")

    # -- the agent's view ---------------------------------------------------------------------

    def reboot_command(self) -> str:
        return f"{sys.executable} -c \"import pathlib; pathlib.Path('{self.reboot_flag}').touch()\""

    def profile(self, **kw: object) -> BoardProfile:
        from device_agent.board.profile import load_profile

        return load_profile(self.table(), "board in a directory", kw)

    def table(self) -> dict[str, object]:
        """The ``[board]`` table of the agent's config for this board."""
        env = {"grubenv": str(self.grubenv)} if self.kind == "grub" else {"fw_env_config": str(self.fw_env_config)}
        return {"bootloader": self.kind, **env, "slot_a": str(self.slot_path("A")), "slot_b": str(self.slot_path("B")),
                "booted_slot": f"cmdline:{self.cmdline}",
                "version_from": f"os-release:{self.sysroot / 'etc' / 'os-release'}",
                "reboot_command": self.reboot_command(),
                "health_commands": [f"/bin/sh {self.sysroot / SELFTEST}"],
                "health_command_timeout_s": 10.0, "health_timeout_s": 30.0, "gateway_within_s": 20.0}

    def agent_flags(self) -> list[str]:
        t = self.table()
        env = ["--grubenv", str(t["grubenv"])] if self.kind == "grub" else ["--fw-env-config", str(t["fw_env_config"])]
        return ["--bootloader", self.kind, *env, "--slot-a", str(t["slot_a"]), "--slot-b", str(t["slot_b"]),
                "--booted-slot-from", str(t["booted_slot"]), "--version-from", str(t["version_from"]),
                "--reboot-command", str(t["reboot_command"]),
                *[a for c in t["health_commands"] for a in ("--health-command", c)],  # type: ignore[attr-defined]
                "--health-timeout", str(t["health_timeout_s"])]


