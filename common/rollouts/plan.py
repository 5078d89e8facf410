"""What a rollout is: a release, a target selector and a plan; and the pure decisions made from them.

Nothing here does I/O or reads a clock. ``RolloutPlan.from_dict`` validates an
operator's (or a stored, or a signed site plan's) JSON and raises
``RolloutError("invalid")`` naming the field; ``to_dict`` is its inverse.

Decisions:

- ``Threshold.parse("3")`` is a count, ``"20%"`` a share of the devices that
  finished; a share is judged only once ``min_sample`` devices finished.
- ``eligibility(device, release, plan)`` -> ``(ok, reason)``: hardware in the
  release's list (when the cloud knows the device's hardware; the device refuses
  a manifest for other hardware itself), the release's update module among those
  the device's inventory lists (when it reported them; the device refuses the
  others itself), not newer than the release (unless ``allow_downgrade``), the
  release's security version not below the device's floor (unless
  ``allow_below_floor``), not already on it.
- ``assign_stages(device_ids, plan)``: stage 0 is the canary (the devices in
  ``canary_group``, or the first ``canary`` of a seeded shuffle), then each wave
  takes its percent (or count) of the whole target, the last wave the rest.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from common.errors import RolloutError, VersionError
from common.firmware.version import Version

__all__ = ["DeviceInfo", "MetricRule", "ReleaseInfo", "RolloutPlan", "Selector", "Threshold", "assign_stages", "eligibility"]


@dataclass(frozen=True, slots=True)
class Threshold:
    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str | int, what: str) -> Threshold:
        raw = str(text).strip()
        try:
            if raw.endswith("%"):
                pct = float(raw[:-1])
                if not 0 <= pct <= 100:
                    raise ValueError
                return cls(percent=pct)
            n = int(raw)
            if n < 0:
                raise ValueError
            return cls(count=n)
        except ValueError:
            raise RolloutError(None, "invalid", f"{what} {text!r} is neither a count (3) nor a percent (20%)") from None

    def reached(self, hits: int, finished: int, min_sample: int) -> bool:
        if self.count is not None:
            return hits >= self.count
        if finished < max(1, min_sample):
            return False
        return 100.0 * hits / finished >= (self.percent or 0.0)

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else str(self.count)


@dataclass(frozen=True, slots=True)
class MetricRule:
    """``cpu < 90``: a device breaking it during its soak is unhealthy."""

    metric: str
    op: str
    limit: float

    @classmethod
    def parse(cls, text: str) -> MetricRule:
        for op in ("<=", ">=", "<", ">"):
            name, sep, value = text.partition(op)
            if sep:
                try:
                    return cls(name.strip(), op, float(value))
                except ValueError:
                    break
        raise RolloutError(None, "invalid", f"metric rule {text!r} does not parse: expected e.g. 'cpu < 90'")

    def holds(self, value: float) -> bool:
        return {"<": value < self.limit, "<=": value <= self.limit, ">": value > self.limit, ">=": value >= self.limit}[self.op]

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.limit:g}"


@dataclass(frozen=True, slots=True)
class Selector:
    """Which devices a rollout targets; an empty field matches everything."""

    sites: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # the device must carry every tag
    hardware: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()  # current versions
    devices: tuple[str, ...] = ()  # these devices only (what a target query or group named when the rollout was made)

    def matches(self, d: DeviceInfo) -> bool:
        return (
            (not self.devices or d.device_id in self.devices)
            and (not self.sites or d.site in self.sites)
            and (not self.groups or bool(set(self.groups) & set(d.groups)))
            and set(self.tags) <= set(d.tags)
            and (not self.hardware or d.hw in self.hardware)
            and (not self.versions or d.version in self.versions)
        )


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device_id: str
    site: str
    hw: str = ""
    version: str = ""
    security_floor: int = 0
    groups: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    state: str = "active"  # lifecycle (cloud.fleet.lifecycle): only active devices are updated
    update_modules: tuple[str, ...] | None = None  # what its inventory says it installs (None: not reported)


@dataclass(frozen=True, slots=True)
class ReleaseInfo:
    version: str
    hardware: tuple[str, ...] = ()  # empty: any
    security_version: int = 0
    module: str = "rootfs-image"  # the update module the manifest names


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    release: ReleaseInfo
    selector: Selector = field(default_factory=Selector)
    canary: int = 1  # devices, when no canary_group
    canary_group: str = ""  # a permanent canary group: its members form the canary stage
    waves: tuple[str, ...] = ("50%", "100%")  # each a percent or count of the target; the last takes the rest
    soak_s: float = 3600.0
    success: Threshold = field(default_factory=lambda: Threshold(percent=100.0))  # of a stage, to promote
    failure: Threshold = field(default_factory=lambda: Threshold(count=1))  # rollout-wide, to halt
    min_sample: int = 1
    on_failure: str = "pause"  # or "abort"
    max_installing_per_site: int = 10
    max_starts_per_minute: int = 1000
    windows: Mapping[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)  # site|"*" -> [(cron, s)]
    timezones: Mapping[str, str] = field(default_factory=dict)  # site|"*" -> IANA zone
    download_ahead: bool = True
    timeout_s: float = 1800.0
    max_retries: int = 2
    backoff_s: float = 60.0
    heartbeat_s: float = 60.0  # a device silent for 3 of these during its soak is unhealthy
    metric_rules: tuple[MetricRule, ...] = ()
    health_margin: float = 0.0  # updated devices may be this much (fraction) less healthy than the others
    allow_downgrade: bool = False
    allow_below_floor: bool = False
    local_failure: Threshold | None = None  # a site on its own halts at this (default: ``failure``)
    site_autonomy: bool = False  # gateways drive their sites from signed site plans (common.rollouts.siteplan)

    def __post_init__(self) -> None:
        if self.on_failure not in ("pause", "abort"):
            raise RolloutError(None, "invalid", f"on_failure {self.on_failure!r} must be 'pause' or 'abort'")
        for name in ("canary", "min_sample", "max_installing_per_site", "max_starts_per_minute", "max_retries"):
            if getattr(self, name) < (1 if name.startswith("max_i") or name.startswith("max_s") else 0):
                raise RolloutError(None, "invalid", f"{name} must not be {getattr(self, name)!r}")
        for name in ("soak_s", "timeout_s", "backoff_s", "heartbeat_s"):
            if not getattr(self, name) >= 0:
                raise RolloutError(None, "invalid", f"{name} must be a non-negative number of seconds")
        for w in self.waves:
            Threshold.parse(w, "wave")
        try:
            Version(self.release.version)
        except VersionError as exc:
            raise RolloutError(None, "invalid", str(exc)) from None

    # -- serialization ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["success"], d["failure"] = str(self.success), str(self.failure)
        d["local_failure"] = None if self.local_failure is None else str(self.local_failure)
        d["metric_rules"] = [str(r) for r in self.metric_rules]
        d["windows"] = {k: [list(w) for w in v] for k, v in self.windows.items()}
        d["timezones"] = dict(self.timezones)
        d["waves"] = list(self.waves)
        d["release"] = {**asdict(self.release), "hardware": list(self.release.hardware)}
        if self.release.module == "rootfs-image":
            del d["release"]["module"]  # absent means the default: plans made before the field stay the same
        d["selector"] = {k: list(v) for k, v in asdict(self.selector).items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RolloutPlan:
        try:
            rel = d["release"]
            release = ReleaseInfo(str(rel["version"]), tuple(rel.get("hardware") or ()), int(rel.get("security_version") or 0),
                                  str(rel.get("module") or "rootfs-image"))
            sel = Selector(**{k: tuple(v) for k, v in (d.get("selector") or {}).items()})
            kw: dict[str, Any] = {k: d[k] for k in _SCALARS if k in d and d[k] is not None}
            if "success" in d:
                kw["success"] = Threshold.parse(d["success"], "success threshold")
            if "failure" in d:
                kw["failure"] = Threshold.parse(d["failure"], "failure threshold")
            if d.get("local_failure") is not None:
                kw["local_failure"] = Threshold.parse(d["local_failure"], "local failure threshold")
            return cls(
                release=release,
                selector=sel,
                waves=tuple(str(w) for w in d.get("waves", ("50%", "100%"))),
                windows={k: tuple((str(c), float(s)) for c, s in v) for k, v in (d.get("windows") or {}).items()},
                timezones={str(k): str(v) for k, v in (d.get("timezones") or {}).items()},
                metric_rules=tuple(MetricRule.parse(r) for r in d.get("metric_rules") or ()),
                **kw,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RolloutError(None, "invalid", f"rollout plan does not parse: {exc!r}") from None

    def stage_names(self) -> list[str]:
        return ["canary", *(f"wave {i}" for i in range(1, len(self.waves) + 1))]


_SCALARS = (
    "canary", "canary_group", "soak_s", "min_sample", "on_failure", "max_installing_per_site", "max_starts_per_minute",
    "download_ahead", "timeout_s", "max_retries", "backoff_s", "heartbeat_s", "health_margin", "allow_downgrade",
    "allow_below_floor", "site_autonomy",
)


def eligibility(d: DeviceInfo, release: ReleaseInfo, plan: RolloutPlan) -> tuple[bool, str]:
    """``(True, "")`` or ``(False, reason)``: why this device is skipped."""
    if d.state != "active":  # cloud.fleet.lifecycle.eligible_for_rollout: maintenance, quarantined, retired, pending
        return False, f"device is {d.state} (only active devices are updated; edgefleet devices set-state)"
    if release.hardware and d.hw and d.hw not in release.hardware:  # unknown hardware: the device checks the manifest
        return False, f"hardware {d.hw or '?'!r} is not among the release's {', '.join(release.hardware)}"
    if d.update_modules is not None and release.module not in d.update_modules:  # not reported: the device refuses it
        return False, (f"the device does not install update module {release.module!r} "
                       f"(it installs {', '.join(d.update_modules) or 'none'})")
    if d.version:
        try:
            current = Version(d.version)
        except VersionError:
            return False, f"running version {d.version!r} does not parse"
        target = Version(release.version)
        if current == target:
            return False, f"already runs {d.version}"
        if current > target and not plan.allow_downgrade:
            return False, f"runs {d.version}, newer than {release.version} (allow_downgrade to go back)"
    if release.security_version < d.security_floor and not plan.allow_below_floor:
        return False, (f"release security version {release.security_version} is below the device's floor "
                       f"{d.security_floor} (allow_below_floor to force)")
    return True, ""


def assign_stages(devices: Iterable[DeviceInfo], plan: RolloutPlan, seed: str = "") -> dict[str, int]:
    """device id -> stage (0 = canary, 1.. = waves), deterministic for the same devices and seed."""
    devices = list(devices)
    ids = sorted(d.device_id for d in devices)
    groups = {d.device_id: d.groups for d in devices}
    order = ids[:]
    random.Random(seed).shuffle(order)
    if plan.canary_group:
        canary = [i for i in order if plan.canary_group in groups.get(i, ())]
    else:
        canary = order[: min(plan.canary, len(order))]
    out = {i: 0 for i in canary}
    rest = [i for i in order if i not in out]
    total = len(ids)
    placed = len(canary)
    for n, wave in enumerate(plan.waves, 1):
        t = Threshold.parse(wave, "wave")
        want = total if n == len(plan.waves) else (t.count if t.count is not None else round(total * (t.percent or 0) / 100))
        take = max(0, want - placed)
        for i in rest[:take]:
            out[i] = n
        rest = rest[take:]
        placed += take
    for i in rest:
        out[i] = len(plan.waves)
    return out
