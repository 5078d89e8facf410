"""Platform metrics for telemetry, via psutil: only what this platform has is reported.

``overrides`` (set by the ``simulate`` command on an agent that allows simulation)
replace or add metrics in every sample taken while they are set.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import psutil

__all__ = ["sample_metrics"]


def sample_metrics(disk_path: str = "/", overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """CPU, memory, disk and uptime always; battery where the platform has one; then ``overrides``."""
    values = {
        "cpu_percent": float(psutil.cpu_percent(interval=None)),
        "mem_percent": float(psutil.virtual_memory().percent),
        "disk_percent": float(psutil.disk_usage(disk_path).percent),
        "uptime_s": round(time.time() - psutil.boot_time(), 1),
    }
    battery = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
    if battery is not None:
        values["battery_percent"] = float(battery.percent)
    if overrides:
        values.update(overrides)
    return values
