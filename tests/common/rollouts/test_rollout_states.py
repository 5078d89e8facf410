"""The rollout and device state tables are complete: reachable, final states final, every live state can stop."""

from __future__ import annotations

import pytest

from common.errors import RolloutError
from common.rollouts.states import (
    DEVICE_ACTIVE,
    DEVICE_TABLE,
    ROLLOUT_FINAL,
    ROLLOUT_TABLE,
    DeviceEvent,
    DeviceState,
    RolloutEvent,
    RolloutState,
    step_device,
    step_rollout,
)


def _reachable(table, start):
    seen, todo = {start}, [start]
    while todo:
        s = todo.pop()
        for (frm, _), to in table.items():
            if frm == s and to not in seen:
                seen.add(to)
                todo.append(to)
    return seen


def test_every_rollout_state_is_reachable_from_draft():
    assert _reachable(ROLLOUT_TABLE, RolloutState.DRAFT) == set(RolloutState)


def test_final_rollout_states_have_no_way_out_and_every_other_state_can_be_aborted():
    for (frm, _), _to in ROLLOUT_TABLE.items():
        assert frm not in ROLLOUT_FINAL
    for s in set(RolloutState) - ROLLOUT_FINAL:
        assert (s, RolloutEvent.ABORT) in ROLLOUT_TABLE, s
    assert ROLLOUT_TABLE[(RolloutState.RUNNING, RolloutEvent.HALT)] == RolloutState.PAUSED


def test_every_device_state_is_reachable_from_pending():
    assert _reachable(DEVICE_TABLE, DeviceState.PENDING) == set(DeviceState)


def test_every_in_flight_device_state_can_fail_and_time_out():
    for s in DEVICE_ACTIVE:
        assert (s, DeviceEvent.FAIL) in DEVICE_TABLE, s
        assert (s, DeviceEvent.TIMEOUT) in DEVICE_TABLE, s
    for s in (DeviceState.INSTALLING, DeviceState.TRIAL, DeviceState.SUCCEEDED):
        assert DEVICE_TABLE[(s, DeviceEvent.ROLLBACK)] == DeviceState.ROLLED_BACK
    for s in (DeviceState.FAILED, DeviceState.TIMED_OUT):
        assert DEVICE_TABLE[(s, DeviceEvent.RETRY)] == DeviceState.PENDING
    for s in (DeviceState.SKIPPED, DeviceState.ROLLED_BACK):
        assert not [k for k in DEVICE_TABLE if k[0] == s], f"{s} must be final"


def test_a_step_the_tables_do_not_hold_is_a_typed_error_naming_the_rollout():
    with pytest.raises(RolloutError, match="rollout r9: cannot resume a rollout that is completed"):
        step_rollout("r9", RolloutState.COMPLETED, RolloutEvent.RESUME)
    with pytest.raises(RolloutError, match="device 'd1': no step 'install' from 'skipped'"):
        step_device("r9", "d1", DeviceState.SKIPPED, DeviceEvent.INSTALL)
