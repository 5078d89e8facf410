"""Rollouts: which devices get a release, when, and when to stop (issue #6), shared by cloud and gateway.

``states`` (the two state tables), ``plan`` (the plan and its pure decisions), ``windows``
(maintenance windows per site), ``events`` (the engine's inputs, outputs and device record),
``engine`` (the sans-IO engine), ``siteplan`` (the signed part a gateway gets and runs).
The cloud runs the engine for the whole fleet (``cloud.rollouts.service``), a gateway for its
site from a verified site plan (``gateway.site_rollouts``): the same code and gates on both tiers.
"""

from common.rollouts.engine import RolloutEngine
from common.rollouts.events import (
    Approve,
    Control,
    DeviceHealth,
    DeviceRecord,
    DeviceReport,
    DeviceSeen,
    Install,
    Persist,
    Revert,
    Tick,
)
from common.rollouts.plan import DeviceInfo, MetricRule, ReleaseInfo, RolloutPlan, Selector, Threshold
from common.rollouts.states import DeviceEvent, DeviceState, RolloutEvent, RolloutState

__all__ = [
    "Approve", "Control", "DeviceEvent", "DeviceHealth", "DeviceInfo", "DeviceRecord", "DeviceReport", "DeviceSeen",
    "DeviceState", "Install", "MetricRule", "Persist", "ReleaseInfo", "Revert", "RolloutEngine", "RolloutEvent",
    "RolloutPlan", "RolloutState", "Selector", "Threshold", "Tick",
]
