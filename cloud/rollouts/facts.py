"""What the devices said about themselves that a rollout's targeting needs: the version each runs (its latest
update record) and the update modules each installs (its latest inventory)."""

from __future__ import annotations

from cloud.store.telemetry import TelemetryRecords

__all__ = ["running_versions", "update_modules"]


def running_versions(telemetry: TelemetryRecords) -> dict[str, str]:
    """What each device last said it runs (its latest update record); unknown devices are left out."""
    out: dict[str, str] = {}
    for r in telemetry.records_of_kind("update"):
        if r["values"].get("running_version"):
            out[r["device_id"]] = str(r["values"]["running_version"])
    return out


def update_modules(telemetry: TelemetryRecords) -> dict[str, tuple[str, ...]]:
    """The update modules each device's latest inventory lists (``update_modules``: "a,b"); unreported: left out."""
    out: dict[str, tuple[str, ...]] = {}
    for r in telemetry.records_of_kind("inventory"):
        listed = r["values"].get("update_modules")
        if isinstance(listed, str):
            out[r["device_id"]] = tuple(m for m in listed.split(",") if m)
    return out
