"""The board profile: what a device integrator writes once so the agent drives the real board.

A ``[board]`` table in the agent's TOML config (each key also a flag of
``edgefleet agent``; a flag overrides the file)::

    [board]
    bootloader = "grub"                        # grub | uboot | sim (the simulated board, for the demo)
    grubenv = "/boot/efi/EFI/BOOT/grubenv"     # grub: the environment block grub-editenv edits
    fw_env_config = "/etc/fw_env.config"       # uboot: where fw_printenv/fw_setenv find the environment
    uboot_attempts = 3                         # uboot: boots a trial slot gets before U-Boot falls back
    slot_a = "/dev/sda2"                       # the two rootfs slots: block devices (or files, for tests)
    slot_b = "/dev/sda3"
    booted_slot = "cmdline:/proc/cmdline"      # rauc.slot=/edgefleet.slot= or root= on it; or "command:CMD"
    version_from = "os-release:/etc/os-release"  # VERSION_ID; or "file:PATH" (its first line); or "command:CMD"
    reboot_command = "systemctl reboot"
    health_commands = ["systemctl is-system-running --wait", "/usr/libexec/selftest"]
    health_command_timeout_s = 120.0           # each command's own limit (killed past it)
    health_timeout_s = 300.0                   # all checks of a trial boot together; past it: roll back
    gateway_within_s = 120.0                   # the trial boot must reach the gateway within this
    # update modules beside the rootfs (device_agent/board/modules.py), each enabled by its key:
    file_target = "/opt/app/current"           # file: a file or directory replaced atomically (made a symlink)
    file_kind = "directory"                    # file: "file" (the artifact is the file) or "directory" (a tar)
    file_restart_command = "systemctl restart app"
    file_health_commands = ["/opt/app/current/bin/selftest"]
    script_module = "/usr/lib/edgefleet/modules/app"  # script: an executable speaking the module protocol

``load_profile`` checks the table (unknown keys, types, a real bootloader
without its slots) and raises ``ConfigError`` naming the key. No I/O here.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from common.errors import ConfigError

__all__ = ["BOOTLOADERS", "BOARD_FLAGS", "BoardProfile", "load_profile"]

BOOTLOADERS = ("sim", "grub", "uboot")


@dataclass(frozen=True, slots=True)
class BoardProfile:
    bootloader: str = "sim"
    grubenv: str = "/boot/grub/grubenv"
    fw_env_config: str = "/etc/fw_env.config"
    uboot_attempts: int = 3
    slot_a: str = ""
    slot_b: str = ""
    booted_slot: str = "cmdline:/proc/cmdline"
    version_from: str = "os-release:/etc/os-release"
    reboot_command: tuple[str, ...] = ("systemctl", "reboot")
    health_commands: tuple[tuple[str, ...], ...] = ()
    health_command_timeout_s: float = 120.0
    health_timeout_s: float = 300.0
    gateway_within_s: float = 120.0
    file_target: str = ""
    file_kind: str = "file"
    file_restart_command: tuple[str, ...] = ()
    file_health_commands: tuple[tuple[str, ...], ...] = ()
    script_module: str = ""

    @property
    def real(self) -> bool:
        return self.bootloader != "sim"

    @property
    def modules(self) -> tuple[str, ...]:
        """The update modules enabled beside the board's own (rootfs-image)."""
        return (*(("file",) if self.file_target else ()), *(("script",) if self.script_module else ()))

    @property
    def slot_devices(self) -> dict[str, str]:
        return {"A": self.slot_a, "B": self.slot_b}


# flag name (the click parameter) -> profile key; the flags of `edgefleet agent` that fill the profile
BOARD_FLAGS = {
    "bootloader": "bootloader",
    "grubenv": "grubenv",
    "fw_env_config": "fw_env_config",
    "slot_a": "slot_a",
    "slot_b": "slot_b",
    "booted_slot_from": "booted_slot",
    "version_from": "version_from",
    "reboot_command": "reboot_command",
    "health_command": "health_commands",
    "health_timeout": "health_timeout_s",
}

_COMMANDS = ("reboot_command", "file_restart_command")
_COMMAND_LISTS = ("health_commands", "file_health_commands")
_SOURCES = {"booted_slot": ("cmdline", "command"), "version_from": ("os-release", "file", "command")}


def _command(source: str, key: str, value: Any) -> tuple[str, ...]:
    words = shlex.split(value) if isinstance(value, str) else value
    if not isinstance(words, list | tuple) or not words or not all(isinstance(w, str) and w for w in words):
        raise ConfigError(f"{source}: board key {key!r} must be a command (a string or a list of words), got {value!r}")
    return tuple(words)


def load_profile(table: Mapping[str, Any], source: str = "config", overrides: Mapping[str, Any] | None = None
                 ) -> BoardProfile:
    """The profile from the config's ``[board]`` table and then ``overrides`` (flags; None values skipped)."""
    known = {f.name: f for f in fields(BoardProfile)}
    merged: dict[str, tuple[str, Any]] = {}
    for where, values in ((source, table), ("command line", overrides or {})):
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: board must be a table, got {values!r}")
        for key, value in values.items():
            if value is None or (where == "command line" and value in ((), [])):
                continue
            if key not in known:
                raise ConfigError(f"{where}: unknown board key {key!r} (known keys: {', '.join(sorted(known))})")
            merged[key] = (where, value)
    out: dict[str, Any] = {}
    for key, (where, value) in merged.items():
        default = known[key].default
        if key in _COMMANDS:
            value = _command(where, key, value)
        elif key in _COMMAND_LISTS:
            if not isinstance(value, list | tuple):
                raise ConfigError(f"{where}: board key {key!r} must be a list of commands, got {value!r}")
            value = tuple(_command(where, key, v) for v in value)
        elif isinstance(default, bool) or type(default) is str:
            if type(value) is not type(default):
                raise ConfigError(f"{where}: board key {key!r} expects {type(default).__name__}, got {value!r}")
        elif isinstance(default, int | float):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{where}: board key {key!r} expects a positive number, got {value!r}")
            value = type(default)(value)
        out[key] = value
    profile = BoardProfile(**out)
    if profile.bootloader not in BOOTLOADERS:
        raise ConfigError(f"{merged['bootloader'][0]}: board key 'bootloader' is {profile.bootloader!r}; "
                          f"one of {', '.join(BOOTLOADERS)}")
    for key, kinds in _SOURCES.items():
        kind, _, arg = getattr(profile, key).partition(":")
        if kind not in kinds or not arg:
            raise ConfigError(f"{merged.get(key, (source,))[0]}: board key {key!r} is {getattr(profile, key)!r}; "
                              f"expected {' or '.join(k + ':...' for k in kinds)}")
    if profile.file_kind not in ("file", "directory"):
        raise ConfigError(f"{merged['file_kind'][0]}: board key 'file_kind' is {profile.file_kind!r}; "
                          "one of file, directory")
    if profile.real and not (profile.slot_a and profile.slot_b):
        raise ConfigError(f"{source}: board bootloader {profile.bootloader!r} needs slot_a and slot_b "
                          "(the two rootfs slots: block devices, or files for a test board)")
    return profile
