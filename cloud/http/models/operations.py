"""Response models of the alert, release, rollout and security routes."""

from __future__ import annotations

from typing import Any

import pydantic

from cloud.http.models.errors import Row

__all__ = [
    "AlertRow", "AlertsPage", "ApproveResult", "AuditPage", "ClaimToken", "DdiTokenIssued", "DdiTokenRevoked",
    "DdiTokenRow", "DdiTokensPage", "DryRun", "Identity", "IdentitiesPage",
    "Me", "Preauthorized", "ReleaseRow", "ReleasesPage", "Reprovisioned", "Revocations", "Revoked", "RolloutRow",
    "RolloutView", "RolloutsPage", "Rotating", "SilenceRow", "SilencesPage", "TokenMade", "UserMade",
]

Cursor = str | None


class AlertRow(Row):
    id: str
    rule: str
    type: str
    subject: str
    severity: str
    state: str
    opened_ms: int
    resolved_ms: int | None = None
    acked_by: str | None = None
    acked_ms: int | None = None
    last_event: str
    last_event_ms: int
    detail: dict[str, Any]


class AlertsPage(pydantic.BaseModel):
    alerts: list[AlertRow]
    next_cursor: Cursor = None


class SilenceRow(Row):
    id: int
    target: str
    until_ms: int
    created_ms: int
    created_by: str
    reason: str


class SilencesPage(pydantic.BaseModel):
    silences: list[SilenceRow]
    next_cursor: Cursor = None


class DeltaRow(Row):
    from_version: str
    status: str
    method: str | None = None
    size: int | None = None
    sha256: str | None = None
    detail: dict[str, Any] | str | None = None


class ReleaseRow(Row):
    """A release; one release (GET /v1/releases/{version}) adds ``signed_by``, ``manifest``, ``manifest_body``
    and ``signed_manifest``, a new one ``manifest`` and ``manifest_body`` (the text to sign)."""

    version: str
    hw: list[str]
    state: str
    size: int | None = None
    sha256: str | None = None
    security_version: int
    created_ms: int
    published_ms: int | None = None
    deltas: list[DeltaRow]
    signed_by: list[str] | None = None


class ReleasesPage(pydantic.BaseModel):
    releases: list[ReleaseRow]
    next_cursor: Cursor = None


class RolloutRow(Row):
    id: str
    release: str
    state: str
    reason: str | None = None
    stage: str
    stage_index: int
    stages: list[str]
    created_ms: int
    updated_ms: int
    counters: dict[str, int]


class RolloutDevice(Row):
    device_id: str
    site: str
    stage: int
    state: str
    reason: str | None = None
    attempts: int


class RolloutView(RolloutRow):
    progress: dict[str, dict[str, dict[str, int]]] = pydantic.Field(description="stage -> site -> state -> devices")
    totals: dict[str, int]
    plan: dict[str, Any]
    devices: list[RolloutDevice]


class RolloutsPage(pydantic.BaseModel):
    rollouts: list[RolloutRow]
    next_cursor: Cursor = None


class DryRunStage(pydantic.BaseModel):
    stage: str
    devices: list[str]
    sites: dict[str, int] = pydantic.Field(description="site -> devices of this stage there")


class DryRun(pydantic.BaseModel):
    """Who a rollout would target and when each site could start (its next maintenance window)."""

    release: str
    targeted: int
    skipped: dict[str, str] = pydantic.Field(description="device -> why it is left out")
    stages: list[DryRunStage]
    starts: dict[str, int | None] = pydantic.Field(
        description="site -> the earliest time (ms) an install may start there; null: no window opens")


class Identity(Row):
    device_id: str
    site: str
    hw: str
    serial: str
    status: str
    gateway_id: str | None = None
    cert_serial: str | None = None
    not_after_ms: int | None = None


class IdentitiesPage(pydantic.BaseModel):
    identities: list[Identity]
    next_cursor: Cursor = None


class ApproveResult(pydantic.BaseModel):
    device_id: str
    serial: str
    site: str


class Revocations(pydantic.BaseModel):
    version: int
    revoked: dict[str, Any]
    quarantined: dict[str, Any]


class Reprovisioned(pydantic.BaseModel):
    device_id: str
    reprovision: bool


class Rotating(pydantic.BaseModel):
    rotating: list[str]


class ClaimToken(pydantic.BaseModel):
    token: str
    token_id: str
    site: str
    uses: int
    expires_ms: int


class Revoked(pydantic.BaseModel):
    token_id: str
    revoked: bool


class Preauthorized(pydantic.BaseModel):
    preauthorized: int


class AuditRow(pydantic.BaseModel):
    seq: int
    who: str
    action: str
    target: str
    when_ms: int
    source: str
    result: str
    detail: str
    prev_hash: str
    hash: str


class AuditPage(pydantic.BaseModel):
    records: list[AuditRow]
    head: str
    verified: bool
    problem: str
    total: int
    next_cursor: Cursor = None


class UserMade(pydantic.BaseModel):
    user_id: str
    role: str
    sites: list[str] | None = None


class TokenMade(pydantic.BaseModel):
    token: str
    token_id: str
    user_id: str
    role: str
    sites: list[str] | None = None
    expires_ms: int | None = None


class Me(pydantic.BaseModel):
    """Who the bearer token stands for: its name, role and sites (null: every site)."""

    name: str
    role: str
    sites: list[str] | None = None
    token_id: str | None = None


class DdiTokenIssued(pydantic.BaseModel):
    token: str
    device_id: str
    site: str
    hw: str


class DdiTokenRevoked(pydantic.BaseModel):
    device_id: str
    revoked: bool


class DdiTokenRow(Row):
    device_id: str
    site_id: str
    hw: str
    issued_ms: int
    revoked_ms: int | None = None


class DdiTokensPage(pydantic.BaseModel):
    tokens: list[DdiTokenRow]
    next_cursor: Cursor = None
