"""The store's fleet records: inventory, tags, groups, lifecycle and its history, layered config documents
and each device's desired and applied config.

    fleet.inventory()                                  # node id -> {"role", "attrs", "reported_ms", ...}
    fleet.change_tags("d1", add=["canary"], remove=["old"])
    fleet.create_group("line-a", "static", None, now_ms); fleet.change_members("line-a", add=["d1"])
    fleet.create_group("canaries", "dynamic", "tag:canary", now_ms)
    fleet.transition("d1", "maintenance", "alice", "swap", now_ms, check=lifecycle.check)
    fleet.devices_in_state("maintenance")
    fleet.put_layer("site", "plant-7", values, locked, "alice", now_ms); fleet.layers()
    fleet.set_desired({"d1": (version, doc)}, now_ms)

Ingest hands the telemetry rows it actually inserted to ``ingest_in``, in its own
transaction: an ``inventory`` record replaces the node's inventory if it is
newer; its ``config_version`` attribute is the version the device applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from cloud.store.database import Database
from cloud.store.schema import (
    GROUP_KINDS,
    config_layers,
    device_config,
    device_tags,
    devices,
    gateways,
    group_members,
    groups,
    inventory,
    lifecycle_history,
)
from common.errors import FleetError, FleetNotFound

__all__ = ["INVENTORY_KIND", "FleetRecords"]

INVENTORY_KIND = "inventory"
CONFIG_VERSION_ATTR = "config_version"


class FleetRecords:
    """Inventory, tags, groups, lifecycle and its history, layered config, desired and applied config."""

    def __init__(self, db: Database) -> None:
        self._db = db


    # -- ingest hook ---------------------------------------------------------------------

    def ingest_in(self, conn: sa.Connection, rows: Sequence[Mapping[str, Any]], now_ms: int) -> None:
        """Newly stored telemetry rows: keep each device's newest inventory and the config version it applied."""
        newest: dict[str, Mapping[str, Any]] = {}
        for row in rows:
            if row["kind"] == INVENTORY_KIND:
                old = newest.get(row["device_id"])
                if old is None or row["ts_ms"] >= old["ts_ms"]:
                    newest[row["device_id"]] = row
        for device_id, row in sorted(newest.items()):
            self.put_inventory_in(conn, device_id, "device", dict(row["values"]), row["ts_ms"], now_ms)
            applied = row["values"].get(CONFIG_VERSION_ATTR)
            if isinstance(applied, str) and applied:
                conn.execute(
                    sa.update(device_config)
                    .where(device_config.c.device_id == device_id)
                    .values(applied_version=applied, applied_ms=row["ts_ms"])
                )

    def put_inventory_in(
        self, conn: sa.Connection, node_id: str, role: str, attrs: dict[str, Any], reported_ms: int, now_ms: int
    ) -> None:
        ins = self._db.insert(inventory).values(
            node_id=node_id, role=role, attrs=attrs, reported_ms=reported_ms, received_ms=now_ms
        )
        conn.execute(
            ins.on_conflict_do_update(
                index_elements=[inventory.c.node_id],
                set_={"attrs": ins.excluded.attrs, "reported_ms": ins.excluded.reported_ms,
                      "received_ms": ins.excluded.received_ms, "role": ins.excluded.role},
                where=inventory.c.reported_ms <= ins.excluded.reported_ms,
            )
        )

    def put_inventory(self, node_id: str, role: str, attrs: Mapping[str, Any], reported_ms: int, now_ms: int) -> None:
        """Keep ``attrs`` as the node's inventory unless a newer report is already held (gateways' own)."""
        with self._db.transaction(f"saving the inventory of {node_id!r}") as conn:
            self.put_inventory_in(conn, node_id, role, dict(attrs), reported_ms, now_ms)

    # -- reads for the device views ------------------------------------------------------

    def inventory(self) -> dict[str, dict[str, Any]]:
        """node id -> role, attrs, reported_ms, received_ms."""
        with self._db.transaction("reading inventory", snapshot=True) as conn:
            rows = conn.execute(sa.select(inventory).order_by(inventory.c.node_id)).mappings()
            return {r["node_id"]: {k: r[k] for k in ("role", "attrs", "reported_ms", "received_ms")} for r in rows}

    def fleet_snapshot(self) -> dict[str, Any]:
        """Everything a device view needs, read in one snapshot: devices, inventory, tags, groups, members,
        config (desired and applied per device)."""
        with self._db.transaction("reading the fleet", snapshot=True) as conn:
            devs = [dict(r) for r in conn.execute(sa.select(devices).order_by(devices.c.device_id)).mappings()]
            inv = {r["node_id"]: dict(r["attrs"] or {}) for r in conn.execute(sa.select(inventory)).mappings()}
            tags: dict[str, list[str]] = {}
            for device_id, tag in conn.execute(sa.select(device_tags).order_by(device_tags.c.device_id, device_tags.c.tag)):
                tags.setdefault(device_id, []).append(tag)
            grps = [dict(r) for r in conn.execute(sa.select(groups).order_by(groups.c.name)).mappings()]
            members: dict[str, list[str]] = {}
            for name, device_id in conn.execute(
                sa.select(group_members.c.group_name, group_members.c.device_id).order_by(
                    group_members.c.device_id, group_members.c.group_name
                )
            ):
                members.setdefault(device_id, []).append(name)
            config = {r["device_id"]: dict(r) for r in conn.execute(sa.select(device_config)).mappings()}
        return {"devices": devs, "inventory": inv, "tags": tags, "groups": grps, "members": members, "config": config}

    def gateway_statuses(self) -> list[dict[str, Any]]:
        """Every gateway: gateway_id, site_id, last_seen_ms, status (its newest map or None), status_ts_ms."""
        cols = (gateways.c.gateway_id, gateways.c.site_id, gateways.c.last_seen_ms, gateways.c.status,
                gateways.c.status_ts_ms)
        with self._db.transaction("reading gateway statuses", snapshot=True) as conn:
            return [dict(r) for r in conn.execute(sa.select(*cols).order_by(gateways.c.gateway_id)).mappings()]

    # -- tags ----------------------------------------------------------------------------

    def change_tags(self, device_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> list[str]:
        """Add and remove tags of a known device in one transaction; return its tags now (sorted)."""
        with self._db.transaction(f"tagging device {device_id!r}", immediate=True) as conn:
            self._known_device(conn, device_id)
            gone = sorted(set(remove))
            if gone:
                conn.execute(sa.delete(device_tags).where(device_tags.c.device_id == device_id, device_tags.c.tag.in_(gone)))
            new = sorted(set(add) - set(gone))
            if new:
                conn.execute(
                    self._db.insert(device_tags).on_conflict_do_nothing(),
                    [{"device_id": device_id, "tag": t} for t in new],
                )
            query = sa.select(device_tags.c.tag).where(device_tags.c.device_id == device_id).order_by(device_tags.c.tag)
            return list(conn.execute(query).scalars())

    # -- groups --------------------------------------------------------------------------

    def create_group(self, name: str, kind: str, query: str | None, now_ms: int) -> dict[str, Any]:
        if kind not in GROUP_KINDS:
            raise FleetError(f"group {name!r}: kind {kind!r} is not one of {', '.join(GROUP_KINDS)}")
        if (kind == "dynamic") != bool(query):
            raise FleetError(f"group {name!r}: a dynamic group needs a query, a static one takes none")
        row = {"name": name, "kind": kind, "query": query, "created_ms": now_ms}
        with self._db.transaction(f"creating group {name!r}", immediate=True) as conn:
            if conn.execute(sa.select(groups.c.name).where(groups.c.name == name)).first() is not None:
                raise FleetError(f"group {name!r} already exists (`edgefleet groups list` shows it; delete it first)")
            conn.execute(sa.insert(groups).values(**row))
        return row

    def delete_group(self, name: str) -> bool:
        with self._db.transaction(f"deleting group {name!r}") as conn:
            conn.execute(sa.delete(group_members).where(group_members.c.group_name == name))
            return conn.execute(sa.delete(groups).where(groups.c.name == name)).rowcount > 0

    def list_groups(self) -> list[dict[str, Any]]:
        """Every group (name, kind, query, created_ms) with ``members`` of a static one (dynamic: computed by
        the caller, who evaluates the query)."""
        with self._db.transaction("listing groups", snapshot=True) as conn:
            rows = [dict(r) for r in conn.execute(sa.select(groups).order_by(groups.c.name)).mappings()]
            for row in rows:
                query = sa.select(group_members.c.device_id).where(group_members.c.group_name == row["name"])
                row["members"] = list(conn.execute(query.order_by(group_members.c.device_id)).scalars())
        return rows

    def register_device(self, device_id: str, site: str, gateway_id: str, now_ms: int) -> None:
        """Know a device before its first telemetry (it just enrolled through ``gateway_id``); a no-op if known."""
        row = {"device_id": device_id, "site_id": site, "gateway_id": gateway_id, "first_seen_ms": now_ms,
               "last_seen_ms": now_ms, "last_seq": 0}
        with self._db.transaction(f"registering device {device_id!r}") as conn:
            conn.execute(self._db.insert(devices).values(**row).on_conflict_do_nothing(index_elements=[devices.c.device_id]))

    def join_groups(self, device_id: str, names: Iterable[str], now_ms: int) -> None:
        """Add a device to static groups, making those that do not exist yet (enrollment rules name them)."""
        for name in names:
            if not any(g["name"] == name for g in self.list_groups()):
                self.create_group(name, "static", None, now_ms)
            self.change_members(name, add=[device_id])

    def change_members(self, name: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> list[str]:
        """Add and remove members of static group ``name``; return its members now."""
        with self._db.transaction(f"changing members of group {name!r}", immediate=True) as conn:
            kind = conn.execute(sa.select(groups.c.kind).where(groups.c.name == name)).scalar_one_or_none()
            if kind is None:
                raise FleetNotFound(f"no group by the name of {name!r} (`edgefleet groups create {name}` makes one)")
            if kind != "static":
                raise FleetError(f"group {name!r} is dynamic: its members follow its query; edit the query instead")
            new = sorted(set(add))
            for device_id in new:
                state = self._known_device(conn, device_id)
                if state == "retired":
                    raise FleetError(f"device {device_id!r} is retired: it joins no group")
            gone = sorted(set(remove))
            if gone:
                conn.execute(
                    sa.delete(group_members).where(group_members.c.group_name == name, group_members.c.device_id.in_(gone))
                )
            if new:
                conn.execute(
                    self._db.insert(group_members).on_conflict_do_nothing(),
                    [{"group_name": name, "device_id": d} for d in new],
                )
            query = sa.select(group_members.c.device_id).where(group_members.c.group_name == name)
            return list(conn.execute(query.order_by(group_members.c.device_id)).scalars())

    # -- lifecycle -----------------------------------------------------------------------

    def transition(
        self, device_id: str, to_state: str, by: str, reason: str, now_ms: int, *, check: Callable[[str, str], None]
    ) -> dict[str, Any]:
        """Move a device to ``to_state`` in ONE transaction: ``check(from, to)`` (raises if the table forbids
        it), the new state, its history row; retiring also leaves every static group. Returns the history row."""
        with self._db.transaction(f"moving device {device_id!r} to {to_state}", immediate=True) as conn:
            from_state = self._known_device(conn, device_id, lock=True)
            check(from_state, to_state)
            conn.execute(sa.update(devices).where(devices.c.device_id == device_id).values(state=to_state))
            row = {"device_id": device_id, "from_state": from_state, "to_state": to_state, "by": by,
                   "reason": reason, "at_ms": now_ms}
            row["id"] = conn.execute(sa.insert(lifecycle_history).values(**row).returning(lifecycle_history.c.id)).scalar_one()
            if to_state == "retired":
                left = conn.execute(sa.delete(group_members).where(group_members.c.device_id == device_id)).rowcount
                row["left_groups"] = left
        return row

    def lifecycle_history(self, device_id: str) -> list[dict[str, Any]]:
        """Every transition of a device, oldest first."""
        query = sa.select(lifecycle_history).where(lifecycle_history.c.device_id == device_id)
        with self._db.transaction(f"history of device {device_id!r}", snapshot=True) as conn:
            return [dict(r) for r in conn.execute(query.order_by(lifecycle_history.c.id)).mappings()]

    def devices_in_state(self, state: str) -> list[str]:
        """Devices whose lifecycle ``state`` column equals ``state``; [] while devices have no such column."""
        with self._db.transaction(f"devices in state {state!r}", snapshot=True) as conn:
            if "state" not in {c["name"] for c in sa.inspect(conn).get_columns(devices.name)}:
                return []
            lifecycle = sa.table(devices.name, sa.column("device_id"), sa.column("state"))
            query = sa.select(lifecycle.c.device_id).where(lifecycle.c.state == state).order_by(lifecycle.c.device_id)
            return list(conn.execute(query).scalars())

    def ghosts(self, silent_ms: int, now_ms: int) -> list[dict[str, Any]]:
        """Devices not retired whose last record reached the cloud more than ``silent_ms`` before ``now_ms``."""
        query = (
            sa.select(devices)
            .where(devices.c.state != "retired", devices.c.last_seen_ms < now_ms - silent_ms)
            .order_by(devices.c.last_seen_ms, devices.c.device_id)
        )
        with self._db.transaction("listing ghost devices", snapshot=True) as conn:
            return [dict(r) | {"silent_ms": now_ms - r["last_seen_ms"]} for r in conn.execute(query).mappings()]

    # -- layered config ------------------------------------------------------------------

    def layers(self) -> list[dict[str, Any]]:
        """Every config document: kind, name, values (flat), locked (list), updated_ms, updated_by."""
        with self._db.transaction("reading config layers", snapshot=True) as conn:
            rows = conn.execute(sa.select(config_layers).order_by(config_layers.c.kind, config_layers.c.name)).mappings()
            return [dict(r) for r in rows]

    def put_layer(
        self, kind: str, name: str, values: Mapping[str, Any], locked: Iterable[str], by: str, now_ms: int
    ) -> None:
        """Replace the document of layer (kind, name)."""
        row = {"kind": kind, "name": name, "values": dict(values), "locked": sorted(set(locked)),
               "updated_ms": now_ms, "updated_by": by}
        ins = self._db.insert(config_layers).values(**row)
        stmt = ins.on_conflict_do_update(
            index_elements=[config_layers.c.kind, config_layers.c.name],
            set_={k: ins.excluded[k] for k in ("values", "locked", "updated_ms", "updated_by")},
        )
        with self._db.transaction(f"saving config layer {kind}:{name}") as conn:
            conn.execute(stmt)

    def set_desired(self, desired: Mapping[str, tuple[str, Mapping[str, Any]]], now_ms: int) -> None:
        """Record each device's new desired config (version, flat values); the applied version stays."""
        if not desired:
            return
        ins = self._db.insert(device_config)
        stmt = ins.on_conflict_do_update(
            index_elements=[device_config.c.device_id],
            set_={k: ins.excluded[k] for k in ("desired_version", "desired", "desired_ms")},
        )
        rows = [{"device_id": d, "desired_version": v, "desired": dict(doc), "desired_ms": now_ms,
                 "applied_version": None, "applied_ms": None} for d, (v, doc) in sorted(desired.items())]
        with self._db.transaction(f"saving the desired config of {len(rows)} devices") as conn:
            conn.execute(stmt, rows)

    # -- plumbing ------------------------------------------------------------------------

    def _known_device(self, conn: sa.Connection, device_id: str, *, lock: bool = False) -> str:
        query = sa.select(devices.c.state).where(devices.c.device_id == device_id)
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update()
        state = conn.execute(query).scalar_one_or_none()
        if state is None:
            raise FleetNotFound(f"no device by the id of {device_id!r} (`edgefleet devices list` shows the known ones)")
        return state
