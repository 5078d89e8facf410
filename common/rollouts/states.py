"""The rollout's two state machines as tables: the rollout's own, and each device's within it.

Every step goes through ``step_rollout`` / ``step_device``, which look the pair
``(state, event)`` up in its table and raise ``RolloutConflict("transition")`` for a
pair the table does not hold: nothing changes state by assignment elsewhere.
``tests/cloud/test_rollout_states.py`` proves every state reachable from the
start, every final state final, and every non-final state able to fail or stop.

Rollout::

    draft --schedule--> scheduled --start--> running --complete--> completed
      |                     |                 |  ^
      +------start----------|--------------->-+  | resume
                            |                 v  |
                            +---abort-->   paused --abort--> aborted
    (running --halt--> paused when the failure threshold says pause;
     running --abort--> aborted when it says abort, or the operator does)

Device (within one rollout)::

    pending --skip--> skipped(reason)
    pending --download--> downloading --downloaded--> downloaded --install--> installing
    pending --install--> installing --trial--> trial --commit--> succeeded
    installing|trial --rollback--> rolled_back;  downloading|installing|trial --fail--> failed
    downloading|installing|trial --timeout--> timed_out
    installing|timed_out --late--> downloaded (the device refused to begin past its window: not a failure)
    failed|timed_out --retry--> pending       (bounded, with backoff)
    succeeded --rollback--> rolled_back       (reverted during soak, or sent back on abort)
"""

from __future__ import annotations

from enum import StrEnum

from common.errors import RolloutConflict

__all__ = [
    "DEVICE_FINAL",
    "DEVICE_TABLE",
    "DeviceEvent",
    "DeviceState",
    "ROLLOUT_FINAL",
    "ROLLOUT_TABLE",
    "RolloutEvent",
    "RolloutState",
    "step_device",
    "step_rollout",
]


class RolloutState(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"


class RolloutEvent(StrEnum):
    SCHEDULE = "schedule"  # a start time in the future was set
    START = "start"  # the start time came (or none was set)
    PAUSE = "pause"  # the operator paused
    HALT = "halt"  # the failure threshold (or a health gate) says pause
    RESUME = "resume"
    COMPLETE = "complete"  # the last stage soaked and passed its gates
    ABORT = "abort"  # the operator, or the failure threshold with on_failure=abort


ROLLOUT_TABLE: dict[tuple[RolloutState, RolloutEvent], RolloutState] = {
    (RolloutState.DRAFT, RolloutEvent.SCHEDULE): RolloutState.SCHEDULED,
    (RolloutState.DRAFT, RolloutEvent.START): RolloutState.RUNNING,
    (RolloutState.DRAFT, RolloutEvent.ABORT): RolloutState.ABORTED,
    (RolloutState.SCHEDULED, RolloutEvent.START): RolloutState.RUNNING,
    (RolloutState.SCHEDULED, RolloutEvent.PAUSE): RolloutState.PAUSED,
    (RolloutState.SCHEDULED, RolloutEvent.ABORT): RolloutState.ABORTED,
    (RolloutState.RUNNING, RolloutEvent.PAUSE): RolloutState.PAUSED,
    (RolloutState.RUNNING, RolloutEvent.HALT): RolloutState.PAUSED,
    (RolloutState.RUNNING, RolloutEvent.COMPLETE): RolloutState.COMPLETED,
    (RolloutState.RUNNING, RolloutEvent.ABORT): RolloutState.ABORTED,
    (RolloutState.PAUSED, RolloutEvent.RESUME): RolloutState.RUNNING,
    (RolloutState.PAUSED, RolloutEvent.ABORT): RolloutState.ABORTED,
}
ROLLOUT_FINAL = frozenset({RolloutState.COMPLETED, RolloutState.ABORTED})


class DeviceState(StrEnum):
    PENDING = "pending"
    SKIPPED = "skipped"
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    INSTALLING = "installing"
    TRIAL = "trial"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    TIMED_OUT = "timed_out"


class DeviceEvent(StrEnum):
    SKIP = "skip"
    DOWNLOAD = "download"  # download-only sent (the window is closed)
    DOWNLOADED = "downloaded"
    INSTALL = "install"  # install sent (inside the window)
    TRIAL = "trial"  # the device booted the new slot on trial
    COMMIT = "commit"  # the device committed the new slot
    ROLLBACK = "rollback"  # the device went back to its previous slot
    FAIL = "fail"  # the device reported a failure before trial (download, verify, write)
    TIMEOUT = "timeout"  # no outcome within the per-device timeout
    RETRY = "retry"  # another attempt, after a backoff
    LATE = "late"  # the device had the release only after its window closed and did not begin: next window


_D = DeviceState
_E = DeviceEvent
DEVICE_TABLE: dict[tuple[DeviceState, DeviceEvent], DeviceState] = {
    (_D.PENDING, _E.SKIP): _D.SKIPPED,
    (_D.PENDING, _E.DOWNLOAD): _D.DOWNLOADING,
    (_D.PENDING, _E.INSTALL): _D.INSTALLING,
    (_D.PENDING, _E.COMMIT): _D.SUCCEEDED,  # an outcome that overtook our own record (site reports)
    (_D.PENDING, _E.ROLLBACK): _D.ROLLED_BACK,
    (_D.PENDING, _E.FAIL): _D.FAILED,
    (_D.DOWNLOADING, _E.DOWNLOADED): _D.DOWNLOADED,
    (_D.DOWNLOADING, _E.INSTALL): _D.INSTALLING,
    (_D.DOWNLOADING, _E.FAIL): _D.FAILED,
    (_D.DOWNLOADING, _E.TIMEOUT): _D.TIMED_OUT,
    (_D.DOWNLOADED, _E.INSTALL): _D.INSTALLING,
    (_D.DOWNLOADED, _E.FAIL): _D.FAILED,
    (_D.DOWNLOADED, _E.TIMEOUT): _D.TIMED_OUT,
    (_D.INSTALLING, _E.TRIAL): _D.TRIAL,
    (_D.INSTALLING, _E.COMMIT): _D.SUCCEEDED,
    (_D.INSTALLING, _E.ROLLBACK): _D.ROLLED_BACK,
    (_D.INSTALLING, _E.FAIL): _D.FAILED,
    (_D.INSTALLING, _E.TIMEOUT): _D.TIMED_OUT,
    (_D.INSTALLING, _E.LATE): _D.DOWNLOADED,  # it holds the release: it installs when released again
    (_D.TRIAL, _E.COMMIT): _D.SUCCEEDED,
    (_D.TRIAL, _E.ROLLBACK): _D.ROLLED_BACK,
    (_D.TRIAL, _E.FAIL): _D.FAILED,
    (_D.TRIAL, _E.TIMEOUT): _D.TIMED_OUT,
    (_D.SUCCEEDED, _E.ROLLBACK): _D.ROLLED_BACK,
    (_D.FAILED, _E.RETRY): _D.PENDING,
    (_D.TIMED_OUT, _E.RETRY): _D.PENDING,
    (_D.TIMED_OUT, _E.COMMIT): _D.SUCCEEDED,  # a late outcome still counts: it is the truth
    (_D.TIMED_OUT, _E.ROLLBACK): _D.ROLLED_BACK,
    (_D.TIMED_OUT, _E.FAIL): _D.FAILED,
    (_D.TIMED_OUT, _E.LATE): _D.DOWNLOADED,  # a late refusal that arrived after the timeout
}
# final within the rollout (failed and timed_out may still retry while attempts remain; the engine decides)
DEVICE_FINAL = frozenset({_D.SKIPPED, _D.SUCCEEDED, _D.ROLLED_BACK, _D.FAILED, _D.TIMED_OUT})
DEVICE_ACTIVE = frozenset({_D.DOWNLOADING, _D.DOWNLOADED, _D.INSTALLING, _D.TRIAL})


def step_rollout(rollout_id: str, state: RolloutState, event: RolloutEvent) -> RolloutState:
    try:
        return ROLLOUT_TABLE[(state, event)]
    except KeyError:
        raise RolloutConflict(
            rollout_id, "transition", f"cannot {event.value} a rollout that is {state.value}"
        ) from None


def step_device(rollout_id: str, device_id: str, state: DeviceState, event: DeviceEvent) -> DeviceState:
    try:
        return DEVICE_TABLE[(state, event)]
    except KeyError:
        raise RolloutConflict(
            rollout_id, "transition", f"device {device_id!r}: no step {event.value!r} from {state.value!r}"
        ) from None
