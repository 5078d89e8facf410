"""Response models of the device, site, telemetry and fleet routes (``cloud.http.devices``, ``cloud.http.fleet``)."""

from __future__ import annotations

from typing import Any

import pydantic

from cloud.http.models.errors import Row

__all__ = [
    "CommandCreated", "CommandsPage", "ConfigExplain", "ConfigSetResult", "ConfigStatusPage", "DeletedBody",
    "DevicesPage", "FleetDevicesPage", "FleetSitesPage", "GapsBody", "GhostsPage", "GroupRow", "GroupsPage",
    "HistoryPage", "HistoryRow", "LayersPage", "LogsPage", "MembersBody", "MetricsPage", "RecordRow", "SiteDetail",
    "SitesPage", "TagsBody", "TelemetrySummary", "UpdatesPage",
]

Cursor = str | None


class DeviceRow(Row):
    device_id: str
    site_id: str
    gateway_id: str | None = None
    first_seen_ms: int
    last_seen_ms: int
    last_seq: int | None = None
    state: str | None = None


class DevicesPage(pydantic.BaseModel):
    devices: list[DeviceRow]
    next_cursor: Cursor = None


class SiteRow(Row):
    site_id: str
    first_seen_ms: int
    last_seen_ms: int
    gateway_count: int
    device_count: int
    links: dict[str, str | None]


class SitesPage(pydantic.BaseModel):
    sites: list[SiteRow]
    next_cursor: Cursor = None


class GatewayHealth(Row):
    gateway_id: str
    first_seen_ms: int
    last_seen_ms: int
    status: dict[str, Any] | None = pydantic.Field(None, description="The gateway's newest status report")
    status_ts_ms: int | None = None
    devices: int
    inventory: dict[str, Any] | None = pydantic.Field(None, description="The gateway's own inventory (host, site cache)")


class SiteDevices(Row):
    total: int
    online: int
    online_within_ms: int


class SiteDetail(Row):
    site_id: str
    first_seen_ms: int
    last_seen_ms: int
    gateways: list[GatewayHealth]
    devices: SiteDevices
    gap_totals: list[Row]


class StreamSummary(Row):
    device_id: str
    stream: str
    count: int
    min_seq: int
    max_seq: int


class TelemetrySummary(pydantic.BaseModel):
    rows: int
    distinct: int
    duplicates_stored: int
    devices: list[StreamSummary]
    next_cursor: Cursor = None


class RecordRow(Row):
    device_id: str
    stream: str
    seq: int
    ts_ms: int
    values: dict[str, Any]


class UpdatesPage(pydantic.BaseModel):
    updates: list[RecordRow]
    next_cursor: Cursor = None


class LogsPage(pydantic.BaseModel):
    logs: list[RecordRow]
    next_cursor: Cursor = None


class GapsBody(pydantic.BaseModel):
    gaps: list[Row]
    totals: list[Row]
    missing: dict[str, list[list[int]]] | None = pydantic.Field(
        None, description="With a device: per stream, the sequence ranges missing without a gap report")
    next_cursor: Cursor = None


class CommandRow(Row):
    device_id: str
    seq: int
    name: str
    args: dict[str, Any] | None = None
    created_ms: int
    expires_ms: int
    status: str
    detail: str | None = None
    updated_ms: int | None = None


class CommandsPage(pydantic.BaseModel):
    commands: list[CommandRow]
    next_cursor: Cursor = None


class CommandCreated(pydantic.BaseModel):
    device_id: str
    seq: int
    expires_ms: int


class ConfigState(Row):
    desired_version: str | None = None
    applied_version: str | None = None
    drift: bool


class FleetDevice(DeviceRow):
    tags: list[str]
    groups: list[str]
    inventory: dict[str, Any]
    config: ConfigState


class FleetDevicesPage(pydantic.BaseModel):
    devices: list[FleetDevice]
    next_cursor: Cursor = None


class TagsBody(pydantic.BaseModel):
    device_id: str
    tags: list[str]


class HistoryRow(Row):
    device_id: str
    from_state: str
    to_state: str
    by: str
    reason: str
    at_ms: int


class HistoryPage(pydantic.BaseModel):
    history: list[HistoryRow]
    next_cursor: Cursor = None


class GhostRow(DeviceRow):
    silent_ms: int


class GhostsPage(pydantic.BaseModel):
    silent_s: float
    ghosts: list[GhostRow]
    next_cursor: Cursor = None


class GroupRow(Row):
    name: str
    kind: str
    query: str | None = None
    created_ms: int
    members: list[str] = []


class GroupsPage(pydantic.BaseModel):
    groups: list[GroupRow]
    next_cursor: Cursor = None


class DeletedBody(pydantic.BaseModel):
    deleted: str


class MembersBody(pydantic.BaseModel):
    name: str
    members: list[str]


class LayerRow(Row):
    kind: str
    name: str
    values: dict[str, Any]
    locked: list[str]
    updated_ms: int
    updated_by: str


class LayersPage(pydantic.BaseModel):
    layers: list[LayerRow]
    next_cursor: Cursor = None


class ConfigSetResult(Row):
    changed: dict[str, list[str]]
    refused: list[Any]
    queued: list[Row]


class ConfigExplain(Row):
    device_id: str
    version: str | None = None
    applied_version: str | None = None
    keys: list[Row]


class DeviceConfigState(ConfigState):
    device_id: str


class ConfigStatusPage(pydantic.BaseModel):
    devices: list[DeviceConfigState]
    next_cursor: Cursor = None


class MetricPoint(Row):
    device_id: str
    metric: str
    ts_ms: int


class MetricsPage(pydantic.BaseModel):
    tier: str
    since_ms: int
    until_ms: int
    points: list[MetricPoint]
    next_cursor: Cursor = None


class GatewayLink(Row):
    gateway_id: str
    link: str | None = None
    backlog_bytes: int
    last_seen_ms: int
    backlog: dict[str, dict[str, int | float]] = pydantic.Field({}, description="stream -> records, bytes, oldest_age_s")


class SiteCounts(Row):
    total: int
    online: int
    offline: int


class SiteOverview(Row):
    site_id: str
    gateways: list[GatewayLink]
    devices: SiteCounts
    firmware: dict[str, int]
    open_alerts: int
    backlog_bytes: int
    backlog: dict[str, dict[str, int | float]] = pydantic.Field({}, description="stream -> records, bytes")
    oldest_age_s: float = pydantic.Field(0.0, description="Age of the oldest record waiting at any gateway of the site")


class FleetSitesPage(pydantic.BaseModel):
    sites: list[SiteOverview]
    next_cursor: Cursor = None
