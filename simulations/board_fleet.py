"""The demo's agents on real boards in directories (``edgefleet demo --board grub|uboot``), their reboots played.

Each agent gets a board in ``ROOT/boards/NAME`` (``simulations.board_dir``: ext2 rootfs images in
file-backed slots, a real grubenv or U-Boot environment, the factory release 1.0.0 in slot A) and runs
with that board profile, as on a device. When an update asks for a reboot, the agent runs its reboot
command and exits with 75; ``supervise()`` (called by the demo's loops) sees that, powers the board on
(the bootloader's script on the real environment picks the slot; a system that never comes up is reset
until the bootloader falls back) and starts the agent again, counting what the stopped agent produced.
"""

from __future__ import annotations

from pathlib import Path

from simulations.board_dir import DirBoard, make_rootfs
from simulations.fleet import ProcFleet

__all__ = ["BoardFleet"]

REBOOT_EXIT = 75  # device_agent.cli.REBOOT_EXIT (simulations do not import the agent's CLI)


class BoardFleet:
    def __init__(self, fleet: ProcFleet, root: Path, kind: str) -> None:
        self.fleet, self.root, self.kind = fleet, root / "boards", kind
        self.boards: dict[str, DirBoard] = {}
        self.carried = 0  # bulk samples produced by agents before a reboot stopped them
        self.reboots = 0
        self._factory: Path | None = None

    def lay_out(self, name: str) -> list[str]:
        """A board for agent ``name``; returns the agent's board flags."""
        if self._factory is None:
            self._factory = make_rootfs(self.root / "factory-1.0.0.img", "1.0.0")
        board = DirBoard.create(self.root / name, self.kind, self._factory)
        self.boards[name] = board
        return board.agent_flags()

    def supervise(self) -> list[str]:
        """Boot and restart every agent that stopped for a reboot; returns their names. An agent that
        stopped otherwise is an error naming it and its log."""
        rebooted = []
        for name, board in self.boards.items():
            proc = self.fleet.procs.get(name)
            if proc is None or proc.popen is None or proc.popen.poll() is None:
                continue
            code = proc.popen.returncode
            if code != REBOOT_EXIT or not board.reboot_flag.exists():
                raise RuntimeError(f"agent {name} exited with {code} without a reboot; see {proc.log_path}")
            self.carried += self.fleet.agent_stats(name)["produced"]["bulk"]
            if board.power_on() is None:
                raise RuntimeError(f"the board of {name} does not boot (bricked): {board.root}")
            self.fleet.restart(name)
            self.reboots += 1
            rebooted.append(name)
        return rebooted
