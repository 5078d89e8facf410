"""The alert inputs the fleet jobs give the running cloud, on a fake clock: ghost devices (silence read from
the store) fire and resolve; published releases make the firmware rule judge again."""

from __future__ import annotations

from tests.cloud.alerts.test_alert_service import RULES, Fleet, heartbeat

GHOST = {"type": "threshold", "name": "ghost_device", "metric": "ghost.silent_s", "op": ">", "threshold": 3600,
         "for_s": 0}


def test_a_ghost_fires_once_silent_past_the_threshold_and_resolves_when_heard_again() -> None:
    fleet = Fleet(rules=[GHOST])
    fleet.service.observe_silences({"d1": 1200.0, "d2": 30.0}, fleet.now)
    fleet.run(1)
    assert fleet.fired() == []
    fleet.service.observe_silences({"d1": 3601.0, "d2": 31.0}, fleet.now)
    fleet.run(1)
    assert fleet.fired() == [("ghost_device", "d1")]
    fleet.service.observe_silences({"d1": 2.0, "d2": 32.0}, fleet.now)
    fleet.run(1)
    assert fleet.resolved() == [("ghost_device", "d1")]


def test_a_ghost_in_maintenance_opens_nothing() -> None:
    fleet = Fleet(rules=[GHOST])
    fleet.service.set_maintenance({"d1"})
    fleet.service.observe_silences({"d1": 9999.0}, fleet.now)
    fleet.run(2)
    assert fleet.fired() == []


def test_published_releases_reach_the_firmware_rule_and_it_judges_known_devices_again() -> None:
    fleet = Fleet(rules=[r for r in RULES if r["type"] == "firmware"])
    fleet.run(1, lambda: heartbeat(fleet, "d1", kind="inventory", firmware_version="1.0.0"))
    assert fleet.fired() == []  # no release list yet: not judged
    fleet.service.set_releases(["1.0.0", "1.1.0"])
    fleet.run(1)
    assert fleet.fired() == []  # one behind, the rule wants two
    fleet.service.set_releases(["1.0.0", "1.1.0", "1.2.0", "not-a-version"])
    fleet.run(1)
    assert fleet.fired() == [("firmware_behind", "d1")]
    fleet.run(1, lambda: heartbeat(fleet, "d1", kind="inventory", firmware_version="1.2.0"))
    assert fleet.resolved() == [("firmware_behind", "d1")]


def test_the_cloud_config_ghost_after_s_is_the_ghost_rules_threshold() -> None:
    from cloud.alerts.service import AlertSettings
    from cloud.node_cli import _ghost_threshold

    settings = _ghost_threshold(AlertSettings(), 3600.0)
    assert [r.threshold for r in settings.rules if r.name == "ghost_device"] == [3600.0]
    assert [r.name for r in settings.rules] == [r.name for r in AlertSettings().rules]
