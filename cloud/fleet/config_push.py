"""Desired config per device, and the ``config`` commands that deliver it (plan, then execute).

    pushes = plan_pushes(snapshot, docs)          # no I/O: device -> (version, flat values) that changed
    made = push_configs(store.fleet, store.commands, now_ms)   # record the new desired configs, queue a command each

A device's desired config is the merge of its layers (``cloud.fleet.views.desired_configs``);
when its version differs from the one last recorded, the cloud records the new one and
queues a ``config`` command through the ordinary command path (cloud -> gateway, held
durably -> device). The command's args carry the version under ``VERSION_ARG`` and each
flat key with its value as JSON text (the wire's command args are text, at most 64 of
them, each at most 256 characters). The device writes the document, then reports the
version it applied as the ``config_version`` attribute of its inventory; the store
records it, so drift (desired != applied) is visible.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from cloud.fleet.config_layers import Resolved
from cloud.fleet.views import desired_configs, device_views
from common.errors import FleetError
from common.protocol.codec import MAX_STR, MAX_VALUES

if TYPE_CHECKING:
    from cloud.fleet.ports import CommandRecords, FleetRecords

__all__ = ["CONFIG_COMMAND", "CONFIG_TTL_MS", "VERSION_ARG", "command_args", "plan_pushes", "push_configs"]

CONFIG_COMMAND = "config"
VERSION_ARG = "_version"
CONFIG_TTL_MS = 7 * 24 * 3600 * 1000  # a device offline for a week gets the newest config when it returns


def command_args(resolved: Resolved) -> dict[str, str]:
    """The ``config`` command's args for ``resolved``; ``FleetError`` if it does not fit a command."""
    if len(resolved.values) > MAX_VALUES - 1:
        raise FleetError(
            f"config version {resolved.version} has {len(resolved.values)} keys; a device takes at most "
            f"{MAX_VALUES - 1}: move keys into fewer, structured values"
        )
    args = {VERSION_ARG: resolved.version}
    for key, value in resolved.values.items():
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        if len(key) > MAX_STR or len(text) > MAX_STR:
            raise FleetError(f"config key {key!r}: key and JSON value must each be at most {MAX_STR} characters")
        args[key] = text
    return args


def plan_pushes(
    snap: Mapping[str, Any], docs: Iterable[Mapping[str, Any]]
) -> dict[str, Resolved]:
    """Devices whose desired config changed since it was last recorded (one without any config yet and an
    empty merge is left alone)."""
    views = device_views(snap)
    out = {}
    for device_id, resolved in desired_configs(snap, docs, views).items():
        recorded = snap["config"].get(device_id)
        if recorded is None and not resolved.values:
            continue
        if recorded is None or recorded["desired_version"] != resolved.version:
            out[device_id] = resolved
    return out


def push_configs(
    fleet: FleetRecords, commands: CommandRecords, now_ms: int
) -> tuple[list[tuple[str, int]], list[str]]:
    """Record and queue every changed desired config; returns ((device, command seq) queued, problems)."""
    plan = plan_pushes(fleet.fleet_snapshot(), fleet.layers())
    made: list[tuple[str, int]] = []
    problems: list[str] = []
    ready: dict[str, tuple[str, dict[str, Any]]] = {}
    args_of: dict[str, dict[str, str]] = {}
    for device_id, resolved in sorted(plan.items()):
        try:
            args_of[device_id] = command_args(resolved)
        except FleetError as exc:
            problems.append(f"device {device_id!r}: {exc}")
            continue
        ready[device_id] = (resolved.version, resolved.values)
    fleet.set_desired(ready, now_ms)
    for device_id in sorted(ready):
        seq = commands.create_command(device_id, CONFIG_COMMAND, args_of[device_id], now_ms + CONFIG_TTL_MS, now_ms)
        made.append((device_id, seq))
    return made, problems
