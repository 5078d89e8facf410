"""What the running system says: the slot it booted, the version it runs; and the reboot itself.

    booted_slot("cmdline:/proc/cmdline", {"A": "/dev/sda2", "B": "/dev/sda3"})   # "A"
    running_version("os-release:/etc/os-release")                                # "2.0.0"

The booted slot comes from the kernel command line the bootloader built
(``rauc.slot=A`` or ``edgefleet.slot=A``, else ``root=`` naming one of the slot
devices), or from a command that prints the slot's name. The version comes
from ``VERSION_ID`` in an os-release file, the first line of a file, or a
command's output. Failures are ``BootloaderError``/``UpdateError`` naming the
source and the cause.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from common.errors import BootloaderError, UpdateError

__all__ = ["booted_slot", "run_reboot", "running_version"]

SLOT_KEYS = ("rauc.slot", "edgefleet.slot")


def _run(cmd: str, doing: str, error: type[UpdateError]) -> str:
    try:
        done = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, timeout=30, check=False,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        raise error(f"Failed {doing}: command {cmd!r}: {exc}") from exc
    if done.returncode != 0:
        raise error(f"Failed {doing}: command {cmd!r} exited with {done.returncode}: {done.stderr.strip()[-200:]}")
    return done.stdout.strip()


def booted_slot(spec: str, devices: Mapping[str, str]) -> str:
    """The slot running now, by ``spec`` (``cmdline:PATH`` or ``command:CMD``); ``BootloaderError`` otherwise."""
    kind, _, arg = spec.partition(":")
    doing = "reading the booted slot"
    if kind == "command":
        slot = _run(arg, doing, BootloaderError)
        if slot not in devices:
            raise BootloaderError(f"Failed {doing}: command {arg!r} printed {slot!r}, not one of {', '.join(devices)}")
        return slot
    try:
        words = Path(arg).read_text().split()
    except OSError as exc:
        raise BootloaderError(f"Failed {doing} from {arg}: {exc.strerror or exc}") from exc
    values = dict(w.partition("=")[::2] for w in words)
    for key in SLOT_KEYS:
        if values.get(key) in devices:
            return values[key]
    root = values.get("root", "")
    for slot, device in devices.items():
        if root and device and (root == device or os.path.realpath(root) == os.path.realpath(device)):
            return slot
    raise BootloaderError(f"Failed {doing}: {arg} has no {' or '.join(SLOT_KEYS)}= naming a slot and its "
                          f"root={root or '(none)'} is neither slot device ({', '.join(devices.values())})")


def running_version(spec: str) -> str:
    """The running system's version, by ``spec`` (``os-release:PATH``, ``file:PATH`` or ``command:CMD``)."""
    kind, _, arg = spec.partition(":")
    doing = "reading the running version"
    if kind == "command":
        return _run(arg, doing, UpdateError)
    try:
        text = Path(arg).read_text()
    except OSError as exc:
        raise UpdateError(f"Failed {doing} from {arg}: {exc.strerror or exc}") from exc
    if kind == "file":
        return (text.splitlines() or [""])[0].strip()
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "VERSION_ID":
            return value.strip().strip("\"'")
    raise UpdateError(f"Failed {doing}: {arg} has no VERSION_ID line")


def run_reboot(command: Sequence[str]) -> None:
    """Ask the system to reboot (``systemctl reboot`` returns at once; the service manager then stops us)."""
    name = " ".join(command)
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=60, check=False,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        raise UpdateError(f"Failed rebooting: {name!r}: {exc}") from exc
    if done.returncode != 0:
        raise UpdateError(f"Failed rebooting: {name!r} exited with {done.returncode}: {done.stderr.strip()[-200:]}")
