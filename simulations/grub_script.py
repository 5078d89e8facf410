"""GRUB's side of RAUC's GRUB scheme: the boot script, run by the real GRUB (``grub-emu``) or emulated.

``GRUB_CFG`` is the selection script a board's ``grub.cfg`` carries (RAUC's scheme: ORDER, X_OK, X_TRY):
boot the first slot in ORDER with OK=1 and TRY=0 and set its TRY=1 first; when none qualifies, reset
TRY of every OK slot and boot the first OK one; save the environment. It also saves BOOTED (the slot it
chose, ``none`` if no slot is OK), which a real ``grub.cfg`` passes as ``rauc.slot=`` instead.

``grub_emu_boot`` runs that script in the real GRUB: Debian's ``grub-emu`` (GRUB in user space) with the
environment block on an ext2 "boot partition" image (GRUB's ``save_env`` writes the block in place, which
it refuses on a host file); the block is copied in before and out after, to the file the OS side edits
with ``grub-editenv``. ``grub_script_boot`` is the same rules in Python, over ``grub-editenv``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from common.errors import BootloaderError
from common.fileio import write_atomic
from device_agent.update.bootloader import run_tool
from device_agent.update.grub import GrubBootloader

__all__ = ["GRUB_CFG", "grub_emu_boot", "grub_script_boot"]

GRUB_CFG = """\
insmod ext2
load_env -f {env}
set BOOTED=none
for SLOT in $ORDER; do
  if [ "$SLOT" == "A" ]; then OK=$A_OK; TRY=$A_TRY; fi
  if [ "$SLOT" == "B" ]; then OK=$B_OK; TRY=$B_TRY; fi
  if [ "$OK" -eq 1 -a "$TRY" -eq 0 ]; then
    BOOTED=$SLOT
    if [ "$SLOT" == "A" ]; then A_TRY=1; fi
    if [ "$SLOT" == "B" ]; then B_TRY=1; fi
    break
  fi
done
if [ "$BOOTED" == "none" ]; then
  for SLOT in $ORDER; do
    if [ "$SLOT" == "A" -a "$A_OK" -eq 1 ]; then A_TRY=0; if [ "$BOOTED" == "none" ]; then BOOTED=A; A_TRY=1; fi; fi
    if [ "$SLOT" == "B" -a "$B_OK" -eq 1 ]; then B_TRY=0; if [ "$BOOTED" == "none" ]; then BOOTED=B; B_TRY=1; fi; fi
  done
fi
save_env -f {env} A_TRY B_TRY BOOTED
echo "edgefleet-booted $BOOTED"
reboot
"""


def grub_script_boot(bl: GrubBootloader) -> str | None:
    """``GRUB_CFG``'s rules in Python: the slot booted (its TRY set), or None if no slot is OK."""
    env = bl.env("booting")
    order = env.get("ORDER", " ".join(bl.slots)).split()
    for slot in order:
        if env.get(f"{slot}_OK") == "1" and env.get(f"{slot}_TRY", "0") == "0":
            bl._set("booting", **{f"{slot}_TRY": "1"})
            return slot
    ok = [s for s in order if env.get(f"{s}_OK") == "1"]
    if not ok:
        return None
    bl._set("booting", **{f"{s}_TRY": "1" if s == ok[0] else "0" for s in ok})  # reset, then boot the first
    return ok[0]


def grub_emu_boot(grubenv: Path, work: Path, *, grub_emu: str = "grub-emu") -> str | None:
    """Run ``GRUB_CFG`` in the real GRUB on ``grubenv``: the slot it booted, or None if no slot is OK."""
    work.mkdir(parents=True, exist_ok=True)
    modules = work / "x86_64-emu"
    if not modules.exists():
        os.symlink("/usr/lib/grub/x86_64-emu", modules)
    bootfs = work / "bootfs"
    shutil.rmtree(bootfs, ignore_errors=True)
    bootfs.mkdir()
    shutil.copyfile(grubenv, bootfs / "grubenv")
    image = work / "boot.img"
    image.unlink(missing_ok=True)
    run_tool(["mke2fs", "-q", "-F", "-t", "ext2", "-d", str(bootfs), str(image), "1024"], "making the boot partition")
    (work / "device.map").write_text(f"(hd0) {image}\n")
    (work / "grub.cfg").write_text(GRUB_CFG.format(env="(hd0)/grubenv"))
    try:
        done = subprocess.run([grub_emu, "-d", str(work), "-m", str(work / "device.map"), "-r", "host"],
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BootloaderError(f"Failed booting with grub-emu: {exc}") from exc
    out = done.stdout.decode(errors="replace")
    if "edgefleet-booted" not in out:
        raise BootloaderError(f"Failed booting with grub-emu: the script did not run (exit {done.returncode}): "
                              f"{out[-300:]!r}")
    block = run_tool(["debugfs", "-R", "cat /grubenv", str(image)], "reading the environment GRUB saved")
    if len(block.encode()) != 1024:
        raise BootloaderError(f"Failed booting with grub-emu: GRUB left a {len(block.encode())}-byte environment")
    write_atomic(grubenv, block.encode(), 0o644)
    booted = out.split("edgefleet-booted", 1)[1].split()[0]
    return None if booted == "none" else booted
