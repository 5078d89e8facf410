"""The fleet's current revocation list as the store holds it (one row per version)."""

from __future__ import annotations

from cloud.store import Store
from common.revocation import RevocationList

__all__ = ["current_list"]


def current_list(store: Store) -> RevocationList:
    version, revoked, quarantined = store.revocation_list()
    return RevocationList(version, revoked, quarantined)
