"""The alert rules: one small frozen record per kind, checked when built, and ``parse_rules`` for config tables.

    OfflineRule     a subject not seen for longer than after_s
    ThresholdRule   a metric's latest value OP threshold for for_s
    FirmwareRule    firmware behind the newest release by >= behind
    BacklogRule     a gateway's backlog above percent of its quota
    RateRule        a device's messages in the last window vs the mean of its previous baseline_windows

``common.alerting.AlertEngine`` evaluates them (and re-exports these names). A bad rule raises
``ConfigError`` naming the rule and the field.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from common.errors import ConfigError

__all__ = ["BacklogRule", "FirmwareRule", "OfflineRule", "RateRule", "Rule", "ThresholdRule", "parse_rules"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def _positive(rule: str, name: str, value: float, *, zero_ok: bool = False) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not (value >= 0 if zero_ok else value > 0):
        bound = ">= 0" if zero_ok else "> 0"
        raise ConfigError(f"alert rule {rule!r}: {name} must be a number {bound}, got {value!r}")


def _named(name: str) -> None:
    if not isinstance(name, str) or not name or ":" in name:
        raise ConfigError(f"alert rule name {name!r} must be a non-empty string without ':'")


@dataclass(frozen=True)
class OfflineRule:
    name: str
    after_s: float
    kind: str = "device"  # which subjects: those observed with observe_seen(..., kind=kind)
    severity: str = "warning"
    type = "offline"

    def __post_init__(self) -> None:
        _named(self.name)
        _positive(self.name, "after_s", self.after_s)


@dataclass(frozen=True)
class ThresholdRule:
    name: str
    metric: str
    op: str  # < <= > >= == !=
    threshold: float
    for_s: float = 0
    severity: str = "warning"
    type = "threshold"

    def __post_init__(self) -> None:
        _named(self.name)
        if self.op not in _OPS:
            raise ConfigError(f"alert rule {self.name!r}: op {self.op!r} is not one of {' '.join(_OPS)}")
        _positive(self.name, "for_s", self.for_s, zero_ok=True)
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise ConfigError(f"alert rule {self.name!r}: threshold must be a number, got {self.threshold!r}")


@dataclass(frozen=True)
class FirmwareRule:
    name: str
    behind: int  # fire when this many or more releases are newer than the device's
    severity: str = "warning"
    type = "firmware"

    def __post_init__(self) -> None:
        _named(self.name)
        if not isinstance(self.behind, int) or isinstance(self.behind, bool) or self.behind < 1:
            raise ConfigError(f"alert rule {self.name!r}: behind must be an integer >= 1, got {self.behind!r}")


@dataclass(frozen=True)
class BacklogRule:
    name: str
    percent: float  # fire when used / quota is above this percentage
    for_s: float = 0
    severity: str = "warning"
    type = "backlog"

    def __post_init__(self) -> None:
        _named(self.name)
        _positive(self.name, "percent", self.percent)
        _positive(self.name, "for_s", self.for_s, zero_ok=True)


@dataclass(frozen=True)
class RateRule:
    name: str
    window_s: float
    factor: float  # fire when the last window's count is > mean * factor or < mean / factor
    baseline_windows: int = 6
    min_baseline: int = 10  # judge only when the baseline windows hold at least this many messages
    direction: str = "both"  # "high", "low" or "both"
    severity: str = "warning"
    type = "rate"

    def __post_init__(self) -> None:
        _named(self.name)
        _positive(self.name, "window_s", self.window_s)
        if isinstance(self.factor, bool) or not isinstance(self.factor, (int, float)) or not self.factor > 1:
            raise ConfigError(f"alert rule {self.name!r}: factor must be a number > 1, got {self.factor!r}")
        if not isinstance(self.baseline_windows, int) or self.baseline_windows < 1:
            raise ConfigError(f"alert rule {self.name!r}: baseline_windows must be an integer >= 1")
        if not isinstance(self.min_baseline, int) or self.min_baseline < 1:
            raise ConfigError(f"alert rule {self.name!r}: min_baseline must be an integer >= 1")
        if self.direction not in ("high", "low", "both"):
            raise ConfigError(f"alert rule {self.name!r}: direction must be high, low or both")

    @property
    def window_ms(self) -> int:
        return max(1, round(self.window_s * 1000))


Rule = Union[OfflineRule, ThresholdRule, FirmwareRule, BacklogRule, RateRule]
_RULE_TYPES: dict[str, Any] = {
    cls.type: cls for cls in (OfflineRule, ThresholdRule, FirmwareRule, BacklogRule, RateRule)
}


def parse_rules(items: Iterable[Mapping[str, Any]]) -> list[Rule]:
    """Rules from config tables: ``{"type": "threshold", "name": "battery_low", "metric": ..., ...}``."""
    rules: list[Rule] = []
    for item in items:
        fields = dict(item)
        kind = fields.pop("type", None)
        if kind not in _RULE_TYPES:
            known = ", ".join(_RULE_TYPES)
            raise ConfigError(f"alert rule {fields.get('name')!r}: type {kind!r} is not one of {known}")
        try:
            rules.append(_RULE_TYPES[kind](**fields))
        except TypeError as exc:
            raise ConfigError(f"alert rule {fields.get('name')!r} ({kind}): {exc}") from exc
    return rules
