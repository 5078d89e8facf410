"""The rollout engine's inputs and outputs, and the device record it keeps: small typed records, no logic.

Events (``RolloutEngine.handle`` takes one): ``Tick``, ``DeviceSeen``, ``DeviceReport``, ``DeviceHealth``,
``Control``, ``Approve`` (to a site engine). Effects (it returns a list, in order): ``Persist`` first,
then ``Install``, ``Revert`` and ``Approve`` (from a coordinator). ``DeviceRecord`` is one targeted
device as the engine keeps it, and as ``Persist`` hands it to storage (``to_dict``/``from_dict``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.rollouts.plan import DeviceInfo
from common.rollouts.states import DeviceEvent, DeviceState

__all__ = [
    "Approve", "Control", "DeviceHealth", "DeviceRecord", "DeviceReport", "DeviceSeen", "Install", "Persist",
    "Revert", "Tick",
]

_D = DeviceState


# -- events ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed; the driver ticks every second or so (the simulation at its own pace)."""


@dataclass(frozen=True, slots=True)
class DeviceSeen:
    """A device in the inventory (at start, and any that joins later: continuous targeting)."""

    info: DeviceInfo
    held_by: str = ""  # another active rollout that owns this device (see ``cloud.rollouts.conflicts`` in the cloud)


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """What a device (or a site, for the coordinator) says happened: downloaded, trial, commit, rollback, fail."""

    device_id: str
    event: DeviceEvent
    reason: str = ""
    state: DeviceState | None = None  # a site's report carries the state it reached


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    """``heartbeat``, ``reboot`` (unexpected: not during its install) or ``metrics`` ({name: value})."""

    device_id: str
    kind: str
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Control:
    """``start`` (``at_ms``: scheduled), ``pause``, ``resume``, ``abort`` (``revert``: send updated devices back)."""

    action: str
    at_ms: int = 0
    revert: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Approve:
    """As an event (to a site engine): stages up to ``stage`` may start. As an effect: the coordinator approved it."""

    stage: int


# -- effects ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Install:
    """Install the release on one device (``download_only``: fetch and verify, do not install yet).

    The one place a rollout touches a device: the driver turns it into the ``update``
    command. ``not_after_ms`` is when the maintenance window closes: an install that
    has not started by then must not start (the command expires)."""

    device_id: str
    site: str
    version: str
    download_only: bool
    not_after_ms: int


@dataclass(frozen=True, slots=True)
class Revert:
    """Send the device back to the release it ran before this rollout."""

    device_id: str
    site: str


@dataclass(frozen=True, slots=True)
class Persist:
    """Save before acting: the rollout's header and the device records that changed."""

    rollout: dict[str, Any]
    devices: list[dict[str, Any]]


@dataclass
class DeviceRecord:
    device_id: str
    site: str
    stage: int
    state: DeviceState = _D.PENDING
    reason: str = ""
    attempts: int = 0
    not_before_ms: int = 0
    deadline_ms: int = 0
    started_ms: int = 0  # the last install began (window check)
    finished_ms: int = 0  # committed (its soak runs from here)
    updated: bool = False  # this rollout installed the release on it
    unhealthy: str = ""  # seen unhealthy after this rollout updated it
    unhealthy_before: str = ""  # seen unhealthy before (the fleet's background rate)
    last_seen_ms: int = 0
    exhausted: bool = False  # failed or timed out with no retries left
    reverted: bool = False  # sent back to its previous release on abort

    def to_dict(self) -> dict[str, Any]:
        d = {f: getattr(self, f) for f in _RECORD_FIELDS}
        d["state"] = self.state.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeviceRecord:
        return cls(**{**d, "state": DeviceState(d["state"])})


_RECORD_FIELDS = tuple(DeviceRecord.__dataclass_fields__)
