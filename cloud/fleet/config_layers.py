"""Layered device config with provenance and locks (``config explain``, ``config set --dry-run``).

A device's desired config is the merge of up to four kinds of layer, least
specific first; a later layer overrides an earlier one::

    global  <  site  <  group (each of the device's groups, sorted by name)  <  device

Several groups are applied in name order, so when two groups set the same key
the group whose name sorts last wins; that order is fixed so the same inputs
always give the same config and the same version, whatever order the store
returned the groups in.

Each layer is a (possibly nested) mapping; nested mappings are flattened to
dotted keys (``{"net": {"ntp": "a"}}`` and ``{"net.ntp": "a"}`` are the same
key), so layers merge key by key. Lists and other values are leaves (replaced,
never merged). An empty mapping sets nothing. Setting a key replaces what an
earlier layer had at that key, below it and above it: a scalar ``net`` replaces
``net.ntp``, and ``net.ntp`` replaces a scalar ``net``.

A layer may lock keys. A lock on ``k`` covers ``k`` and every ``k.*`` key, and
holds the value resolved at the locking layer (even "unset"). A more specific
layer that tries to set a covered key (or an ancestor of one, which would
replace it) is not applied: the attempt is kept in ``Resolved.refused`` as
``(key, layer, locked_by)`` so operators see it, rather than dropped silently.

``Resolved.version`` is a content hash of the merged values only: moving a key
between layers without changing its value does not change the version a device
has to apply.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from common.errors import ConfigError

__all__ = [
    "ExplainRow",
    "KINDS",
    "Layer",
    "Refused",
    "Resolved",
    "changed_devices",
    "diff",
    "explain",
    "flatten",
    "merge",
    "unflatten",
]

KINDS = ("global", "site", "group", "device")  # least specific first
_RANK = {kind: i for i, kind in enumerate(KINDS)}


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings to ``{dotted.key: leaf}``; raises ``ConfigError`` on an empty or duplicate key."""
    out: dict[str, Any] = {}
    for raw, value in values.items():
        if not isinstance(raw, str) or not raw or any(not part for part in raw.split(".")):
            raise ConfigError(f"config key {prefix + str(raw)!r} is not a valid dotted name")
        key = prefix + raw
        items = flatten(value, key + ".") if isinstance(value, Mapping) else {key: value}
        for k, v in items.items():
            if k in out:
                raise ConfigError(f"config key {k!r} is given twice (nested and dotted)")
            out[k] = v
    return out


def unflatten(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{dotted.key: leaf}`` back to nested dicts (the inverse of ``flatten`` on merged values)."""
    out: dict[str, Any] = {}
    for key in sorted(values):
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = values[key]
    return out


def _covers(lock: str, key: str) -> bool:
    return key == lock or key.startswith(lock + ".")


def _related(a: str, b: str) -> bool:
    """One key is the other, or an ancestor or descendant of it."""
    return _covers(a, b) or _covers(b, a)


@dataclass(frozen=True)
class Layer:
    """One config document: ``kind`` is global/site/group/device; ``name`` the site, group or device id."""

    kind: str
    name: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)
    locked: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.kind not in _RANK:
            raise ConfigError(f"config layer kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if (self.kind == "global") != (not self.name):
            need = "takes no" if self.kind == "global" else "needs a"
            raise ConfigError(f"config layer {self.kind!r} {need} name, got {self.name!r}")
        object.__setattr__(self, "values", flatten(self.values))
        object.__setattr__(self, "locked", frozenset(self.locked))
        for key in self.locked:
            flatten({key: None})  # validates the name

    @property
    def label(self) -> str:
        """``global``, ``site:plant-7``, ``group:line-a`` or ``device:dev-1``: the provenance name."""
        return self.kind if self.kind == "global" else f"{self.kind}:{self.name}"

    def set(self, key: str, value: Any) -> Layer:
        """A copy of this layer with ``key`` set (for ``config set``, and its dry run)."""
        values = {k: v for k, v in self.values.items() if not _related(k, key)}
        values.update(flatten({key: value}))
        return Layer(self.kind, self.name, values, self.locked)


class Refused(NamedTuple):
    key: str
    layer: str  # the label of the layer whose value was not applied
    locked_by: str  # the label of the layer holding the lock


@dataclass(frozen=True)
class Resolved:
    values: dict[str, Any]  # flat dotted key -> value
    provenance: dict[str, str]  # key -> label of the layer that set it
    refused: list[Refused]  # in merge order
    locks: dict[str, str]  # lock (key or prefix) -> label of the layer that holds it
    version: str  # content hash of ``values``

    def nested(self) -> dict[str, Any]:
        return unflatten(self.values)


def _ordered(layers: Iterable[Layer]) -> list[Layer]:
    out = sorted(layers, key=lambda layer: (_RANK[layer.kind], layer.name))
    seen: dict[str, Layer] = {}
    for layer in out:
        single = layer.kind if layer.kind != "group" else layer.label
        if single in seen:
            raise ConfigError(f"config layers {seen[single].label!r} and {layer.label!r} cannot both apply")
        seen[single] = layer
    return out


def _version(values: Mapping[str, Any]) -> str:
    for key, value in values.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config key {key!r} has a value that is not plain JSON: {exc}") from exc
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def merge(layers: Iterable[Layer]) -> Resolved:
    """Merge ``layers`` (any order: they are sorted global, site, groups by name, device)."""
    values: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    refused: list[Refused] = []
    locks: dict[str, str] = {}
    for layer in _ordered(layers):
        for key in sorted(layer.values):
            holder = next((locks[lock] for lock in sorted(locks) if _related(lock, key)), None)
            if holder is not None:  # locks of this layer apply only below it (added after its values)
                refused.append(Refused(key, layer.label, holder))
                continue
            for old in [k for k in values if _related(k, key)]:
                del values[old], provenance[old]
            values[key] = layer.values[key]
            provenance[key] = layer.label
        for lock in sorted(layer.locked):
            locks.setdefault(lock, layer.label)  # the least specific lock holds
    ordered = {k: values[k] for k in sorted(values)}
    return Resolved(
        values=ordered,
        provenance={k: provenance[k] for k in ordered},
        refused=refused,
        locks=dict(sorted(locks.items())),
        version=_version(ordered),
    )


class ExplainRow(NamedTuple):
    key: str
    value: Any  # None when the key is unset (a row only because an override was refused)
    layer: str | None  # the layer that set it; None when unset
    locked_by: str | None  # the layer whose lock covers the key
    refused: tuple[str, ...]  # layers whose value for this key was refused by the lock


def explain(resolved: Resolved) -> list[ExplainRow]:
    """One row per key (sorted): its value, the layer that set it, its lock and any refused overrides."""
    refused: dict[str, list[str]] = {}
    for r in resolved.refused:
        refused.setdefault(r.key, []).append(r.layer)
    rows = []
    for key in sorted(set(resolved.values) | set(refused)):
        lock = next((holder for lock, holder in resolved.locks.items() if _covers(lock, key)), None)
        rows.append(
            ExplainRow(
                key,
                resolved.values.get(key),
                resolved.provenance.get(key),
                lock,
                tuple(refused.get(key, ())),
            )
        )
    return rows


def diff(before: Resolved | Mapping[str, Any], after: Resolved | Mapping[str, Any]) -> list[str]:
    """Keys added, removed or changed from ``before`` to ``after`` (sorted); [] when nothing changes."""
    a = before.values if isinstance(before, Resolved) else flatten(before)
    b = after.values if isinstance(after, Resolved) else flatten(after)
    return sorted(k for k in set(a) | set(b) if k not in a or k not in b or not _same(a[k], b[k]))


def _same(x: Any, y: Any) -> bool:
    # 1 == 1.0 == True in Python, but a device receiving 1.0 for 1 (or true) gets a different config
    return type(x) is type(y) and x == y if not isinstance(x, (list, dict)) else _canon(x) == _canon(y)


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def changed_devices(before: Mapping[str, Resolved], after: Mapping[str, Resolved]) -> dict[str, list[str]]:
    """For ``config set --dry-run``: device id -> changed keys, only for devices whose config changes.

    A device present on one side only counts as changing every key it has.
    """
    empty = Resolved({}, {}, [], {}, _version({}))
    out = {}
    for device in sorted(set(before) | set(after)):
        keys = diff(before.get(device, empty), after.get(device, empty))
        if keys:
            out[device] = keys
    return out

