"""What the security services need from storage, as ``typing.Protocol`` ports.

``cloud.store.security.SecurityRecords`` implements ``SecurityRecords``; the services never import the
store, so the store may depend on the record types defined here (the ``acyclic`` import contract checks it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from cloud.security.audit import AuditRecord
from cloud.security.enrollment import ClaimToken, DeviceBinding, Preauthorization

__all__ = ["SecurityRecords"]


class SecurityRecords(Protocol):
    """Identities, claim tokens, preauthorizations, revocation list versions and the audit log."""

    def append_audit(self, *, who: str, action: str, target: str, when_ms: int, source: str, result: str | bool,
                     detail: str = "") -> AuditRecord: ...

    def binding(self, device_id: str) -> DeviceBinding | None: ...

    def claim_token(self, token_id: str) -> ClaimToken | None: ...

    def save_claim_token(self, rec: ClaimToken, now_ms: int) -> None: ...

    def enroll(
        self, *, device_id: str, site: str, hw: str, serial: str, curve_key: str, status: str, gateway_id: str,
        cert_serial: str | None, not_after_ms: int | None, groups: Iterable[str], consume_token: str | None, now_ms: int,
    ) -> bool: ...

    def identity(self, device_id: str) -> dict[str, Any] | None: ...

    def preauthorization(self, serial: str) -> Preauthorization | None: ...

    def preauthorize(self, serial: str, site: str, device_id: str | None, now_ms: int) -> None: ...

    def revocation_list(self) -> tuple[int, dict[str, str], dict[str, str]]: ...

    def save_revocation_list(self, version: int, revoked: dict[str, str], quarantined: dict[str, str], now_ms: int) -> None: ...
