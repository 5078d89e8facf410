"""What any EdgeFleet node can say about its host, for its inventory (devices and gateways alike).

    host_inventory(data_dir) -> {"os", "net.hostname", "net.ip", "storage_free_mb", "edgefleet"}

A part that cannot be read is left out (an inventory is a report, not a health check).
Free storage is given in 100 MB steps, so it changes (and is reported again) rarely.
"""

from __future__ import annotations

import platform
import socket
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

__all__ = ["INVENTORY_KIND", "host_inventory"]

INVENTORY_KIND = "inventory"


def _ip() -> str | None:
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    return None


def host_inventory(data_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"os": f"{platform.system()} {platform.release()}".strip(), "net.hostname": socket.gethostname()}
    ip = _ip()
    if ip:
        out["net.ip"] = ip
    try:
        out["storage_free_mb"] = psutil.disk_usage(str(data_dir)).free // (100 << 20) * 100
    except OSError:
        pass
    try:
        out["edgefleet"] = metadata.version("edgefleet")
    except metadata.PackageNotFoundError:
        pass
    return out
