"""The fleet's current revocation list as the security records hold it (one row per version)."""

from __future__ import annotations

from cloud.security.ports import SecurityRecords
from common.revocation import RevocationList

__all__ = ["current_list"]


def current_list(records: SecurityRecords) -> RevocationList:
    version, revoked, quarantined = records.revocation_list()
    return RevocationList(version, revoked, quarantined)
