"""The update state table is complete, step() is pure and breaks loops, the record round-trips."""

import dataclasses
import json
from collections import deque

import pytest

import device_agent.update as update
from common.errors import UpdateError
from device_agent.update.states import (
    FINAL,
    MAX_STORE_COUNT,
    RESTING,
    TABLE,
    Action,
    Ev,
    State,
    UpdateRecord,
    step,
)
from device_agent.update.store import RecordStore


def test_public_api_is_what_all_says():
    for name in update.__all__:
        assert hasattr(update, name), name
    assert sorted(update.__all__, key=str.lower) == sorted(set(update.__all__), key=str.lower)


def test_every_state_is_reachable_from_idle():
    seen, todo = {State.IDLE}, deque([State.IDLE])
    while todo:
        s = todo.popleft()
        for (src, _), (dst, _) in TABLE.items():
            if src is s and dst not in seen:
                seen.add(dst)
                todo.append(dst)
    assert seen == set(State)


def test_every_non_final_state_handles_failure_and_power_on():
    for s in set(State) - FINAL:
        assert (s, Ev.FAILED) in TABLE, s
        assert (s, Ev.POWER_ON) in TABLE, s


def test_final_states_are_defined_and_wait_for_the_report():
    assert FINAL == {State.COMMITTED, State.ROLLED_BACK, State.FAILED}
    for s in FINAL:
        assert TABLE[(s, Ev.POWER_ON)] == (s, Action.REPORT)  # re-reported on every boot until acknowledged
        assert TABLE[(s, Ev.REPORTED)] == (State.IDLE, None)
    # every way into a final state reports
    for (src, ev), (dst, action) in TABLE.items():
        if dst in FINAL and src is not dst:
            assert action in (Action.REPORT, Action.ABANDON), (src, ev)


def test_failure_reaches_a_final_state_within_two_steps():
    for s in set(State) - RESTING:
        r = UpdateRecord(state=s, target_slot="B", source_slot="A")
        for _ in range(2):
            r, _ = step(r, Ev.FAILED, reason="boom")
            if r.state in FINAL:
                break
        assert r.state in FINAL, s
        assert r.reason == "boom"


def test_power_on_in_progress_resumes_the_same_state():
    for s in set(State) - RESTING:
        nxt, action = TABLE[(s, Ev.POWER_ON)]
        assert nxt is s and action is not None, s


def test_an_unknown_event_is_an_error_naming_state_and_event():
    with pytest.raises(UpdateError, match="no transition from idle on health_ok"):
        step(UpdateRecord(), Ev.HEALTH_OK)


def test_step_is_pure_and_counts_transitions():
    r0 = UpdateRecord(target_version="1.1")
    r1, actions = step(r0, Ev.START)
    assert r0.state is State.IDLE and r1.state is State.DOWNLOADING and actions == [Action.DOWNLOAD]
    r2, _ = step(r1, Ev.DONE)
    assert (r1.store_count, r2.store_count) == (0, 1)


def test_store_counter_breaks_a_power_on_loop():
    r, _ = step(UpdateRecord(target_version="1.1"), Ev.START)
    for _ in range(200):
        r, actions = step(r, Ev.POWER_ON)
        if r.state in FINAL:
            break
    assert r.state is State.FAILED
    assert r.store_count == MAX_STORE_COUNT + 1
    assert "state looping detected" in r.reason and actions == [Action.REPORT]


def test_looping_in_trial_rolls_back_first():
    r = UpdateRecord(state=State.TRIAL, target_slot="B", store_count=MAX_STORE_COUNT)
    r, actions = step(r, Ev.POWER_ON)
    assert r.state is State.ROLLING_BACK and actions == [Action.ROLLBACK]
    # but an outcome that ends the update is never held back by the counter
    r = UpdateRecord(state=State.ROLLING_BACK, target_slot="B", store_count=5 * MAX_STORE_COUNT)
    assert step(r, Ev.BOOTED_OLD)[0].state is State.ROLLED_BACK


def test_commit_installs_the_version_and_raises_the_security_floor():
    r = UpdateRecord(
        state=State.COMMITTING,
        installed_version="1.0",
        security_floor=3,
        target_version="1.1",
        target_security_version=5,
    )
    r, actions = step(r, Ev.DONE)
    assert (r.state, r.installed_version, r.security_floor, actions) == (State.COMMITTED, "1.1", 5, [Action.REPORT])
    r, _ = step(r, Ev.REPORTED)
    assert r.state is State.IDLE and r.store_count == 0 and r.installed_version == "1.1"


def test_rollback_keeps_the_installed_version():
    r = UpdateRecord(
        state=State.ROLLING_BACK,
        installed_version="1.0",
        security_floor=3,
        target_version="1.1",
        target_security_version=5,
    )
    r, _ = step(r, Ev.BOOTED_OLD)
    assert (r.state, r.installed_version, r.security_floor, r.outcome) == (State.ROLLED_BACK, "1.0", 3, "rolled_back")


def test_record_round_trips_through_the_store(tmp_path):
    store = RecordStore(tmp_path / "update.json")
    assert store.load() is None
    r = UpdateRecord(
        state=State.TRIAL,
        installed_version="1.0",
        target_version="1.1",
        target_slot="B",
        target_size=10,
        store_count=7,
        reason="x",
    )
    store.save(r)
    assert store.load() == r
    assert json.loads((tmp_path / "update.json").read_text())["format"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left behind


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.update(format=2), "format 2"),
        (lambda d: d.update(state="sleeping"), "malformed"),
        (lambda d: d.update(extra=1), "unknown fields"),
        (lambda d: d.update(store_count="3"), "store_count"),
    ],
)
def test_a_record_this_agent_cannot_read_is_an_error(tmp_path, mutate, match):
    data = UpdateRecord().to_dict()
    mutate(data)
    (tmp_path / "update.json").write_text(json.dumps(data))
    with pytest.raises(UpdateError, match=match):
        RecordStore(tmp_path / "update.json").load()


def test_garbage_record_file_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "update.json").write_bytes(b"\x00not json")
    with pytest.raises(UpdateError, match="update.json.*not JSON"):
        RecordStore(tmp_path / "update.json").load()


def test_record_fields_are_all_persisted():
    names = {f.name for f in dataclasses.fields(UpdateRecord)}
    assert set(UpdateRecord().to_dict()) == names


def test_power_on_in_idle_on_another_version_than_recorded_records_what_runs():
    """GRUB gives a slot one try: a power cut between a boot and its mark-good boots the other slot. The next
    update must start from what runs, not from the version the record remembers."""
    from device_agent.update.core import Confirm, PersistRecord, PowerOn, UpdateCore

    core = UpdateCore("dev-1", "hw")
    effects = core.handle(PowerOn(UpdateRecord(installed_version="1.0.0"), "A", "0.9.0"), 0.0)
    persisted = [e.record for e in effects if isinstance(e, PersistRecord)]
    assert persisted and persisted[-1].installed_version == "0.9.0" and Confirm("A") in effects
    effects = core.handle(PowerOn(UpdateRecord(installed_version="1.0.0"), "A", "?"), 0.0)  # unreadable: kept
    assert [e.record for e in effects if isinstance(e, PersistRecord)][-1].installed_version == "1.0.0"


def test_power_on_away_from_a_committed_slot_confirms_it_again_and_keeps_the_record():
    from device_agent.update.core import Confirm, PersistRecord, PowerOn, UpdateCore

    committed = UpdateRecord(installed_version="2.0.0", target_version="2.0.0", target_slot="B", source_slot="A")
    effects = UpdateCore("dev-1", "hw").handle(PowerOn(committed, "A", "1.0.0"), 0.0)
    assert Confirm("A") in effects and Confirm("B") in effects
    assert [e.record for e in effects if isinstance(e, PersistRecord)][-1].installed_version == "2.0.0"
    rolled_back = UpdateRecord(installed_version="1.0.0", target_version="2.0.0", target_slot="B", source_slot="A")
    effects = UpdateCore("dev-1", "hw").handle(PowerOn(rolled_back, "A", "0.9.0"), 0.0)
    assert Confirm("B") not in effects  # the update was not committed: B is never confirmed
