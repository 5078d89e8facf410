"""One device, one rollout: the oldest active rollout holds it (``cloud.rollouts.conflicts``)."""

from __future__ import annotations

from cloud.rollouts.conflicts import holders


def test_the_oldest_active_rollout_holds_a_device():
    others = [{"id": "r1", "state": "running", "created_ms": 1, "devices": ["a", "b"]},
              {"id": "r0", "state": "completed", "created_ms": 0, "devices": ["c"]}]
    assert holders("r2", 5, others, ["a", "c", "d"]) == {"a": "r1"}
    assert holders("r0b", 0, others, ["a"]) == {}  # r0b is older than r1: it wins
