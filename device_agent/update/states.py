"""The update state machine as one table, and the record persisted at every step.

``TABLE`` maps ``(state, event)`` to ``(next state, action)``; ``step`` looks the
pair up and returns the next record and the actions to run. The caller persists
the record before it runs the actions, so a power cut at any instant leaves a
record whose state says what to do on the next ``power_on``: every non-final
state handles ``power_on`` by redoing (idempotently) or re-checking its step.

    idle ──start──> downloading ──done──> verifying ──done──> installing ──done──> arming
      │                                                                              │ done
      └─refused─> failed                                                             v
                                       rolled_back <──booted_old── rebooting <───────┘
                                            ^                          │ booted_new
                                            │ booted_old               v
    committed <──done── committing <──health_ok── trial ──health_failed / timeout / failed──> rolling_back

Every ``failed`` leads to ``failed`` (nothing booted yet: abandon the target
slot) or to ``rolling_back`` (the new slot is running) whose own ``failed``
leads to ``failed``: a final state is at most two failures away. The record's
``store_count`` counts transitions since the update started; past
``MAX_STORE_COUNT`` a transition into a non-final state is replaced by the
state's ``failed`` transition with the reason "state looping detected" (Mender's
``state_data_store_count``), so no sequence of power cuts loops for ever.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from common.errors import UpdateError

__all__ = [
    "FINAL",
    "MAX_STORE_COUNT",
    "OUTCOMES",
    "RECORD_FORMAT",
    "RESTING",
    "TABLE",
    "Action",
    "Ev",
    "State",
    "UpdateRecord",
    "step",
]

RECORD_FORMAT = 1
MAX_STORE_COUNT = 28  # Mender's kMaxStateDataStoreCount


class State(StrEnum):
    IDLE = "idle"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSTALLING = "installing"
    ARMING = "arming"
    REBOOTING = "rebooting"
    TRIAL = "trial"
    COMMITTING = "committing"
    ROLLING_BACK = "rolling_back"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class Ev(StrEnum):
    START = "start"  # an update was asked for and its plan passed
    REFUSED = "refused"  # an update was asked for and its plan was refused
    DONE = "done"  # the state's action finished
    FAILED = "failed"  # the state's action failed
    POWER_ON = "power_on"  # the device booted (after a reboot, a crash or a power cut)
    BOOTED_NEW = "booted_new"  # after power_on: the target slot is running
    BOOTED_OLD = "booted_old"  # after power_on: the previous slot is running
    HEALTH_OK = "health_ok"
    HEALTH_FAILED = "health_failed"
    TIMEOUT = "timeout"  # the state's action did not answer in time (a hung health check)
    REPORTED = "reported"  # the outcome was handed upstream durably


class Action(StrEnum):
    DOWNLOAD = "download"  # fetch the image (a local file: check it is there)
    VERIFY_IMAGE = "verify_image"  # size and SHA-256 of the image against the manifest
    INSTALL = "install"  # mark target bad, write it, verify the written slot
    ARM = "arm"  # set try-once boot to the target
    REBOOT = "reboot"
    CHECK_BOOT = "check_boot"  # no I/O: which slot booted -> booted_new / booted_old
    RUN_HEALTH = "run_health"
    COMMIT = "commit"  # mark the target good
    ROLLBACK = "rollback"  # mark the target bad, reboot into the previous slot
    ABANDON = "abandon"  # mark the target bad (reboot if it runs), report failed
    REPORT = "report"  # hand the outcome upstream


S, E, A = State, Ev, Action

# The whole graph. A pair that is not here is not a legal event in that state.
TABLE: dict[tuple[State, Ev], tuple[State, Action | None]] = {
    (S.IDLE, E.START): (S.DOWNLOADING, A.DOWNLOAD),
    (S.IDLE, E.REFUSED): (S.FAILED, A.REPORT),
    (S.IDLE, E.POWER_ON): (S.IDLE, None),
    (S.IDLE, E.FAILED): (S.IDLE, None),
    (S.DOWNLOADING, E.DONE): (S.VERIFYING, A.VERIFY_IMAGE),
    (S.DOWNLOADING, E.FAILED): (S.FAILED, A.REPORT),
    (S.DOWNLOADING, E.TIMEOUT): (S.FAILED, A.REPORT),
    (S.DOWNLOADING, E.POWER_ON): (S.DOWNLOADING, A.DOWNLOAD),
    (S.VERIFYING, E.DONE): (S.INSTALLING, A.INSTALL),
    (S.VERIFYING, E.FAILED): (S.FAILED, A.REPORT),
    (S.VERIFYING, E.POWER_ON): (S.VERIFYING, A.VERIFY_IMAGE),
    (S.INSTALLING, E.DONE): (S.ARMING, A.ARM),
    (S.INSTALLING, E.FAILED): (S.FAILED, A.ABANDON),
    (S.INSTALLING, E.POWER_ON): (S.INSTALLING, A.INSTALL),
    (S.ARMING, E.DONE): (S.REBOOTING, A.REBOOT),
    (S.ARMING, E.FAILED): (S.FAILED, A.ABANDON),
    (S.ARMING, E.POWER_ON): (S.ARMING, A.ARM),
    (S.REBOOTING, E.POWER_ON): (S.REBOOTING, A.CHECK_BOOT),
    (S.REBOOTING, E.BOOTED_NEW): (S.TRIAL, A.RUN_HEALTH),
    (S.REBOOTING, E.BOOTED_OLD): (S.ROLLED_BACK, A.REPORT),
    (S.REBOOTING, E.FAILED): (S.FAILED, A.ABANDON),
    (S.TRIAL, E.POWER_ON): (S.TRIAL, A.CHECK_BOOT),
    (S.TRIAL, E.BOOTED_NEW): (S.TRIAL, A.RUN_HEALTH),
    (S.TRIAL, E.BOOTED_OLD): (S.ROLLED_BACK, A.REPORT),
    (S.TRIAL, E.HEALTH_OK): (S.COMMITTING, A.COMMIT),
    (S.TRIAL, E.HEALTH_FAILED): (S.ROLLING_BACK, A.ROLLBACK),
    (S.TRIAL, E.TIMEOUT): (S.ROLLING_BACK, A.ROLLBACK),
    (S.TRIAL, E.FAILED): (S.ROLLING_BACK, A.ROLLBACK),
    (S.COMMITTING, E.POWER_ON): (S.COMMITTING, A.CHECK_BOOT),
    (S.COMMITTING, E.BOOTED_NEW): (S.COMMITTING, A.COMMIT),
    (S.COMMITTING, E.BOOTED_OLD): (S.ROLLED_BACK, A.REPORT),
    (S.COMMITTING, E.DONE): (S.COMMITTED, A.REPORT),
    (S.COMMITTING, E.FAILED): (S.ROLLING_BACK, A.ROLLBACK),
    (S.ROLLING_BACK, E.POWER_ON): (S.ROLLING_BACK, A.CHECK_BOOT),
    (S.ROLLING_BACK, E.BOOTED_NEW): (S.ROLLING_BACK, A.ROLLBACK),
    (S.ROLLING_BACK, E.BOOTED_OLD): (S.ROLLED_BACK, A.REPORT),
    (S.ROLLING_BACK, E.FAILED): (S.FAILED, A.ABANDON),
    (S.COMMITTED, E.POWER_ON): (S.COMMITTED, A.REPORT),
    (S.COMMITTED, E.REPORTED): (S.IDLE, None),
    (S.ROLLED_BACK, E.POWER_ON): (S.ROLLED_BACK, A.REPORT),
    (S.ROLLED_BACK, E.REPORTED): (S.IDLE, None),
    (S.FAILED, E.POWER_ON): (S.FAILED, A.REPORT),
    (S.FAILED, E.REPORTED): (S.IDLE, None),
}

# An update ends in one of these; it stays there (re-reporting on every power-on)
# until its report is acknowledged, then the record goes back to idle.
FINAL = frozenset({S.COMMITTED, S.ROLLED_BACK, S.FAILED})
RESTING = FINAL | {S.IDLE}
OUTCOMES = {S.COMMITTED: "committed", S.ROLLED_BACK: "rolled_back", S.FAILED: "failed"}


@dataclass(frozen=True, slots=True)
class UpdateRecord:
    """Everything the device must remember about an update across power cuts (small, typed, versioned)."""

    state: State = S.IDLE
    installed_version: str = ""  # the version of the committed slot
    security_floor: int = 0  # lowest security_version this device accepts (raised on commit)
    target_version: str = ""
    target_sha256: str = ""
    target_size: int = 0
    target_security_version: int = 0
    image_path: str = ""
    block_size: int = 64 * 1024
    target_slot: str = ""
    source_slot: str = ""
    store_count: int = 0  # transitions since the update started; breaks loops
    reason: str = ""
    format: int = RECORD_FORMAT

    @property
    def outcome(self) -> str | None:
        return OUTCOMES.get(self.state)

    def to_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> UpdateRecord:
        fmt = data.get("format")
        if fmt != RECORD_FORMAT:
            raise UpdateError(f"update record has format {fmt!r}; this agent reads format {RECORD_FORMAT}")
        names = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = set(data) - set(names)
        if unknown:
            raise UpdateError(f"update record has unknown fields {sorted(unknown)}")
        try:
            values = dict(data)
            values["state"] = State(values.get("state", S.IDLE))
            record = cls(**values)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise UpdateError(f"update record is malformed: {exc}") from exc
        for f in dataclasses.fields(cls):
            want = int if f.type == "int" else str if f.type == "str" else None
            if want is not None and type(getattr(record, f.name)) is not want:
                raise UpdateError(f"update record field {f.name!r} is not {f.type}: {getattr(record, f.name)!r}")
        return record


def step(
    record: UpdateRecord, event: Ev | str, *, reason: str = "", max_store_count: int = MAX_STORE_COUNT
) -> tuple[UpdateRecord, list[Action]]:
    """The next record and the actions to run once it is persisted. Pure.

    Raises ``UpdateError`` for an event the state does not handle.
    """
    ev = Ev(event)
    try:
        nxt, action = TABLE[(record.state, ev)]
    except KeyError:
        raise UpdateError(
            f"update to {record.target_version!r}: no transition from {record.state.value} on {ev.value}"
        ) from None
    count = 0 if ev in (E.START, E.REFUSED) else record.store_count + 1
    if nxt not in RESTING and count > max_store_count:
        nxt, action = TABLE[(record.state, E.FAILED)]
        reason = f"state looping detected: {count} transitions without reaching a final state"
    changes: dict[str, object] = {"state": nxt, "store_count": 0 if nxt is S.IDLE else count}
    if reason:
        changes["reason"] = reason
    elif ev in (E.START, E.REFUSED):
        changes["reason"] = ""
    if nxt is S.COMMITTED and record.state is not S.COMMITTED:
        changes["installed_version"] = record.target_version
        changes["security_floor"] = max(record.security_floor, record.target_security_version)
    return dataclasses.replace(record, **changes), [action] if action is not None else []
