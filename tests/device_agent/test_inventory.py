"""The device's inventory: read periodically, reported in the state stream only when it changed; the applied
config document; the bounded log tail the logs command sends."""

from __future__ import annotations

import logging
import random

from common.effects import Append, InventoryTaken, SetTimer, Start, TakeInventory, TimerFired
from common.memory_queue import MemoryQueue
from common.protocol import decode_sample
from common.streams import DEVICE_POLICIES
from device_agent.core import AgentCore
from device_agent.inventory import AppliedConfig, collect
from device_agent.logtail import LOG_KIND, LogTail


def make() -> AgentCore:
    buf = MemoryQueue("buf", streams=DEVICE_POLICIES).start()
    return AgentCore("dev-1", "site-1", buf, rng=random.Random(1), inventory_interval_s=60.0)


def test_inventory_is_read_at_start_and_every_interval() -> None:
    core = make()
    assert SetTimer("inventory", 100.0) in core.handle(Start(), 100.0)
    assert core.handle(TimerFired("inventory"), 100.0) == [TakeInventory(), SetTimer("inventory", 160.0)]


def test_inventory_is_reported_in_the_state_stream_only_on_change() -> None:
    core = make()
    first = core.handle(InventoryTaken({"model": "m1", "firmware_version": "1.0.0"}), 100.0)
    [append] = [e for e in first if isinstance(e, Append)]
    assert append.stream == "state"
    ts, kind, values = _decoded(append.payloads[0])
    assert (kind, values) == ("inventory", {"model": "m1", "firmware_version": "1.0.0"}) and ts == 100_000
    assert core.handle(InventoryTaken({"model": "m1", "firmware_version": "1.0.0"}), 160.0) == []
    changed = core.handle(InventoryTaken({"model": "m1", "firmware_version": "1.1.0"}), 220.0)
    assert [e.stream for e in changed if isinstance(e, Append)] == ["state"]


def _decoded(payload: bytes) -> tuple[int, str, dict]:
    r = decode_sample(1, payload)
    return r.ts_ms, r.kind, dict(r.values)


def test_collect_reports_what_the_device_is_and_the_config_it_applied(tmp_path) -> None:
    got = collect(tmp_path, model="board-x", hw_rev="r2", location="hall 3",
                  running=lambda: {"version": "1.2.0"}, slots=lambda: {"active": "A", "A": "1.2.0", "B": "empty"})
    assert got | {"os": "", "net.hostname": "", "storage_free_mb": 0} == got | {
        "model": "board-x", "hw": "r2", "location": "hall 3", "firmware_version": "1.2.0",
        "slot.active": "A", "slot.A": "1.2.0", "slot.B": "empty", "os": "", "net.hostname": "", "storage_free_mb": 0}
    assert "config_version" not in got
    assert AppliedConfig(tmp_path).apply({"_version": "v7", "location": '"hall 9"', "rate": "2"}) == (
        "done", "config v7 applied (2 keys)")
    again = collect(tmp_path, model="board-x", location="hall 3")
    assert again["config_version"] == "v7" and again["location"] == "hall 9"  # the config's location wins


def test_a_bad_config_command_changes_nothing(tmp_path) -> None:
    cfg = AppliedConfig(tmp_path)
    assert cfg.apply({"rate": "2"})[0] == "failed"
    assert cfg.apply({"_version": "v1", "rate": "{not json"})[0] == "failed"
    assert cfg.read() == {}


def test_the_log_tail_is_bounded_and_cut_to_what_a_record_holds() -> None:
    tail = LogTail(capacity=3, node="dev-1")
    logger = logging.getLogger("test.logtail")
    logger.addHandler(tail)
    logger.propagate = False
    try:
        for i in range(5):
            logger.warning("line %d %s", i, "x" * (400 if i == 4 else 0))
    finally:
        logger.removeHandler(tail)
    lines = tail.tail(10)
    assert [v["n"] for v in lines] == [0, 1, 2] and "line 2" in lines[0]["line"]
    assert all(len(v["line"]) <= 256 and "dev-1" in v["line"] for v in lines)
    assert [v["line"] for v in tail.tail(1)] == [lines[-1]["line"]] and LOG_KIND == "log"


def test_the_agent_stays_lean_with_inventory_and_diagnostics() -> None:
    import subprocess
    import sys

    code = ("import sys, device_agent.driver, device_agent.cli; "
            "print(sorted(m for m in ('fastapi', 'sqlalchemy', 'uvicorn', 'httpx', 'cloud') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
