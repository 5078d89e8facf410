"""The store's telemetry records: what gateways forward, and the sites, gateways and devices it makes known.

    result = telemetry.ingest("gw-1", "site-a", records, now_ms)   # ONE transaction per batch
    results = telemetry.ingest_many([("gw-1", "site-a", records), ("gw-2", "site-b", more)], now_ms)  # one for all
    telemetry.touch_gateway("gw-1", "site-a", now_ms)
    telemetry.list_devices(); telemetry.list_sites(); telemetry.site_detail("site-a", now_ms)
    telemetry.telemetry_summary(); telemetry.gaps(); telemetry.gap_totals(); telemetry.missing_ranges("d1", "bulk")
    telemetry.records_of_kind("update"); telemetry.device_gateway("d1")

``ingest_many`` sorts batches (``cloud.store.batch``) and writes them in one transaction: the
sites, gateways and devices seen, telemetry rows by the database's bulk path (``cloud.store.bulk``;
each (device, stream, seq) once) and gap rows, each gateway's newest status, and the rows the other
features keep from them, in the same transaction: inventory and applied config (``fleet``), alerts a
site raised offline (``alerts``), command reports (``commands``), and the ``metric_backlog`` entry from
which the metrics follower (``metrics.follow``) later makes metric points and rollups: the
acknowledgement to a gateway waits only for the telemetry rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from cloud.fleet.views import ONLINE_WITHIN_MS
from cloud.store.alerts import AlertRecords
from cloud.store.batch import BatchPlan, subtract_ranges
from cloud.store.bulk import Row, ingest_upserts, write_telemetry
from cloud.store.commands import CommandRecords
from cloud.store.database import Database
from cloud.store.fleet import FleetRecords
from cloud.store.metrics import MetricRecords
from cloud.store.schema import commands, devices, gaps, gateways, sites, telemetry
from cloud.store.security import site_checked_plans
from common.protocol.messages import ForwardRecord

__all__ = ["Batch", "IngestResult", "TelemetryRecords"]

Batch = tuple[str, str, Sequence[ForwardRecord]]  # (gateway_id, site, records): one forwarded batch
_TAG = sa.text("SELECT ingest_id FROM telemetry WHERE device_id = :d AND stream = :s AND seq = :q AND ts_ms = :t")
_ROW_KEYS = ("device_id", "stream", "seq", "ts_ms", "kind", "values", "received_ms")


def _as_dict(row: Row) -> dict[str, Any]:
    return dict(zip(_ROW_KEYS, row))


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one batch did.

    ``stored`` telemetry rows were new; ``duplicates`` telemetry records were
    already held or repeated in the batch; ``gaps`` gap ranges were newly
    recorded; ``reports`` records had seq 0 (gap, status and command reports,
    never telemetry). ``rejected`` says, per record (or report part), what the
    store could not use; the rest of the batch is committed regardless.
    """

    stored: int
    duplicates: int
    gaps: int = 0
    reports: int = 0
    rejected: tuple[str, ...] = ()
    site_alerts: tuple[dict[str, Any], ...] = ()  # alerts raised at a site, new to the store: to announce
    refused_commands: tuple[tuple[str, int, str], ...] = ()  # (device, seq, why): a device refused to run it, newly
    # the id tagging the rows of the batch's transaction (None: no telemetry); a tag, not an outcome: not compared
    ingest_id: int | None = field(default=None, compare=False)


class TelemetryRecords:
    """Ingest, sites, gateways, devices, gaps. ``ingest`` writes into the other features' records too,
    in its own transaction, through the methods they offer for it (``*_in(conn, ...)``)."""

    def __init__(
        self, db: Database, *, commands: CommandRecords, fleet: FleetRecords, metrics: MetricRecords, alerts: AlertRecords
    ) -> None:
        self._db = db
        self._commands, self._fleet, self._metrics, self._alerts = commands, fleet, metrics, alerts
        self._site_upsert, self._gateway_upsert, self._device_upsert = ingest_upserts(db)
        # called with each ingest transaction's id inside it, before its commit, unless it refused a record (the
        # leader notes its own rows, whose records it feeds itself: cloud.coordination.runtime.own_ingest)
        self.on_ingest_id: Callable[[int, Sequence[str]], None] | None = None  # (ingest_id, gateway ids)

    # -- writes --------------------------------------------------------------------------

    def ingest(self, gateway_id: str, site: str, records: Sequence[ForwardRecord], now_ms: int) -> IngestResult:
        """Store one forwarded batch in ONE transaction (``ingest_many`` of one batch)."""
        return self.ingest_many([(gateway_id, site, records)], now_ms)[0]

    def ingest_many(self, batches: Sequence[Batch], now_ms: int) -> list[IngestResult]:
        """Store forwarded batches, of one or several gateways, in ONE transaction; a result per batch.

        Each (device_id, stream, seq) is kept once: a key already stored, or held by an earlier batch of
        ``batches``, counts as that batch's duplicate. Upserts every site, gateway and device seen
        (``last_seq`` only grows), writes telemetry by the database's bulk path (``cloud.store.bulk``)
        and gap reports with ``ON CONFLICT DO NOTHING``, keeps each gateway's newest status, and moves
        reported commands forward (never out of a final state). Metric points are not made here: the
        transaction leaves a ``metric_backlog`` entry the metrics follower folds later.
        See ``cloud.store.batch`` for how records are sorted.
        """
        n = sum(len(records) for _, _, records in batches)
        what = (f"ingest of {n} records from gateway {batches[0][0]!r}" if len(batches) == 1
                else f"ingest of {n} records in {len(batches)} batches")
        with self._db.transaction(what) as conn:
            plans, refused = site_checked_plans(conn, batches, now_ms)  # cloud.store.security
            seen: set[tuple[str, str, int]] = set()
            groups: list[list[Row]] = []
            reports: list[Row] = []  # devices' inventory rows, to the fleet's records once stored
            for plan in plans:  # the first batch holding a key stores it
                rows = plan.telemetry
                if seen.isdisjoint(rows):  # nearly always (batches of different gateways): no row-by-row filter
                    groups.append(list(rows.values()))
                    reports += [rows[key] for key in plan.inventory_keys]
                else:
                    groups.append([row for key, row in rows.items() if key not in seen])
                    reports += [rows[key] for key in plan.inventory_keys if key not in seen]
                seen.update(rows)
            self._upsert_sites(conn, [site for _, site, _ in batches], now_ms)
            self._upsert_gateways(conn, [(gw, site) for gw, site, _ in batches], now_ms)
            self._upsert_devices(conn, batches, plans, now_ms)
            stored = [0] * len(batches)
            ingest_id = None
            if seen:
                ingest_id = self._metrics.backlog_in(conn, [row for rows in groups for row in rows], now_ms)
                if self.on_ingest_id is not None and not any(refused) and not any(p.rejected for p in plans):
                    self.on_ingest_id(ingest_id, [gw for gw, _, _ in batches])  # (else: left to the tail)
                stored = write_telemetry(conn, groups, ingest_id)
                # inventory and applied config only from rows this transaction stored (tagged with its id)
                mine = [r for r in reports if conn.execute(_TAG, dict(zip(("d", "s", "q", "t"), r))).scalar() == ingest_id]
                self._fleet.ingest_in(conn, [_as_dict(r) for r in mine], now_ms)
            results = [
                replace(self._reports_in(conn, gateway_id, plan, stored[i], now_ms, refused[i]), ingest_id=ingest_id)
                for i, ((gateway_id, _, _), plan) in enumerate(zip(batches, plans))
            ]
        return results

    def _reports_in(self, conn: sa.Connection, gateway_id: str, plan: BatchPlan, stored: int, now_ms: int,
                    refused: list[str]) -> IngestResult:
        """One batch's gap, status, alert, inventory and command reports, in ingest's transaction."""
        rejected = plan.rejected + refused
        new_gaps = 0
        if plan.gaps:
            new = conn.execute(
                self._db.insert(gaps)
                .on_conflict_do_nothing(
                    index_elements=[
                        gaps.c.device_id, gaps.c.stream, gaps.c.first_seq, gaps.c.last_seq, gaps.c.reason,
                        gaps.c.reporter,
                    ]
                )
                .returning(gaps.c.id),
                [plan.gaps[key] for key in sorted(plan.gaps)],
            )
            new_gaps = len(new.all())
        if plan.status is not None:
            ts_ms, status = plan.status
            conn.execute(
                sa.update(gateways)
                .where(
                    gateways.c.gateway_id == gateway_id,
                    sa.or_(gateways.c.status_ts_ms.is_(None), gateways.c.status_ts_ms < ts_ms),
                )
                .values(status=status, status_ts_ms=ts_ms)
            )
        site_alerts = self._alerts.ingest_site_alerts_in(conn, plan.site_alerts) if plan.site_alerts else []
        for node_id, (ts_ms, attrs) in sorted(plan.inventories.items()):  # a gateway's own inventory
            self._fleet.put_inventory_in(conn, node_id, "gateway", attrs, ts_ms, now_ms)
        refused_commands = []
        for device_id, seq, status_, detail in plan.commands:
            moved = self._commands.advance_in(conn, device_id, seq, status_, detail, now_ms)
            if moved and status_ == "failed" and detail.startswith("refused"):
                refused_commands.append((device_id, seq, detail))  # forged, replayed, expired: for the audit log
            if not moved and not conn.execute(
                sa.select(commands.c.seq).where(commands.c.device_id == device_id, commands.c.seq == seq)
            ).first():
                rejected.append(f"command report {status_!r} refused: device {device_id!r} has no command {seq}")
                if status_ == "failed" and detail.startswith("refused"):  # a command the cloud never sent
                    refused_commands.append((device_id, seq, f"never sent by the cloud (forged on the way?); {detail}"))
        return IngestResult(
            stored=stored,
            duplicates=plan.telemetry_records - stored,
            gaps=new_gaps,
            reports=plan.reports,
            rejected=tuple(rejected),
            site_alerts=tuple(site_alerts),
            refused_commands=tuple(refused_commands),
        )

    def _upsert_devices(self, conn: sa.Connection, batches: Sequence[Batch], plans: Sequence[BatchPlan], now_ms: int) -> None:
        rows: dict[str, dict[str, Any]] = {}
        for (gateway_id, site, _), plan in zip(batches, plans):  # a later batch's gateway wins; last_seq only grows
            for device_id, seq in plan.last_seq.items():
                old = rows.get(device_id)
                rows[device_id] = {
                    "device_id": device_id, "site_id": site, "gateway_id": gateway_id, "first_seen_ms": now_ms,
                    "last_seen_ms": now_ms, "last_seq": max(seq, old["last_seq"]) if old else seq,
                }
        if rows:
            # sorted: concurrent writers on PostgreSQL take row locks in one order (no deadlock); these
            # locks also make two coordinators' ingests of one device's records take turns
            conn.execute(self._device_upsert, [rows[device_id] for device_id in sorted(rows)])
        # a device known only from a gateway's gap report: registered, but not "seen"
        reported: dict[str, dict[str, Any]] = {}
        for (gateway_id, site, _), plan in zip(batches, plans):
            for device_id in {key[0] for key in plan.gaps} - rows.keys():
                reported[device_id] = {"device_id": device_id, "site_id": site, "gateway_id": gateway_id,
                                       "first_seen_ms": now_ms, "last_seen_ms": now_ms, "last_seq": 0}
        if reported:
            conn.execute(
                self._db.insert(devices).on_conflict_do_nothing(index_elements=[devices.c.device_id]),
                [reported[device_id] for device_id in sorted(reported)],
            )

    def touch_gateway(self, gateway_id: str, site: str, now_ms: int, public_key: str | None = None) -> None:
        """Record that a gateway was seen (e.g. at Hello); a ``None`` key keeps the stored one."""
        with self._db.transaction(f"touch of gateway {gateway_id!r}") as conn:
            self._upsert_sites(conn, [site], now_ms)
            self._upsert_gateways(conn, [(gateway_id, site)], now_ms, public_key)

    def touch_gateways(self, seen: Sequence[tuple[str, str]], now_ms: int) -> None:
        """``touch_gateway`` of every (gateway_id, site) in ONE transaction (heartbeats of many gateways)."""
        with self._db.transaction(f"touch of {len(seen)} gateways") as conn:
            self._upsert_sites(conn, [site for _, site in seen], now_ms)
            self._upsert_gateways(conn, seen, now_ms)

    def _upsert_sites(self, conn: sa.Connection, site_ids: Sequence[str], now_ms: int) -> None:
        rows = [{"site_id": site, "first_seen_ms": now_ms, "last_seen_ms": now_ms} for site in sorted(set(site_ids))]
        if rows:
            conn.execute(self._site_upsert, rows)

    def _upsert_gateways(self, conn: sa.Connection, seen: Sequence[tuple[str, str]], now_ms: int,
                         public_key: str | None = None) -> None:
        rows = [{"gateway_id": gw, "site_id": site, "public_key": public_key, "first_seen_ms": now_ms,
                 "last_seen_ms": now_ms} for gw, site in sorted(dict(seen).items())]
        if rows:
            conn.execute(self._gateway_upsert, rows)

    # -- reads ---------------------------------------------------------------------------

    def list_devices(self) -> list[dict[str, Any]]:
        """Every device: device_id, site_id, gateway_id, first_seen_ms, last_seen_ms, last_seq
        (the highest sequence stored in any of its streams; ``telemetry_summary`` has them per stream)."""
        with self._db.transaction("listing devices", snapshot=True) as conn:
            result = conn.execute(sa.select(devices).order_by(devices.c.device_id))
            return [dict(row) for row in result.mappings()]

    def list_sites(self) -> list[dict[str, Any]]:
        """Every site: site_id, first_seen_ms, last_seen_ms, gateway_count, device_count, and ``links``:
        gateway_id -> the ``link`` entry of that gateway's newest status (gateways without one are left out)."""
        gateway_count = (
            sa.select(sa.func.count()).select_from(gateways).where(gateways.c.site_id == sites.c.site_id)
        ).scalar_subquery()
        device_count = (
            sa.select(sa.func.count()).select_from(devices).where(devices.c.site_id == sites.c.site_id)
        ).scalar_subquery()
        query = sa.select(
            sites, gateway_count.label("gateway_count"), device_count.label("device_count")
        ).order_by(sites.c.site_id)
        statuses = sa.select(gateways.c.site_id, gateways.c.gateway_id, gateways.c.status).where(
            gateways.c.status.is_not(None)
        )
        with self._db.transaction("listing sites", snapshot=True) as conn:
            rows = [dict(row) for row in conn.execute(query).mappings()]
            links: dict[str, dict[str, Any]] = {}
            for site_id, gateway_id, status in conn.execute(statuses.order_by(gateways.c.gateway_id)):
                if isinstance(status, dict) and "link" in status:
                    links.setdefault(site_id, {})[gateway_id] = status["link"]
        for row in rows:
            row["links"] = links.get(row["site_id"], {})
        return rows

    def site_detail(
        self, site: str, now_ms: int | None = None, *, online_within_ms: int = ONLINE_WITHIN_MS
    ) -> dict[str, Any] | None:
        """One site's health, or None if the store has never seen ``site``.

        ``gateways``: gateway_id, first_seen_ms, last_seen_ms, status (the gateway's newest
        status map, or None), status_ts_ms and devices (how many it serves). ``devices``:
        total, and online (records arrived within ``online_within_ms`` of ``now_ms``;
        None when no ``now_ms`` is given). ``gap_totals``: as ``gap_totals(site=site)``.
        """
        per_gateway = (
            sa.select(sa.func.count()).select_from(devices).where(devices.c.gateway_id == gateways.c.gateway_id)
        ).scalar_subquery()
        with self._db.transaction(f"detail of site {site!r}", snapshot=True) as conn:
            row = conn.execute(sa.select(sites).where(sites.c.site_id == site)).mappings().first()
            if row is None:
                return None
            gws = conn.execute(
                sa.select(
                    gateways.c.gateway_id,
                    gateways.c.first_seen_ms,
                    gateways.c.last_seen_ms,
                    gateways.c.status,
                    gateways.c.status_ts_ms,
                    per_gateway.label("devices"),
                )
                .where(gateways.c.site_id == site)
                .order_by(gateways.c.gateway_id)
            ).mappings()
            detail = dict(row) | {"gateways": [dict(g) for g in gws]}
            of_site = devices.c.site_id == site
            total = conn.execute(sa.select(sa.func.count()).select_from(devices).where(of_site)).scalar_one()
            online = None
            if now_ms is not None:
                online = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(devices)
                    .where(of_site, devices.c.last_seen_ms >= now_ms - online_within_ms)
                ).scalar_one()
            detail["devices"] = {"total": total, "online": online, "online_within_ms": online_within_ms}
            detail["gap_totals"] = self._gap_totals(conn, None, site)
        return detail

    def telemetry_summary(self) -> dict[str, Any]:
        """Totals ``rows``, ``distinct`` (device_id, stream, seq) and ``duplicates_stored``, and ``devices``.

        ``devices`` lists device_id, stream, count, min_seq and max_seq per device and
        stream. The primary key keeps ``duplicates_stored`` at 0; it is reported so that
        an end-to-end test can prove it rather than assume it.
        """
        keys = sa.select(telemetry.c.device_id, telemetry.c.stream, telemetry.c.seq).distinct().subquery()
        per_stream = (
            sa.select(
                telemetry.c.device_id,
                telemetry.c.stream,
                sa.func.count().label("count"),
                sa.func.min(telemetry.c.seq).label("min_seq"),
                sa.func.max(telemetry.c.seq).label("max_seq"),
            )
            .group_by(telemetry.c.device_id, telemetry.c.stream)
            .order_by(telemetry.c.device_id, telemetry.c.stream)
        )
        with self._db.transaction("telemetry summary", snapshot=True) as conn:
            rows = conn.execute(sa.select(sa.func.count()).select_from(telemetry)).scalar_one()
            distinct = conn.execute(sa.select(sa.func.count()).select_from(keys)).scalar_one()
            per = [dict(row) for row in conn.execute(per_stream).mappings()]
        return {"rows": rows, "distinct": distinct, "duplicates_stored": rows - distinct, "devices": per}

    # -- gaps ----------------------------------------------------------------------------

    def gaps(self, device_id: str | None = None, site: str | None = None) -> list[dict[str, Any]]:
        """Reported gaps (of one device, of the devices of one site, or all), by device, stream and range:
        reporter, device_id, stream, first_seq, last_seq, reason, count, ts_ms, received_ms."""
        columns = [c for c in gaps.c if c.name != "id"]
        query = _gap_filter(sa.select(*columns), device_id, site).order_by(
            gaps.c.device_id, gaps.c.stream, gaps.c.first_seq, gaps.c.last_seq, gaps.c.reason, gaps.c.reporter
        )
        with self._db.transaction("listing gaps", snapshot=True) as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def gap_totals(self, device_id: str | None = None, site: str | None = None) -> list[dict[str, Any]]:
        """Per device, stream and reason: ``ranges`` reported and ``count`` of records they dropped."""
        with self._db.transaction("gap totals", snapshot=True) as conn:
            return self._gap_totals(conn, device_id, site)

    def _gap_totals(self, conn: sa.Connection, device_id: str | None, site: str | None) -> list[dict[str, Any]]:
        # A gateway may evict a record it had already forwarded (its acknowledgement was lost in a cut):
        # the record is reported dropped yet stored. ``count`` is what was really lost (reported and not
        # stored), ``reported`` what the reports said, so stored + count == sent holds exactly.
        arrived = (
            sa.select(sa.func.count())
            .where(
                telemetry.c.device_id == gaps.c.device_id,
                telemetry.c.stream == gaps.c.stream,
                telemetry.c.seq.between(gaps.c.first_seq, gaps.c.last_seq),
            )
            .scalar_subquery()
        )
        query = _gap_filter(
            sa.select(
                gaps.c.device_id,
                gaps.c.stream,
                gaps.c.reason,
                sa.func.count().label("ranges"),
                sa.func.sum(gaps.c.count).label("reported"),
                sa.func.sum(gaps.c.count - arrived).label("count"),
            ),
            device_id,
            site,
        ).group_by(gaps.c.device_id, gaps.c.stream, gaps.c.reason)
        rows = conn.execute(query.order_by(gaps.c.device_id, gaps.c.stream, gaps.c.reason)).mappings()
        # SUM is NUMERIC on PostgreSQL
        return [dict(row) | {"count": int(row["count"]), "reported": int(row["reported"])} for row in rows]

    def missing_ranges(self, device_id: str, stream: str) -> list[tuple[int, int]]:
        """Unexplained gaps: ranges between the device's lowest and highest stored ``seq`` in ``stream``
        that are neither stored nor covered by a reported gap. Empty is the promise kept."""
        # the holes come from one ordered scan of the primary key (LAG over seq), never a row per record
        ordered = (
            sa.select(telemetry.c.seq, sa.func.lag(telemetry.c.seq).over(order_by=telemetry.c.seq).label("prev"))
            .where(telemetry.c.device_id == device_id, telemetry.c.stream == stream)
            .subquery()
        )
        holes = (
            sa.select(ordered.c.prev + 1, ordered.c.seq - 1)
            .where(ordered.c.seq > ordered.c.prev + 1)
            .order_by(ordered.c.seq)
        )
        covered = sa.select(gaps.c.first_seq, gaps.c.last_seq).where(
            gaps.c.device_id == device_id, gaps.c.stream == stream
        )
        with self._db.transaction(f"missing ranges of {device_id!r} {stream}", snapshot=True) as conn:
            found = [(int(a), int(b)) for a, b in conn.execute(holes)]
            if not found:
                return []
            reported = [(int(a), int(b)) for a, b in conn.execute(covered)]
        return subtract_ranges(found, reported)

    def records_of_kind(self, kind: str, device_id: str | None = None) -> list[dict[str, Any]]:
        """Stored records of one ``kind`` (e.g. "update": update outcomes), oldest first: device_id, stream,
        seq, ts_ms, values."""
        query = sa.select(telemetry.c.device_id, telemetry.c.stream, telemetry.c.seq, telemetry.c.ts_ms,
                          telemetry.c["values"]).where(telemetry.c.kind == kind)
        if device_id is not None:
            query = query.where(telemetry.c.device_id == device_id)
        with self._db.transaction(f"reading {kind!r} records", snapshot=True) as conn:
            rows = conn.execute(query.order_by(telemetry.c.ts_ms, telemetry.c.device_id, telemetry.c.seq)).mappings()
            return [dict(row) for row in rows]

    def device_gateway(self, device_id: str) -> str | None:
        """The gateway a device was last seen through, or None for a device the store does not know."""
        with self._db.transaction(f"gateway of device {device_id!r}") as conn:
            return conn.execute(
                sa.select(devices.c.gateway_id).where(devices.c.device_id == device_id)
            ).scalar_one_or_none()


def _gap_filter(query: sa.Select[Any], device_id: str | None, site: str | None) -> sa.Select[Any]:
    if device_id is not None:
        query = query.where(gaps.c.device_id == device_id)
    if site is not None:
        query = query.join(devices, devices.c.device_id == gaps.c.device_id).where(devices.c.site_id == site)
    return query
