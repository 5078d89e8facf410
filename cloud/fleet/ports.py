"""What the fleet's services need from storage, as ``typing.Protocol`` ports.

The services are handed repositories (``cloud.store.fleet.FleetRecords`` and the others implement these
ports); they never import the store, so the store may depend on the features' record types and not the
other way round (the ``acyclic`` import contract checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from cloud.fleet.rollup import Retention

__all__ = ["CommandRecords", "DeviceRecords", "FleetRecords", "MetricRecords", "ReleaseRecords", "Stores", "TelemetryPartitions"]


class FleetRecords(Protocol):
    """Devices' fleet facts: inventory, groups, lifecycle, config layers and desired config."""

    def fleet_snapshot(self) -> dict[str, Any]: ...

    def layers(self) -> list[dict[str, Any]]: ...

    def put_layer(
        self, kind: str, name: str, values: Mapping[str, Any], locked: Iterable[str], by: str, now_ms: int
    ) -> None: ...

    def set_desired(self, desired: Mapping[str, tuple[str, Mapping[str, Any]]], now_ms: int) -> None: ...

    def transition(
        self, device_id: str, to_state: str, by: str, reason: str, now_ms: int, *, check: Callable[[str, str], None]
    ) -> dict[str, Any]: ...

    def join_groups(self, device_id: str, names: Iterable[str], now_ms: int) -> None: ...

    def register_device(self, device_id: str, site: str, gateway_id: str, now_ms: int) -> None: ...


class CommandRecords(Protocol):
    """Queued commands for devices."""

    def create_command(self, device_id: str, name: str, args: dict[str, str], expires_ms: int, now_ms: int) -> int: ...


class DeviceRecords(Protocol):
    """Devices as telemetry made them known."""

    def list_devices(self) -> list[dict[str, Any]]: ...


class MetricRecords(Protocol):
    def apply_retention(self, retention: Retention, now_ms: int) -> dict[str, int]: ...


class TelemetryPartitions(Protocol):
    def maintain(self, now_ms: int, keep_ms: int | None, ahead_days: int = 3) -> dict[str, int]: ...


class ReleaseRecords(Protocol):
    def list_releases(self, state: str | None = None) -> list[dict[str, Any]]: ...


class Stores(Protocol):
    """The repositories the fleet's periodic jobs use (``cloud.store.Store`` has them all)."""

    @property
    def fleet(self) -> FleetRecords: ...

    @property
    def commands(self) -> CommandRecords: ...

    @property
    def telemetry(self) -> DeviceRecords: ...

    @property
    def metrics(self) -> MetricRecords: ...

    @property
    def releases(self) -> ReleaseRecords: ...

    @property
    def partitions(self) -> TelemetryPartitions: ...
