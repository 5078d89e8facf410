"""What a device is and runs (its inventory), read by the driver; the core reports it only when it changes.

Attributes (a flat map of text and numbers, as a record's values must be):

    model              the hardware model firmware manifests name (``--hw``)
    hw                 hardware revision (``--hw-rev``)
    os                 ``platform.system() platform.release()``
    firmware_version   the version of the image the board runs
    slot.active        the slot booted; slot.A, slot.B: the version in each slot ("empty", "corrupt"; the
                       simulated board only)
    update_modules     the update modules the board installs ("rootfs-image,swupdate"), a release names one
    net.hostname, net.ip, edgefleet (the agent's version)
    location           as configured (``--location``), or the config key ``location`` once applied
    storage_free_mb    free space where the agent keeps its data
    config_version     the layered config version the device applied last (``config`` command)

``collect`` never raises for a part it cannot read: the attribute is left out (an inventory is
a report, not a health check). Its I/O is done by the driver, in a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.errors import BootloaderError
from common.fileio import write_atomic
from common.inventory import INVENTORY_KIND, host_inventory

__all__ = ["CONFIG_FILE", "INVENTORY_KIND", "AppliedConfig", "collect"]

CONFIG_FILE = "config.json"


class AppliedConfig:
    """The config document the device applied last, in ``DATA/config.json`` (temp file, fsync, rename)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / CONFIG_FILE

    def read(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def apply(self, args: dict[str, str]) -> tuple[str, str]:
        """The ``config`` command: args ``_version`` and each flat key's value as JSON text."""
        version = args.get("_version", "")
        if not version:
            return "failed", "config: no _version given"
        values: dict[str, Any] = {}
        for key, text in args.items():
            if key == "_version":
                continue
            try:
                values[key] = json.loads(text)
            except ValueError:
                return "failed", f"config: the value of {key!r} is not JSON: {text[:40]!r}"
        write_atomic(self.path, json.dumps({"version": version, "values": values}, sort_keys=True).encode(), 0o644)
        return "done", f"config {version} applied ({len(values)} keys)"


def collect(
    data_dir: Path,
    *,
    model: str,
    hw_rev: str = "",
    location: str = "",
    running: Callable[[], dict[str, str]] | None = None,
    slots: Callable[[], dict[str, str]] | None = None,
    update_modules: tuple[str, ...] = ("rootfs-image", "swupdate"),
) -> dict[str, Any]:
    """The device's inventory now. ``running()`` gives the running image's header, ``slots()`` the booted
    slot (key "active") and each slot's version."""
    out: dict[str, Any] = {"model": model, **host_inventory(data_dir)}
    # the update modules this board installs (a release's manifest names one); a list, carried as "a,b"
    # because record values are numbers or strings
    out["update_modules"] = ",".join(update_modules)
    if hw_rev:
        out["hw"] = hw_rev
    try:
        if running is not None:
            out["firmware_version"] = running().get("version", "?")
        if slots is not None:
            out.update({f"slot.{k}": v for k, v in slots().items()})
    except (OSError, ValueError, BootloaderError):
        pass
    applied = AppliedConfig(data_dir).read()
    if applied.get("version"):
        out["config_version"] = str(applied["version"])
    configured = (applied.get("values") or {}).get("location")
    if isinstance(configured, str) and configured:
        out["location"] = configured
    elif location:
        out["location"] = location
    return out
