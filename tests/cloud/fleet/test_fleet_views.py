"""The fleet views (inventory, tags, static and dynamic groups, state) in the query language, desired configs
per device from the layers, the config push plan and the inventory the store keeps from ingest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloud.fleet import query
from cloud.fleet import views as fleet
from cloud.fleet.config_push import VERSION_ARG, command_args, plan_pushes, push_configs
from cloud.store import Store
from common.errors import FleetError, QueryError
from common.protocol.messages import ForwardRecord
from tests.cloud.store.test_store import store_url  # noqa: F401  (SQLite and PostgreSQL)

T0 = 1_700_000_000_000


def inv(device: str, seq: int, ts: int, **attrs) -> ForwardRecord:
    return ForwardRecord(device, "state", seq, ts, "inventory", attrs)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store.open(store_url)
    s.telemetry.ingest("gw-1", "plant-7", [
        inv("d1", 1, T0, model="m100", firmware_version="2.0.1", **{"net.ip": "10.0.0.5"}),
        inv("d2", 1, T0, model="m200", firmware_version="2.10.0"),
    ], T0)
    s.telemetry.ingest("gw-2", "plant-9", [inv("d3", 1, T0, model="m100", firmware_version="1.9")], T0)
    yield s
    s.close()


def matching(store: Store, q: str) -> list[str]:
    node = query.parse(q)
    return [v["device_id"] for v in fleet.device_views(store.fleet.fleet_snapshot()) if query.matches(node, fleet.query_view(v))]


def test_the_store_keeps_the_newest_inventory_and_ignores_an_older_late_one(store: Store) -> None:
    store.telemetry.ingest("gw-1", "plant-7", [inv("d1", 3, T0 + 20, model="m100", firmware_version="2.1.0")], T0 + 30)
    store.telemetry.ingest("gw-1", "plant-7", [inv("d1", 2, T0 + 10, model="m100", firmware_version="2.0.9")], T0 + 40)
    got = store.fleet.inventory()["d1"]
    assert (got["attrs"]["firmware_version"], got["reported_ms"], got["received_ms"]) == ("2.1.0", T0 + 20, T0 + 30)


def test_queries_see_inventory_tags_groups_and_state(store: Store) -> None:
    store.fleet.change_tags("d1", add=["canary", "old"])
    assert store.fleet.change_tags("d1", add=["x"], remove=["old"]) == ["canary", "x"]
    store.fleet.create_group("line-a", "static", None, T0)
    store.fleet.change_members("line-a", add=["d2"])
    store.fleet.create_group("m100s", "dynamic", 'model = "m100"', T0)
    assert matching(store, 'site = "plant-7" and fw < "2.1" and tag:canary') == ["d1"]
    assert matching(store, 'fw >= "2.9"') == ["d2"]  # version order: 2.10 > 2.9
    assert matching(store, 'group = "line-a" or attr.net.ip = "10.0.0.5"') == ["d1", "d2"]
    assert matching(store, 'group = "m100s"') == ["d1", "d3"]
    assert matching(store, 'state = "active" and not group in ("m100s")') == ["d2"]
    groups = {g["name"]: g for g in store.fleet.list_groups()}
    assert groups["line-a"]["members"] == ["d2"] and groups["m100s"]["query"] == 'model = "m100"'
    assert fleet.dynamic_members(store.fleet.fleet_snapshot()) == {"m100s": ["d1", "d3"]}


def test_invalid_queries_give_the_position() -> None:
    with pytest.raises(QueryError) as err:
        query.parse('tag:canary and group = ')
    assert err.value.position == 23


def test_groups_refuse_what_they_cannot_be(store: Store) -> None:
    with pytest.raises(FleetError, match="needs a query"):
        store.fleet.create_group("g", "dynamic", None, T0)
    store.fleet.create_group("g", "static", None, T0)
    with pytest.raises(FleetError, match="already exists"):
        store.fleet.create_group("g", "static", None, T0)
    store.fleet.create_group("dyn", "dynamic", "tag:x", T0)
    with pytest.raises(FleetError, match="dynamic"):
        store.fleet.change_members("dyn", add=["d1"])
    with pytest.raises(FleetError, match="no device by the id of 'ghost'"):
        store.fleet.change_members("g", add=["ghost"])


def test_desired_configs_merge_global_site_group_device_with_locks(store: Store) -> None:
    store.fleet.create_group("canaries", "dynamic", "tag:canary", T0)
    store.fleet.change_tags("d1", add=["canary"])
    store.fleet.put_layer("global", "", {"ntp": "pool", "rate": 1}, ["ntp"], "ops", T0)
    store.fleet.put_layer("site", "plant-7", {"rate": 2}, [], "ops", T0)
    store.fleet.put_layer("group", "canaries", {"rate": 3, "ntp": "evil"}, [], "ops", T0)
    store.fleet.put_layer("device", "d2", {"debug": True}, [], "ops", T0)
    desired = fleet.desired_configs(store.fleet.fleet_snapshot(), store.fleet.layers())
    assert desired["d1"].values == {"ntp": "pool", "rate": 3}
    assert desired["d1"].provenance == {"ntp": "global", "rate": "group:canaries"}
    assert [(r.key, r.layer, r.locked_by) for r in desired["d1"].refused] == [("ntp", "group:canaries", "global")]
    assert desired["d2"].values == {"debug": True, "ntp": "pool", "rate": 2}
    assert desired["d3"].values == {"ntp": "pool", "rate": 1}


def test_push_plans_only_changed_configs_and_drift_follows_the_reported_version(store: Store) -> None:
    assert plan_pushes(store.fleet.fleet_snapshot(), store.fleet.layers()) == {}  # nothing configured: nothing sent
    store.fleet.put_layer("site", "plant-7", {"rate": 2}, [], "ops", T0)
    made, problems = push_configs(store.fleet, store.commands, T0 + 1)
    assert [d for d, _ in made] == ["d1", "d2"] and problems == []
    cmd = store.commands.list_commands("d1")[-1]
    assert cmd["name"] == "config" and cmd["args"]["rate"] == "2" and cmd["args"][VERSION_ARG]
    assert push_configs(store.fleet, store.commands, T0 + 2) == ([], [])  # unchanged: not sent again
    version = cmd["args"][VERSION_ARG]
    views = {v["device_id"]: v for v in fleet.device_views(store.fleet.fleet_snapshot())}
    assert views["d1"]["config"] == {"desired_version": version, "applied_version": None, "drift": True}
    store.telemetry.ingest("gw-1", "plant-7", [inv("d1", 5, T0 + 3, model="m100", config_version=version)], T0 + 4)
    views = {v["device_id"]: v for v in fleet.device_views(store.fleet.fleet_snapshot())}
    assert views["d1"]["config"] == {"desired_version": version, "applied_version": version, "drift": False}
    assert views["d3"]["config"]["desired_version"] is None


def test_a_config_too_big_for_a_command_is_refused_by_name() -> None:
    from cloud.fleet.config_layers import Layer, merge

    with pytest.raises(FleetError, match="at most 63"):
        command_args(merge([Layer("global", "", {f"k{i}": i for i in range(64)})]))
    with pytest.raises(FleetError, match="'big'"):
        command_args(merge([Layer("global", "", {"big": "x" * 300})]))
