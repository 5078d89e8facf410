"""The cloud's state store: sites, gateways, devices, telemetry, gaps and commands on SQLAlchemy Core.

    store = Store.open("sqlite:////var/lib/edgefleet/cloud.db")   # or postgresql+psycopg://...
    result = store.ingest("gw-1", "site-a", records, now_ms)        # one transaction
    store.list_devices(); store.list_sites(); store.site_detail("site-a", now_ms)
    store.telemetry_summary(); store.gaps(); store.gap_totals(); store.missing_ranges("d1", "bulk")
    seq = store.create_command("d1", "reboot", {}, expires_ms, now_ms); store.list_commands("d1")
    store.save_alerts(rows); store.list_alerts("open"); store.ack_alert(alert_id, "alice", now_ms)  (alerts.py)
    store.save_release(row, deltas); store.publish_release(...); store.list_releases()  (releases.py)
    store.close()

SQLite is the default: every connection is set to WAL journal mode,
``synchronous=FULL`` (a committed ingest survives a power cut) and enforced
foreign keys. The same Core statements run on PostgreSQL; ``INSERT .. ON
CONFLICT`` is built by the dialect's own ``insert``, and ``create_command``
serialises numbering with SQLite's ``BEGIN IMMEDIATE`` or PostgreSQL's row lock.

Thread safety: a ``Store`` may be called from several threads. Each call takes
its own pooled connection and runs in its own transaction; SQLite (WAL) lets
readers run beside the one writer, PostgreSQL serialises conflicting writers.
The cloud driver still keeps its writes on one thread, which keeps SQLite free
of writer contention.

Every database failure is raised as ``StoreError`` naming the operation, the
database (password hidden) and the driver's cause.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from cloud.store.alerts import AlertRecords
from cloud.store.fleet import FleetRecords
from cloud.store.metrics import MetricRecords
from cloud.store.batch import BatchPlan, plan_batch, statuses_before, subtract_ranges
from cloud.store.migrations import migrate
from cloud.store.releases import ReleaseRecords
from cloud.store.security import SecurityRecords
from cloud.store.rollouts import RolloutRecords
from cloud.store.schema import commands, devices, gaps, gateways, sites, telemetry
from common.errors import StoreError
from common.protocol.messages import ForwardRecord

__all__ = ["ONLINE_WITHIN_MS", "IngestResult", "Store"]

_BEGIN_OPTION = "edgefleet_sqlite_begin"  # execution option: the statement that opens a SQLite transaction
_IN_CHUNK = 500  # ids per IN (...) list: well under every driver's parameter limit

ONLINE_WITHIN_MS = 300_000
"""A device whose records reached the cloud within this long counts as online in ``site_detail``."""


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


class Store(AlertRecords, ReleaseRecords, SecurityRecords, RolloutRecords, FleetRecords, MetricRecords):
    """The cloud store. Build it with ``Store.open(url)``; the constructor does no I/O."""

    def __init__(self, engine: sa.Engine, *, applied: Sequence[int] = ()) -> None:
        self._engine = engine
        self._where = engine.url.render_as_string(hide_password=True)
        self._applied = tuple(applied)
        self._closed = False
        dialect = engine.dialect.name
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            raise StoreError(f"store at {self._where}: unsupported database {dialect!r} (use sqlite or postgresql)")
        self._insert = insert

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect to ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``), migrate, return the store."""
        engine = _create_engine(url)
        where = engine.url.render_as_string(hide_password=True)
        try:
            with engine.connect() as conn:
                if engine.dialect.name == "sqlite":
                    # take the write lock up front: two processes opening one file migrate one at a time
                    conn.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
                with conn.begin():
                    applied = migrate(conn)
            return cls(engine, applied=applied)
        except sa.exc.SQLAlchemyError as exc:
            engine.dispose()
            raise StoreError(f"store open failed on {where}: {_cause(exc)}") from exc
        except BaseException:
            engine.dispose()
            raise

    def close(self) -> None:
        """Release every pooled connection. Idempotent; later calls raise ``StoreError``."""
        if not self._closed:
            self._closed = True
            self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for diagnostics and tests; callers use the methods)."""
        return self._engine

    @property
    def applied_migrations(self) -> tuple[int, ...]:
        """Migration versions this ``open`` applied; empty when the store was already current."""
        return self._applied

    # -- writes --------------------------------------------------------------------------

    def ingest(self, gateway_id: str, site: str, records: Sequence[ForwardRecord], now_ms: int) -> IngestResult:
        """Store a forwarded batch in ONE transaction; each (device_id, stream, seq) is kept once.

        Upserts the site, the gateway and every device seen (``last_seq`` only grows),
        inserts telemetry (seq > 0) and gap reports with ``ON CONFLICT DO NOTHING``,
        keeps the gateway's newest status, and moves reported commands forward (never
        out of a final state). See ``cloud.store.batch`` for how records are sorted.
        """
        plan = plan_batch(records, now_ms)
        rejected = plan.rejected
        with self._transaction(f"ingest of {len(records)} records from gateway {gateway_id!r}") as conn:
            self._upsert_site(conn, site, now_ms)
            self._upsert_gateway(conn, gateway_id, site, now_ms, None)
            self._upsert_devices(conn, plan, gateway_id, site, now_ms)
            stored = new_gaps = 0
            if plan.telemetry:
                # executemany; RETURNING yields only the rows actually inserted, on both dialects
                new = conn.execute(
                    self._insert(telemetry)
                    .on_conflict_do_nothing(index_elements=[telemetry.c.device_id, telemetry.c.stream, telemetry.c.seq])
                    .returning(telemetry.c.device_id, telemetry.c.stream, telemetry.c.seq),
                    [plan.telemetry[key] for key in sorted(plan.telemetry)],
                )
                inserted = [plan.telemetry[(d, s, int(q))] for d, s, q in new.all()]
                stored = len(inserted)
                # fleet records (inventory, applied config) and metrics from the rows stored just now
                self._ingest_fleet(conn, inserted, now_ms)
                self._ingest_metrics(conn, inserted)
            if plan.gaps:
                new = conn.execute(
                    self._insert(gaps)
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
            site_alerts = self._ingest_site_alerts(conn, plan.site_alerts) if plan.site_alerts else []
            for node_id, (ts_ms, attrs) in sorted(plan.inventories.items()):  # a gateway's own inventory
                self._put_inventory(conn, node_id, "gateway", attrs, ts_ms, now_ms)
            refused_commands = []
            for device_id, seq, status_, detail in plan.commands:
                moved = self._advance_command(conn, device_id, seq, status_, detail, now_ms)
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

    def _upsert_devices(self, conn: sa.Connection, plan: BatchPlan, gateway_id: str, site: str, now_ms: int) -> None:
        def row(device_id: str, seq: int) -> dict[str, Any]:
            return {
                "device_id": device_id,
                "site_id": site,
                "gateway_id": gateway_id,
                "first_seen_ms": now_ms,
                "last_seen_ms": now_ms,
                "last_seq": seq,
            }

        if plan.last_seq:
            ins = self._insert(devices)
            conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[devices.c.device_id],
                    set_={
                        "site_id": ins.excluded.site_id,
                        "gateway_id": ins.excluded.gateway_id,
                        "last_seen_ms": _greatest(devices.c.last_seen_ms, ins.excluded.last_seen_ms),
                        "last_seq": _greatest(devices.c.last_seq, ins.excluded.last_seq),
                    },
                ),
                # sorted: concurrent writers on PostgreSQL take row locks in one order (no deadlock)
                [row(device_id, seq) for device_id, seq in sorted(plan.last_seq.items())],
            )
        # a device known only from a gateway's gap report: registered, but not "seen"
        reported = sorted({key[0] for key in plan.gaps} - plan.last_seq.keys())
        if reported:
            conn.execute(
                self._insert(devices).on_conflict_do_nothing(index_elements=[devices.c.device_id]),
                [row(device_id, 0) for device_id in reported],
            )

    def _advance_command(
        self, conn: sa.Connection, device_id: str, seq: int, status: str, detail: str, now_ms: int
    ) -> bool:
        """Move a command to ``status`` if that is forward from where it is; True if it moved."""
        result = conn.execute(
            sa.update(commands)
            .where(
                commands.c.device_id == device_id,
                commands.c.seq == seq,
                commands.c.status.in_(statuses_before(status)),
            )
            .values(status=status, detail=detail, updated_ms=now_ms)
        )
        return result.rowcount == 1

    def touch_gateway(self, gateway_id: str, site: str, now_ms: int, public_key: str | None = None) -> None:
        """Record that a gateway was seen (e.g. at Hello); a ``None`` key keeps the stored one."""
        with self._transaction(f"touch of gateway {gateway_id!r}") as conn:
            self._upsert_site(conn, site, now_ms)
            self._upsert_gateway(conn, gateway_id, site, now_ms, public_key)

    def _upsert_site(self, conn: sa.Connection, site: str, now_ms: int) -> None:
        ins = self._insert(sites).values(site_id=site, first_seen_ms=now_ms, last_seen_ms=now_ms)
        conn.execute(
            ins.on_conflict_do_update(
                index_elements=[sites.c.site_id],
                set_={"last_seen_ms": _greatest(sites.c.last_seen_ms, ins.excluded.last_seen_ms)},
            )
        )

    def _upsert_gateway(
        self, conn: sa.Connection, gateway_id: str, site: str, now_ms: int, public_key: str | None
    ) -> None:
        ins = self._insert(gateways).values(
            gateway_id=gateway_id, site_id=site, public_key=public_key, first_seen_ms=now_ms, last_seen_ms=now_ms
        )
        conn.execute(
            ins.on_conflict_do_update(
                index_elements=[gateways.c.gateway_id],
                set_={
                    "site_id": ins.excluded.site_id,
                    "public_key": sa.func.coalesce(ins.excluded.public_key, gateways.c.public_key),
                    "last_seen_ms": _greatest(gateways.c.last_seen_ms, ins.excluded.last_seen_ms),
                },
            )
        )

    # -- reads ---------------------------------------------------------------------------

    def list_devices(self) -> list[dict[str, Any]]:
        """Every device: device_id, site_id, gateway_id, first_seen_ms, last_seen_ms, last_seq
        (the highest sequence stored in any of its streams; ``telemetry_summary`` has them per stream)."""
        with self._transaction("listing devices", snapshot=True) as conn:
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
        with self._transaction("listing sites", snapshot=True) as conn:
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
        with self._transaction(f"detail of site {site!r}", snapshot=True) as conn:
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
        with self._transaction("telemetry summary", snapshot=True) as conn:
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
        with self._transaction("listing gaps", snapshot=True) as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def gap_totals(self, device_id: str | None = None, site: str | None = None) -> list[dict[str, Any]]:
        """Per device, stream and reason: ``ranges`` reported and ``count`` of records they dropped."""
        with self._transaction("gap totals", snapshot=True) as conn:
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
        with self._transaction(f"missing ranges of {device_id!r} {stream}", snapshot=True) as conn:
            found = [(int(a), int(b)) for a, b in conn.execute(holes)]
            if not found:
                return []
            reported = [(int(a), int(b)) for a, b in conn.execute(covered)]
        return subtract_ranges(found, reported)

    # -- commands ------------------------------------------------------------------------

    def create_command(
        self, device_id: str, name: str, args: dict[str, str], expires_ms: int, now_ms: int
    ) -> int:
        """Queue command ``name`` for a known device; return its number (the device's highest + 1).

        Numbering is safe against concurrent creation: SQLite takes the write lock at
        BEGIN, PostgreSQL locks the device's row before reading the highest number.
        """
        operation = f"creating command {name!r} for device {device_id!r}"
        with self._transaction(operation, immediate=True) as conn:
            device = sa.select(devices.c.device_id).where(devices.c.device_id == device_id)
            if conn.dialect.name == "postgresql":
                device = device.with_for_update()
            if conn.execute(device).first() is None:
                raise StoreError(f"store {operation} failed on {self._where}: no device by the id of {device_id!r}")
            highest = conn.execute(
                sa.select(sa.func.max(commands.c.seq)).where(commands.c.device_id == device_id)
            ).scalar()
            seq = (highest or 0) + 1
            conn.execute(
                sa.insert(commands).values(
                    device_id=device_id,
                    seq=seq,
                    name=name,
                    args=dict(args),
                    created_ms=now_ms,
                    expires_ms=expires_ms,
                    status="queued",
                    detail="",
                    updated_ms=now_ms,
                )
            )
        return seq

    def commands_for(self, device_ids: Sequence[str], statuses: Sequence[str] = ("queued",)) -> list[dict[str, Any]]:
        """Commands of these devices in these statuses (e.g. to push to a gateway), by device and number."""
        ids = sorted(set(device_ids))
        out: list[dict[str, Any]] = []
        with self._transaction(f"commands of {len(ids)} devices", snapshot=True) as conn:
            for i in range(0, len(ids), _IN_CHUNK):
                query = sa.select(commands).where(
                    commands.c.device_id.in_(ids[i : i + _IN_CHUNK]), commands.c.status.in_(list(statuses))
                )
                rows = conn.execute(query.order_by(commands.c.device_id, commands.c.seq)).mappings()
                out += [dict(row) for row in rows]
        return out

    def commands_for_gateway(self, gateway_id: str, statuses: Sequence[str] = ("queued",)) -> list[dict[str, Any]]:
        """Commands in these statuses of every device the gateway serves now (``devices.gateway_id``)."""
        query = (
            sa.select(commands)
            .join(devices, devices.c.device_id == commands.c.device_id)
            .where(devices.c.gateway_id == gateway_id, commands.c.status.in_(list(statuses)))
            .order_by(commands.c.device_id, commands.c.seq)
        )
        with self._transaction(f"commands behind gateway {gateway_id!r}", snapshot=True) as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def mark_command(self, device_id: str, seq: int, status: str, detail: str, now_ms: int) -> bool:
        """Move a command to ``status``; False if it is unknown or already there or further on
        (a late "held" never undoes "delivered"; done, failed and expired are final)."""
        before = statuses_before(status)  # ValueError for a status that does not exist
        with self._transaction(f"marking command {seq} of device {device_id!r} {status}") as conn:
            return bool(before) and self._advance_command(conn, device_id, seq, status, detail, now_ms)

    def expire_commands(self, now_ms: int) -> list[tuple[str, int]]:
        """Mark queued commands whose TTL has passed ``expired``; return their (device_id, seq).

        Only ``queued`` ones: a command a gateway holds is expired by that gateway, which reports it.
        """
        with self._transaction("expiring commands") as conn:
            result = conn.execute(
                sa.update(commands)
                .where(commands.c.status == "queued", commands.c.expires_ms <= now_ms)
                .values(status="expired", detail="expired before a gateway held it", updated_ms=now_ms)
                .returning(commands.c.device_id, commands.c.seq)
            )
            return sorted((device_id, int(seq)) for device_id, seq in result)

    def list_commands(self, device_id: str) -> list[dict[str, Any]]:
        """Every command of a device, oldest first: device_id, seq, name, args, created_ms, expires_ms,
        status, detail, updated_ms."""
        query = sa.select(commands).where(commands.c.device_id == device_id).order_by(commands.c.seq)
        with self._transaction(f"listing commands of device {device_id!r}", snapshot=True) as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def records_of_kind(self, kind: str, device_id: str | None = None) -> list[dict[str, Any]]:
        """Stored records of one ``kind`` (e.g. "update": update outcomes), oldest first: device_id, stream,
        seq, ts_ms, values."""
        query = sa.select(telemetry.c.device_id, telemetry.c.stream, telemetry.c.seq, telemetry.c.ts_ms,
                          telemetry.c["values"]).where(telemetry.c.kind == kind)
        if device_id is not None:
            query = query.where(telemetry.c.device_id == device_id)
        with self._transaction(f"reading {kind!r} records", snapshot=True) as conn:
            rows = conn.execute(query.order_by(telemetry.c.ts_ms, telemetry.c.device_id, telemetry.c.seq)).mappings()
            return [dict(row) for row in rows]

    def device_gateway(self, device_id: str) -> str | None:
        """The gateway a device was last seen through, or None for a device the store does not know."""
        with self._transaction(f"gateway of device {device_id!r}") as conn:
            return conn.execute(
                sa.select(devices.c.gateway_id).where(devices.c.device_id == device_id)
            ).scalar_one_or_none()

    # -- plumbing ------------------------------------------------------------------------

    @contextmanager
    def _transaction(
        self, operation: str, *, snapshot: bool = False, immediate: bool = False
    ) -> Iterator[sa.Connection]:
        """One transaction on a pooled connection; commit on success, roll back and translate on failure.

        ``snapshot`` makes every statement see one snapshot (PostgreSQL REPEATABLE READ;
        a SQLite transaction already reads one snapshot in WAL mode). ``immediate`` takes
        SQLite's write lock at BEGIN, for a transaction that reads before it writes.
        """
        if self._closed:
            raise StoreError(f"store {operation} failed on {self._where}: the store is closed")
        try:
            with self._engine.connect() as conn:
                if snapshot and self._engine.dialect.name == "postgresql":
                    conn.execution_options(isolation_level="REPEATABLE READ")
                if immediate and self._engine.dialect.name == "sqlite":
                    conn.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
                with conn.begin():
                    yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"store {operation} failed on {self._where}: {_cause(exc)}") from exc


def _gap_filter(query: sa.Select[Any], device_id: str | None, site: str | None) -> sa.Select[Any]:
    if device_id is not None:
        query = query.where(gaps.c.device_id == device_id)
    if site is not None:
        query = query.join(devices, devices.c.device_id == gaps.c.device_id).where(devices.c.site_id == site)
    return query


def _greatest(a: Any, b: Any) -> sa.ColumnElement[Any]:
    """Portable GREATEST(a, b) (SQLite spells it max(a, b)); neither side is ever NULL here."""
    return sa.case((b > a, b), else_=a)


def _cause(exc: sa.exc.SQLAlchemyError) -> str:
    """The driver's own message, one line, without SQLAlchemy's statement dump."""
    orig = getattr(exc, "orig", None)
    cause = orig if orig is not None else exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # transactions are opened by _sqlite_on_begin: pysqlite's own implicit BEGIN
    # skips DDL and reads, which would make migrations and snapshots non-atomic
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql(conn.get_execution_options().get(_BEGIN_OPTION, "BEGIN"))


def _create_engine(url: str) -> sa.Engine:
    try:
        parsed = sa.make_url(url)
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise StoreError(
                f"store URL {_hide_password(url)!r}: unsupported database {backend!r}"
                " (use sqlite:///path or postgresql+psycopg://...)"
            )
        if backend == "sqlite":
            engine = sa.create_engine(parsed)
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
            return engine
        # pre-ping: a connection the server dropped while idle is replaced, not handed out
        return sa.create_engine(parsed, pool_pre_ping=True)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise StoreError(f"store URL {_hide_password(url)!r} cannot be used: {exc}") from exc


def _hide_password(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable URL>"
