from __future__ import annotations

import random

import pytest

import cloud.fleet.config_layers
from cloud.fleet.config_layers import (
    ExplainRow,
    Layer,
    Refused,
    Resolved,
    changed_devices,
    diff,
    explain,
    flatten,
    merge,
    unflatten,
)
from common.errors import ConfigError

GLOBAL = Layer(
    "global",
    values={"telemetry": {"interval_s": 60, "batch": 10}, "ntp": "pool.ntp.org", "log_level": "info"},
    locked={"ntp"},
)
SITE = Layer("site", "plant-7", values={"telemetry.interval_s": 30, "ntp": "10.0.0.1", "timezone": "Europe/Berlin"})
GROUP_A = Layer("group", "line-a", values={"log_level": "debug", "sensors": ["t1", "t2"]})
GROUP_B = Layer("group", "line-b", values={"log_level": "warning"}, locked={"sensors"})
DEVICE = Layer("device", "dev-1", values={"telemetry": {"batch": 50}, "sensors": ["t9"], "log_level": "error"})


def test_all() -> None:
    assert cloud.fleet.config_layers.__all__ == sorted(cloud.fleet.config_layers.__all__)
    assert set(cloud.fleet.config_layers.__all__) == {
        "KINDS", "ExplainRow", "Layer", "Refused", "Resolved", "changed_devices", "diff", "explain", "flatten",
        "merge", "unflatten",
    }


# --- flatten / unflatten --------------------------------------------------------------------------

def test_flatten_nested_and_dotted_are_the_same_key() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e.f": None}) == {"a.b": 1, "a.c.d": [1, 2], "e.f": None}
    assert flatten({"a": {}}) == {}
    assert unflatten({"a.b": 1, "a.c.d": 2, "e": 3}) == {"a": {"b": 1, "c": {"d": 2}}, "e": 3}


@pytest.mark.parametrize("values", [{"a": {"b": 1}, "a.b": 2}, {"": 1}, {"a..b": 1}, {"a.": 1}, {1: 2}])
def test_flatten_rejects_bad_or_duplicate_keys(values: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError):
        flatten(values)


@pytest.mark.parametrize(
    "kind, name", [("region", "x"), ("global", "x"), ("site", ""), ("group", ""), ("device", "")]
)
def test_layer_kind_and_name_are_checked(kind: str, name: str) -> None:
    with pytest.raises(ConfigError):
        Layer(kind, name)


# --- merging and provenance ------------------------------------------------------------------------

def test_merge_order_and_provenance() -> None:
    r = merge([GLOBAL, SITE, GROUP_A, GROUP_B, DEVICE])
    assert r.values == {
        "log_level": "error",
        "ntp": "pool.ntp.org",
        "sensors": ["t1", "t2"],
        "telemetry.batch": 50,
        "telemetry.interval_s": 30,
        "timezone": "Europe/Berlin",
    }
    assert r.provenance == {
        "log_level": "device:dev-1",
        "ntp": "global",
        "sensors": "group:line-a",
        "telemetry.batch": "device:dev-1",
        "telemetry.interval_s": "site:plant-7",
        "timezone": "site:plant-7",
    }
    assert r.nested() == {
        "log_level": "error",
        "ntp": "pool.ntp.org",
        "sensors": ["t1", "t2"],
        "telemetry": {"batch": 50, "interval_s": 30},
        "timezone": "Europe/Berlin",
    }


def test_layers_given_in_any_order_merge_the_same() -> None:
    layers = [GLOBAL, SITE, GROUP_A, GROUP_B, DEVICE]
    expected = merge(layers)
    rng = random.Random(7)
    for _ in range(20):
        rng.shuffle(layers)
        assert merge(layers) == expected


def test_groups_apply_in_name_order_last_name_wins() -> None:
    a = Layer("group", "alpha", values={"mode": "a"})
    z = Layer("group", "zulu", values={"mode": "z"})
    assert merge([z, a]).values == {"mode": "z"}
    assert merge([z, a]).provenance == {"mode": "group:zulu"}


def test_only_one_layer_of_each_single_kind_and_no_duplicate_groups() -> None:
    with pytest.raises(ConfigError, match="cannot both apply"):
        merge([Layer("site", "a"), Layer("site", "b")])
    with pytest.raises(ConfigError, match="group:g"):
        merge([Layer("group", "g"), Layer("group", "g")])
    with pytest.raises(ConfigError):
        merge([GLOBAL, Layer("global")])


def test_a_scalar_replaces_a_subtree_and_a_subtree_replaces_a_scalar() -> None:
    r = merge([Layer("global", values={"net": {"ntp": "a", "dns": "b"}}), Layer("site", "s", values={"net": "off"})])
    assert r.values == {"net": "off"}
    assert r.provenance == {"net": "site:s"}
    r = merge([Layer("global", values={"net": "off"}), Layer("site", "s", values={"net.ntp": "x"})])
    assert r.values == {"net.ntp": "x"}
    assert r.nested() == {"net": {"ntp": "x"}}


def test_merge_of_nothing_is_empty() -> None:
    r = merge([])
    assert (r.values, r.provenance, r.refused, r.locks) == ({}, {}, [], {})


# --- locks and refused overrides -------------------------------------------------------------------

def test_lock_refuses_more_specific_overrides_and_records_them() -> None:
    r = merge([GLOBAL, SITE, GROUP_A, GROUP_B, DEVICE])
    assert r.values["ntp"] == "pool.ntp.org"
    # the site tried to override the global ntp; the device tried to override the sensors group:line-b locked
    assert r.refused == [Refused("ntp", "site:plant-7", "global"), Refused("sensors", "device:dev-1", "group:line-b")]
    assert r.locks == {"ntp": "global", "sensors": "group:line-b"}


def test_a_layer_may_set_the_key_it_locks_and_an_earlier_layer_is_not_affected() -> None:
    site = Layer("site", "s", values={"a": 2}, locked={"a"})
    r = merge([Layer("global", values={"a": 1}), site, Layer("device", "d", values={"a": 3})])
    assert r.values == {"a": 2}
    assert r.provenance == {"a": "site:s"}
    assert r.refused == [Refused("a", "device:d", "site:s")]


def test_a_lock_covers_a_subtree_and_its_ancestors_cannot_replace_it() -> None:
    g = Layer("global", values={"net": {"ntp": "a", "dns": "b"}}, locked={"net"})
    r = merge([g, Layer("site", "s", values={"net.ntp": "x", "net.proxy": "p", "other": 1})])
    assert r.values == {"net.dns": "b", "net.ntp": "a", "other": 1}
    assert r.refused == [Refused("net.ntp", "site:s", "global"), Refused("net.proxy", "site:s", "global")]
    # locking a leaf also stops a lower layer replacing its parent with a scalar
    g = Layer("global", values={"net": {"ntp": "a", "dns": "b"}}, locked={"net.ntp"})
    r = merge([g, Layer("device", "d", values={"net": "off", "net.dns": "c"})])
    assert r.values == {"net.dns": "c", "net.ntp": "a"}
    assert r.refused == [Refused("net", "device:d", "global")]


def test_locking_an_unset_key_keeps_it_unset() -> None:
    r = merge([Layer("global", locked={"debug_shell"}), Layer("device", "d", values={"debug_shell": True})])
    assert r.values == {}
    assert r.refused == [Refused("debug_shell", "device:d", "global")]


def test_lock_holds_the_value_inherited_at_the_locking_layer() -> None:
    r = merge([
        Layer("global", values={"a": 1}),
        Layer("site", "s", locked={"a"}),
        Layer("group", "g", values={"a": 5}),
    ])
    assert r.values == {"a": 1}
    assert r.provenance == {"a": "global"}
    assert r.locks == {"a": "site:s"}
    assert r.refused == [Refused("a", "group:g", "site:s")]


def test_a_lock_in_one_group_binds_later_groups_not_earlier_ones() -> None:
    a = Layer("group", "a", values={"k": "a"}, locked={"k"})
    b = Layer("group", "b", values={"k": "b"})
    r = merge([b, a])
    assert r.values == {"k": "a"}
    assert r.refused == [Refused("k", "group:b", "group:a")]
    # reversed names: the locking group applies last, after the other group already set the key
    r = merge([Layer("group", "a", values={"k": "a"}), Layer("group", "b", values={"k": "b"}, locked={"k"})])
    assert r.values == {"k": "b"} and r.refused == []


def test_the_least_specific_lock_is_named() -> None:
    r = merge([
        Layer("global", values={"a": 1}, locked={"a"}),
        Layer("site", "s", locked={"a"}),
        Layer("device", "d", values={"a": 2}),
    ])
    assert r.refused == [Refused("a", "device:d", "global")]


# --- version ---------------------------------------------------------------------------------------

def test_version_is_a_stable_content_hash() -> None:
    r = merge([GLOBAL, SITE, GROUP_A, GROUP_B, DEVICE])
    assert r.version == merge([DEVICE, GROUP_B, GROUP_A, SITE, GLOBAL]).version
    assert len(r.version) == 16 and int(r.version, 16) >= 0
    # pinned: a change of hashing would make every device look drifted; sha256(b'{"a":1,"b.c":"x"}')[:16]
    assert merge([Layer("global", values={"a": 1, "b": {"c": "x"}})]).version == "83c1a5baa77f6f5b"


def test_version_depends_on_values_only_not_on_provenance() -> None:
    from_global = merge([Layer("global", values={"a": 1})])
    from_device = merge([Layer("global"), Layer("device", "d", values={"a": 1})])
    assert from_global.provenance != from_device.provenance
    assert from_global.version == from_device.version


def test_version_changes_with_any_value_and_type() -> None:
    base = merge([Layer("global", values={"a": 1})]).version
    assert merge([Layer("global", values={"a": 2})]).version != base
    assert merge([Layer("global", values={"a": 1.0})]).version != base
    assert merge([Layer("global", values={"a": True})]).version != base
    assert merge([Layer("global", values={"a": "1"})]).version != base
    assert merge([Layer("global", values={"b": 1})]).version != base


def test_values_that_are_not_json_are_refused_with_the_key() -> None:
    with pytest.raises(ConfigError, match="'a.b'"):
        merge([Layer("global", values={"a": {"b": object()}})])
    with pytest.raises(ConfigError, match="'x'"):
        merge([Layer("global", values={"x": float("nan")})])


# --- explain ---------------------------------------------------------------------------------------

def test_explain_rows() -> None:
    rows = explain(merge([GLOBAL, SITE, GROUP_A, GROUP_B, DEVICE]))
    assert rows == [
        ExplainRow("log_level", "error", "device:dev-1", None, ()),
        ExplainRow("ntp", "pool.ntp.org", "global", "global", ("site:plant-7",)),
        ExplainRow("sensors", ["t1", "t2"], "group:line-a", "group:line-b", ("device:dev-1",)),
        ExplainRow("telemetry.batch", 50, "device:dev-1", None, ()),
        ExplainRow("telemetry.interval_s", 30, "site:plant-7", None, ()),
        ExplainRow("timezone", "Europe/Berlin", "site:plant-7", None, ()),
    ]


def test_explain_shows_a_refused_key_that_stayed_unset() -> None:
    r = merge([Layer("global", locked={"net"}), Layer("device", "d", values={"net.proxy": "p"})])
    assert explain(r) == [ExplainRow("net.proxy", None, None, "global", ("device:d",))]


# --- diff and the dry run ----------------------------------------------------------------------

def test_diff_reports_added_removed_and_changed_keys() -> None:
    before = merge([Layer("global", values={"a": 1, "b": 2, "c": [1]})])
    after = merge([Layer("global", values={"a": 1, "b": 3, "d": 4, "c": [1]})])
    assert diff(before, after) == ["b", "d"]
    assert diff(after, before) == ["b", "d"]
    assert diff(before, before) == []
    assert diff({"a": {"x": 1}}, {"a.x": 1}) == []


def test_diff_sees_type_changes_python_equality_would_hide() -> None:
    assert diff({"a": 1}, {"a": 1.0}) == ["a"]
    assert diff({"a": 1}, {"a": True}) == ["a"]
    assert diff({"a": [1]}, {"a": [True]}) == ["a"]
    assert diff({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}) == []


def test_dry_run_lists_the_devices_that_would_change() -> None:
    glob = Layer("global", values={"interval_s": 60}, locked={"ntp"})
    sites = {"p1": Layer("site", "p1", values={"ntp": "x"}), "p2": Layer("site", "p2", values={"interval_s": 10})}
    fleet = {"d1": "p1", "d2": "p1", "d3": "p2"}
    overrides = {"d2": Layer("device", "d2", values={"interval_s": 5})}

    def resolve(g: Layer, site_layers: dict[str, Layer]) -> dict[str, Resolved]:
        out = {}
        for dev, site in fleet.items():
            out[dev] = merge([g, site_layers[site], overrides.get(dev, Layer("device", dev))])
        return out

    before = resolve(glob, sites)
    # `config set --layer global interval_s 30 --dry-run`: d2 overrides it, d3's site overrides it
    after = resolve(glob.set("interval_s", 30), sites)
    assert changed_devices(before, after) == {"d1": ["interval_s"]}
    # `config set --layer site:p2 interval_s 60 --dry-run`
    after = resolve(glob, {**sites, "p2": sites["p2"].set("interval_s", 60)})
    assert changed_devices(before, after) == {"d3": ["interval_s"]}
    # a locked key: the change to the site layer changes no device
    after = resolve(glob, {**sites, "p1": sites["p1"].set("ntp", "y")})
    assert changed_devices(before, after) == {}
    # a device added or removed changes every key it has
    assert changed_devices(before, {k: v for k, v in before.items() if k != "d3"}) == {"d3": ["interval_s"]}


def test_layer_set_replaces_related_keys_and_keeps_locks() -> None:
    layer = Layer("site", "s", values={"net": {"ntp": "a"}, "x": 1}, locked={"x"})
    assert layer.set("net", "off").values == {"net": "off", "x": 1}
    assert layer.set("net.dns", "d").values == {"net.ntp": "a", "net.dns": "d", "x": 1}
    assert layer.set("net", "off").locked == {"x"}
    assert layer.values == {"net.ntp": "a", "x": 1}  # unchanged: layers are values
