"""Rollouts: which devices get a release, when, and when to stop (issue #6).

``states`` (the two state tables), ``plan`` (the plan and its pure decisions),
``windows`` (maintenance windows per site), ``engine`` (the sans-IO engine),
``conflicts`` (one device, one rollout), ``siteplan`` (the signed part a gateway gets).
"""

from cloud.rollouts.engine import (
    Approve,
    Control,
    DeviceHealth,
    DeviceRecord,
    DeviceReport,
    DeviceSeen,
    Install,
    Persist,
    Revert,
    RolloutEngine,
    Tick,
)
from cloud.rollouts.plan import DeviceInfo, MetricRule, ReleaseInfo, RolloutPlan, Selector, Threshold
from cloud.rollouts.states import DeviceEvent, DeviceState, RolloutEvent, RolloutState

__all__ = [
    "Approve", "Control", "DeviceEvent", "DeviceHealth", "DeviceInfo", "DeviceRecord", "DeviceReport", "DeviceSeen",
    "DeviceState", "Install", "MetricRule", "Persist", "ReleaseInfo", "Revert", "RolloutEngine", "RolloutEvent",
    "RolloutPlan", "RolloutState", "Selector", "Threshold", "Tick",
]
