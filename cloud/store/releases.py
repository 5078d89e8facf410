"""The store's firmware release records: releases (unsigned, then published) and their delta outcomes.

The release workflow is ``cloud.releases.service``; it is handed these records.

    releases.save_release(row, delta_rows)          # False if that version is already published
    releases.publish_release(version, body, signed, now_ms)   # compare-and-set on the unsigned body
    releases.get_release(version); releases.list_releases(); releases.published_releases()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from cloud.store.database import Database
from cloud.store.schema import DELTA_STATUSES, RELEASE_STATES, deltas, releases

__all__ = ["DELTA_COLUMNS", "RELEASE_COLUMNS", "ReleaseRecords"]

RELEASE_COLUMNS = ("version", "hw", "image_sha256", "size", "manifest_body", "security_version", "created_ms")
"""What ``save_release`` takes: a new release is always ``unsigned``."""
DELTA_COLUMNS = ("from_version", "method", "size", "sha256", "status", "detail")

# what lists show: everything but the two manifest texts, which can be long
_SUMMARY = [c for c in releases.c if c.name not in ("manifest_body", "signed_manifest")]


class ReleaseRecords:
    """Firmware releases and their delta outcomes."""

    def __init__(self, db: Database) -> None:
        self._db = db


    def save_release(self, row: Mapping[str, Any], delta_rows: Sequence[Mapping[str, Any]]) -> bool:
        """Record a new unsigned release and its delta outcomes in one transaction.

        An unsigned release of the same version is replaced (its deltas too): it was never
        offered to anyone. Returns False, changing nothing, if the version is already published.
        """
        version = row["version"]
        for d in delta_rows:
            if d["status"] not in DELTA_STATUSES:
                raise ValueError(f"release {version!r}: delta status {d['status']!r} is not one of {DELTA_STATUSES}")
        with self._db.transaction(f"saving release {version!r}", immediate=True) as conn:
            state = conn.execute(sa.select(releases.c.state).where(releases.c.version == version)).scalar()
            if state == "published":
                return False
            conn.execute(sa.delete(deltas).where(deltas.c.release_version == version))
            conn.execute(sa.delete(releases).where(releases.c.version == version))
            conn.execute(
                sa.insert(releases).values(
                    **{k: row[k] for k in RELEASE_COLUMNS}, state="unsigned", signed_manifest=None, published_ms=None
                )
            )
            if delta_rows:
                conn.execute(
                    sa.insert(deltas),
                    [{"release_version": version, **{k: d[k] for k in DELTA_COLUMNS}} for d in delta_rows],
                )
        return True

    def publish_release(self, version: str, manifest_body: str, signed_manifest: str, now_ms: int) -> bool:
        """Mark the release published with its signed manifest, only if it is still unsigned with exactly
        ``manifest_body`` (it may have been replaced meanwhile). Returns whether it was."""
        with self._db.transaction(f"publishing release {version!r}") as conn:
            done = conn.execute(
                sa.update(releases)
                .where(
                    releases.c.version == version,
                    releases.c.state == "unsigned",
                    releases.c.manifest_body == manifest_body,
                )
                .values(state="published", signed_manifest=signed_manifest, published_ms=now_ms)
            )
            return done.rowcount == 1

    def get_release(self, version: str) -> dict[str, Any] | None:
        """The release row (manifest texts included) with ``deltas`` (a list of rows), or None."""
        with self._db.transaction(f"reading release {version!r}", snapshot=True) as conn:
            row = conn.execute(sa.select(releases).where(releases.c.version == version)).mappings().first()
            if row is None:
                return None
            outcomes = conn.execute(
                sa.select(deltas).where(deltas.c.release_version == version).order_by(deltas.c.from_version)
            ).mappings()
            return {**row, "deltas": [dict(d) for d in outcomes]}

    def list_releases(self, state: str | None = None) -> list[dict[str, Any]]:
        """Every release (or those in ``state``), oldest first, without the manifest texts, each with ``deltas``."""
        if state is not None and state not in RELEASE_STATES:
            raise ValueError(f"release state {state!r} is not one of {', '.join(RELEASE_STATES)}")
        query = sa.select(*_SUMMARY).order_by(releases.c.created_ms, releases.c.version)
        if state is not None:
            query = query.where(releases.c.state == state)
        with self._db.transaction("listing releases", snapshot=True) as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
            by_version: dict[str, list[dict[str, Any]]] = {r["version"]: [] for r in rows}
            for d in conn.execute(
                sa.select(deltas).order_by(deltas.c.release_version, deltas.c.from_version)
            ).mappings():
                if d["release_version"] in by_version:
                    by_version[d["release_version"]].append(dict(d))
        return [{**r, "deltas": by_version[r["version"]]} for r in rows]

    def published_releases(self) -> list[dict[str, Any]]:
        """Published releases (version, hw, image_sha256, size, security_version): the bases for new deltas."""
        query = sa.select(
            releases.c.version, releases.c.hw, releases.c.image_sha256, releases.c.size, releases.c.security_version
        ).where(releases.c.state == "published")
        with self._db.transaction("listing published releases", snapshot=True) as conn:
            return [dict(r) for r in conn.execute(query).mappings()]
