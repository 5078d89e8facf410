"""The lifecycle table (complete, every move checked), set_state as the one place a transition happens,
and what retirement does (leaves groups, keeps history, runs the retire hooks)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloud.fleet import lifecycle
from cloud.store import Store
from common.errors import FleetError, TransitionError
from common.protocol.messages import ForwardRecord
from tests.cloud.store.test_store import store_url  # noqa: F401  (SQLite and PostgreSQL)

T0 = 1_700_000_000_000


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store.open(store_url)
    s.telemetry.ingest("gw-1", "site-a", [ForwardRecord(d, "bulk", 1, T0, "metrics", {}) for d in ("d1", "d2")], T0)
    yield s
    s.close()


def _reachable(start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in lifecycle.TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_table_names_every_state_and_only_states() -> None:
    assert set(lifecycle.TRANSITIONS) == set(lifecycle.STATES)
    assert all(targets <= set(lifecycle.STATES) for targets in lifecycle.TRANSITIONS.values())


def test_every_state_is_reachable_from_pending_and_every_non_final_state_can_retire() -> None:
    assert _reachable("pending") == set(lifecycle.STATES)
    for state in lifecycle.STATES:
        if state not in lifecycle.FINAL_STATES:
            assert "retired" in _reachable(state), state
    assert all(not lifecycle.TRANSITIONS[s] for s in lifecycle.FINAL_STATES)


@pytest.mark.parametrize("src", lifecycle.STATES)
@pytest.mark.parametrize("dst", lifecycle.STATES)
def test_check_allows_exactly_the_table(src: str, dst: str) -> None:
    if dst in lifecycle.TRANSITIONS[src]:
        lifecycle.check(src, dst, "d1")
    else:
        with pytest.raises(TransitionError, match="d1"):
            lifecycle.check(src, dst, "d1")


def test_an_unknown_state_is_refused_with_the_states_there_are() -> None:
    with pytest.raises(TransitionError, match="'asleep' is not a lifecycle state"):
        lifecycle.check("active", "asleep", "d1")


def test_rollouts_and_alerts_skip_devices_not_active() -> None:
    assert [s for s in lifecycle.STATES if lifecycle.eligible_for_rollout(s)] == ["active"]
    assert not lifecycle.eligible_for_alerts("maintenance") and lifecycle.eligible_for_alerts("active")


def test_set_state_records_who_when_from_to_why_and_runs_the_hooks(store: Store, monkeypatch) -> None:
    seen: list[dict] = []
    retired: list[dict] = []
    monkeypatch.setattr(lifecycle, "ON_TRANSITION", [seen.append])
    monkeypatch.setattr(lifecycle, "ON_RETIRE", [retired.append])
    row = lifecycle.set_state(store.fleet, "d1", "maintenance", "alice", "battery swap", T0 + 5)
    assert row | {"id": 0} == {"id": 0, "device_id": "d1", "from_state": "active", "to_state": "maintenance",
                               "by": "alice", "reason": "battery swap", "at_ms": T0 + 5}
    assert seen == [row] and retired == []
    with pytest.raises(TransitionError, match="cannot go from maintenance to pending"):
        lifecycle.set_state(store.fleet, "d1", "pending", "bob", "", T0 + 6)
    assert [h["to_state"] for h in store.fleet.lifecycle_history("d1")] == ["maintenance"]  # the refusal wrote nothing
    assert {d["device_id"]: d["state"] for d in store.telemetry.list_devices()} == {"d1": "maintenance", "d2": "active"}
    lifecycle.set_state(store.fleet, "d1", "retired", "alice", "end of life", T0 + 7)
    assert [r["to_state"] for r in retired] == ["retired"]


def test_retiring_leaves_every_group_keeps_history_and_joins_none_again(store: Store) -> None:
    store.fleet.create_group("line-a", "static", None, T0)
    store.fleet.change_members("line-a", add=["d1", "d2"])
    lifecycle.set_state(store.fleet, "d1", "retired", "alice", "scrapped", T0 + 1)
    assert store.fleet.list_groups()[0]["members"] == ["d2"]
    assert [h["to_state"] for h in store.fleet.lifecycle_history("d1")] == ["retired"]
    with pytest.raises(FleetError, match="retired"):
        store.fleet.change_members("line-a", add=["d1"])
    with pytest.raises(TransitionError, match="final"):
        lifecycle.set_state(store.fleet, "d1", "active", "alice", "undo", T0 + 2)


def test_an_unknown_device_is_named(store: Store) -> None:
    with pytest.raises(FleetError, match="no device by the id of 'nope'"):
        lifecycle.set_state(store.fleet, "nope", "active", "alice", "", T0)


def test_ghosts_are_silent_longer_than_asked_and_not_retired(store: Store) -> None:
    store.telemetry.ingest("gw-1", "site-a", [ForwardRecord("d2", "bulk", 2, T0, "metrics", {})], T0 + 3_600_000)
    assert [g["device_id"] for g in store.fleet.ghosts(1_800_000, T0 + 3_600_000)] == ["d1"]
    assert store.fleet.ghosts(1_800_000, T0 + 3_600_000)[0]["silent_ms"] == 3_600_000
    lifecycle.set_state(store.fleet, "d1", "retired", "alice", "", T0)
    assert store.fleet.ghosts(1_800_000, T0 + 3_600_000) == []
