"""The update core: sans-IO. Events in, effects out; the table in ``states`` decides.

    core = UpdateCore("dev-1", hw="rpi4")
    effects = core.handle(PowerOn(record_or_None, booted="A", running_version="1.0"), now)
    effects = core.handle(StartUpdate(manifest, "/data/fw-1.1.img"), now)

Every step's first effect is ``PersistRecord``: the driver makes the record
durable before it runs the effects after it. Effects with a ``token`` are
answered by the driver with ``ActionDone``/``ActionFailed`` (``HealthDone`` or
``HealthTimedOut`` for ``RunHealth``, ``Reported`` for ``Report``); an answer
whose token is not the current record's ``store_count`` is stale and ignored.

Power-on also re-confirms the running slot when it is not on trial (RAUC's
bootchooser schemes need the running slot marked good on every boot), and
makes the bootloader agree with a final record (a failed update's slot is never
left running). When the committed slot is not the one running (GRUB gives a slot
one try a boot: a power cut before its mark-good falls back), it confirms the
committed slot again, so the next boot returns to the committed image.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from common.effects import Log
from common.errors import UpdateError, UpdateRefused, VersionError
from common.firmware.version import Version
from device_agent.update.plan import Manifest, plan_install
from device_agent.update.states import (
    FINAL,
    MAX_STORE_COUNT,
    TABLE,
    Action,
    Ev,
    State,
    UpdateRecord,
    step,
)

__all__ = [
    "ActionDone",
    "ActionFailed",
    "Arm",
    "Commit",
    "Confirm",
    "FetchImage",
    "HealthDone",
    "HealthTimedOut",
    "Install",
    "ManifestRejected",
    "MarkBad",
    "PersistRecord",
    "PowerOn",
    "Reboot",
    "Report",
    "Reported",
    "RollBack",
    "RunHealth",
    "StartUpdate",
    "UpdateCore",
    "UpdateReport",
    "VerifyImage",
]

# -- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PowerOn:
    """The device booted: the persisted record (None: never saved), the slot running and its version."""

    record: UpdateRecord | None
    booted: str
    running_version: str


@dataclass(frozen=True, slots=True)
class StartUpdate:
    """Install a verified manifest's image; ``allow_downgrade`` only from a signed allowance."""

    manifest: Manifest
    image_path: str
    allow_downgrade: bool = False


@dataclass(frozen=True, slots=True)
class ManifestRejected:
    """A manifest that failed verification before planning (unsigned, expired: ``ManifestError``), to report."""

    version: str
    reason: str


@dataclass(frozen=True, slots=True)
class ActionDone:
    token: int


@dataclass(frozen=True, slots=True)
class ActionFailed:
    token: int
    reason: str


@dataclass(frozen=True, slots=True)
class HealthDone:
    token: int
    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class HealthTimedOut:
    token: int


@dataclass(frozen=True, slots=True)
class Reported:
    token: int


UpdateEvent = (
    PowerOn | StartUpdate | ManifestRejected | ActionDone | ActionFailed | HealthDone | HealthTimedOut | Reported
)

# -- effects -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpdateReport:
    """An update's outcome, for upstream: committed, rolled_back or failed, with the reason."""

    device: str
    version: str
    outcome: str
    reason: str
    running_version: str


@dataclass(frozen=True, slots=True)
class PersistRecord:
    record: UpdateRecord


@dataclass(frozen=True, slots=True)
class FetchImage:
    token: int
    image_path: str
    size: int


@dataclass(frozen=True, slots=True)
class VerifyImage:
    token: int
    image_path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Install:
    """Mark ``slot`` bad, write the image into it, read it back and check ``sha256``."""

    token: int
    slot: str
    image_path: str
    size: int
    sha256: str
    block_size: int


@dataclass(frozen=True, slots=True)
class Arm:
    token: int
    slot: str


@dataclass(frozen=True, slots=True)
class Commit:
    token: int
    slot: str


@dataclass(frozen=True, slots=True)
class RollBack:
    """Mark ``slot`` bad and reboot into the other one."""

    token: int
    slot: str


@dataclass(frozen=True, slots=True)
class RunHealth:
    token: int
    version: str
    timeout_s: float
    deadline: float


@dataclass(frozen=True, slots=True)
class Report:
    token: int
    report: UpdateReport


@dataclass(frozen=True, slots=True)
class Confirm:
    """Mark a slot good again: the running one, or a committed one the bootloader fell back from (not answered;
    a failure is logged)."""

    slot: str


@dataclass(frozen=True, slots=True)
class MarkBad:
    """Mark a slot bad (not answered; a failure is logged)."""

    slot: str


@dataclass(frozen=True, slots=True)
class Reboot:
    """Reboot the device; nothing after it in the list runs."""


UpdateEffect = (
    PersistRecord | FetchImage | VerifyImage | Install | Arm | Commit | RollBack | RunHealth | Report
    | Confirm | MarkBad | Reboot | Log
)

# -- the core ----------------------------------------------------------------------------


class UpdateCore:
    def __init__(
        self,
        device_id: str,
        hw: str,
        *,
        health_timeout_s: float = 120.0,
        max_store_count: int = MAX_STORE_COUNT,
        slots: tuple[str, ...] = ("A", "B"),
    ) -> None:
        self.device_id = device_id
        self.hw = hw
        self.health_timeout_s = health_timeout_s
        self.max_store_count = max_store_count
        self.slots = slots
        self.record = UpdateRecord()
        self.booted = ""  # the slot running, known from PowerOn

    @property
    def state(self) -> State:
        return self.record.state

    def handle(self, event: UpdateEvent, now: float) -> list[UpdateEffect]:
        match event:
            case PowerOn(record, booted, running_version):
                return self._power_on(record, booted, running_version, now)
            case StartUpdate(manifest, image_path, allow_downgrade):
                return self._start(manifest, image_path, allow_downgrade, now)
            case ManifestRejected(version, reason):
                self._check_idle(version)
                self.record = replace(self.record, target_version=version, target_slot="", source_slot=self.booted)
                return self._step(Ev.REFUSED, now, reason=reason)
            case ActionDone(token) if token == self.record.store_count:
                return self._step(Ev.DONE, now)
            case ActionFailed(token, reason) if token == self.record.store_count:
                return self._step(Ev.FAILED, now, reason=reason)
            case HealthDone(token, ok, reason) if token == self.record.store_count:
                return self._step(Ev.HEALTH_OK if ok else Ev.HEALTH_FAILED, now, reason=reason)
            case HealthTimedOut(token) if token == self.record.store_count:
                return self._step(
                    Ev.TIMEOUT, now, reason=f"health check did not finish within {self.health_timeout_s:g} s"
                )
            case Reported(token) if token == self.record.store_count:
                return self._step(Ev.REPORTED, now)
        return [Log("debug", "stale update event ignored", {"event": type(event).__name__, "state": self.state.value})]

    # -- power-on ---------------------------------------------------------------------------

    def _power_on(
        self, record: UpdateRecord | None, booted: str, running_version: str, now: float
    ) -> list[UpdateEffect]:
        self.booted = booted
        if record is None:
            record = UpdateRecord(installed_version=running_version)
        out: list[UpdateEffect] = []
        drifted = (record.state is State.IDLE and running_version != record.installed_version
                   and _parses(running_version))
        if drifted and _fell_back_from_commit(record, booted):
            # the committed slot booted, then a power cut before its mark-good made GRUB (one try a boot) fall back
            # here: the committed slot is still good, so confirm it again and the next boot returns to it
            out.append(Log("warning", "the committed slot fell back; confirmed it again for the next boot",
                           {"committed": record.target_slot, "version": record.installed_version,
                            "booted": booted, "running": running_version}))
            out.append(Confirm(record.target_slot))
        elif drifted:
            # not what the record says, and no commit to return to (GRUB gives a slot one try: a power cut between
            # a boot and its mark-good boots the other slot); the next update starts from what runs
            out.append(Log("warning", "running version is not the installed one",
                           {"running": running_version, "record": record.installed_version, "slot": booted}))
            record = replace(record, installed_version=running_version)
        self.record = record
        state, target = record.state, record.target_slot
        if state is State.IDLE or booted != target:
            # not the slot under test: keep it bootable (RAUC's schemes want mark-good on every boot)
            if state is State.COMMITTED:
                out.append(Log("error", "committed slot did not boot", {"slot": target, "booted": booted}))
            out.append(Confirm(booted))
        elif state is State.COMMITTED:
            out.append(Confirm(booted))
        elif state in FINAL:
            # the slot this update gave up on is running: never leave it so
            return [*out, *self._step(Ev.POWER_ON, now), MarkBad(target), Reboot()]
        return out + self._step(Ev.POWER_ON, now)

    # -- start ------------------------------------------------------------------------------

    def _check_idle(self, version: str) -> None:
        r = self.record
        if r.state is not State.IDLE:
            raise UpdateError(
                f"update to {version!r} cannot start: update to {r.target_version!r} is {r.state.value}"
            )

    def _start(self, manifest: Manifest, image_path: str, allow_downgrade: bool, now: float) -> list[UpdateEffect]:
        self._check_idle(manifest.version)
        r = self.record
        try:
            plan = plan_install(
                manifest,
                image_path,
                device_hw=self.hw,
                installed_version=r.installed_version,
                security_floor=r.security_floor,
                active_slot=self.booted,
                allow_downgrade=allow_downgrade,
                slots=self.slots,
            )
        except UpdateRefused as exc:
            self.record = replace(
                r, target_version=manifest.version, target_slot="", source_slot=self.booted, image_path=image_path
            )
            return self._step(Ev.REFUSED, now, reason=str(exc))
        self.record = replace(
            r,
            target_version=plan.version,
            target_sha256=plan.sha256,
            target_size=plan.size,
            target_security_version=plan.security_version,
            image_path=plan.image_path,
            block_size=plan.block_size,
            target_slot=plan.target_slot,
            source_slot=plan.source_slot,
        )
        return self._step(Ev.START, now)

    # -- stepping ---------------------------------------------------------------------------

    def _step(self, event: Ev, now: float, *, reason: str = "") -> list[UpdateEffect]:
        before = self.record.state
        if (before, event) not in TABLE:  # an answer the state does not expect (a confused driver)
            return [Log("warning", "update event not expected", {"state": before.value, "event": event.value})]
        self.record, actions = step(self.record, event, reason=reason, max_store_count=self.max_store_count)
        r = self.record
        out: list[UpdateEffect] = [PersistRecord(r)]
        if r.state is not before:
            out.append(Log("info", "update state", {"from": before.value, "to": r.state.value, "event": event.value,
                                                     "version": r.target_version, "reason": r.reason}))
        for action in actions:
            out += self._act(action, now)
        return out

    def _act(self, action: Action, now: float) -> list[UpdateEffect]:
        r, t = self.record, self.record.store_count
        match action:
            case Action.DOWNLOAD:
                return [FetchImage(t, r.image_path, r.target_size)]
            case Action.VERIFY_IMAGE:
                return [VerifyImage(t, r.image_path, r.target_size, r.target_sha256)]
            case Action.INSTALL:
                return [Install(t, r.target_slot, r.image_path, r.target_size, r.target_sha256, r.block_size)]
            case Action.ARM:
                return [Arm(t, r.target_slot)]
            case Action.REBOOT:
                return [Reboot()]
            case Action.CHECK_BOOT:
                if self.booted == r.target_slot:
                    return self._step(Ev.BOOTED_NEW, now)
                reason = "" if r.state is State.ROLLING_BACK else (
                    f"slot {r.target_slot} was not confirmed within its boot limit; "
                    f"the bootloader fell back to slot {self.booted}"
                )
                return self._step(Ev.BOOTED_OLD, now, reason=reason)
            case Action.RUN_HEALTH:
                return [RunHealth(t, r.target_version, self.health_timeout_s, now + self.health_timeout_s)]
            case Action.COMMIT:
                return [Commit(t, r.target_slot)]
            case Action.ROLLBACK:
                return [RollBack(t, r.target_slot)]
            case Action.ABANDON:
                out: list[UpdateEffect] = [MarkBad(r.target_slot)] if r.target_slot else []
                out.append(Report(t, self.report()))
                if self.booted == r.target_slot:
                    out.append(Reboot())
                return out
            case Action.REPORT:
                return [Report(t, self.report())]
        raise AssertionError(f"unhandled update action {action!r}")

    def report(self) -> UpdateReport:
        """The outcome of the update in the record (which must be final)."""
        r = self.record
        if r.outcome is None:
            raise UpdateError(f"update to {r.target_version!r} has no outcome yet: it is {r.state.value}")
        return UpdateReport(self.device_id, r.target_version, r.outcome, r.reason, r.installed_version)


def _fell_back_from_commit(record: UpdateRecord, booted: str) -> bool:
    """An idle record whose last update was committed to a slot that is not the one running."""
    return bool(record.target_slot) and booted != record.target_slot and (
        record.installed_version == record.target_version != "")


def _parses(version: str) -> bool:
    try:
        Version(version)
    except VersionError:
        return False
    return True
