"""A gateway's own inventory: read periodically, reported (a critical report, sequence 0) only on change;
the cloud keeps it as the gateway's."""

from __future__ import annotations

import random

from cloud.store import Store
from common.effects import Append, InventoryTaken, SetTimer, Start, TakeInventory, TimerFired
from common.memory_queue import MemoryQueue
from common.protocol import decode_record
from common.streams import GATEWAY_POLICIES
from gateway.core import GatewayCore


def make(interval: float = 60.0) -> GatewayCore:
    outbox = MemoryQueue("outbox", streams=GATEWAY_POLICIES).start()
    return GatewayCore("gw-1", "site-1", outbox, rng=random.Random(1), inventory_interval_s=interval)


def test_the_gateway_reports_its_inventory_on_change_and_the_cloud_keeps_it(tmp_path) -> None:
    core = make()
    assert SetTimer("inventory", 10.0) in core.handle(Start(), 10.0)
    assert core.handle(TimerFired("inventory"), 10.0) == [TakeInventory(), SetTimer("inventory", 70.0)]
    [first] = core.handle(InventoryTaken({"role": "gateway", "os": "Linux 6.1"}), 10.0)
    assert isinstance(first, Append) and first.stream == "critical"
    assert core.handle(InventoryTaken({"role": "gateway", "os": "Linux 6.1"}), 70.0) == []
    [second] = core.handle(InventoryTaken({"role": "gateway", "os": "Linux 6.2"}), 130.0)
    records = [decode_record(p) for a in (first, second) for p in a.payloads]
    assert [(r.device_id, r.seq, r.kind) for r in records] == [("gw-1", 0, "inventory")] * 2
    with Store.open(f"sqlite:///{tmp_path / 'cloud.db'}") as store:
        result = store.telemetry.ingest("gw-1", "site-1", list(reversed(records)), 200_000)  # the newer one wins
        assert result.rejected == ()
        got = store.fleet.inventory()["gw-1"]
        assert (got["role"], got["attrs"]["os"]) == ("gateway", "Linux 6.2")


def test_no_interval_no_inventory() -> None:
    core = make(interval=0.0)
    assert not [e for e in core.handle(Start(), 0.0) if isinstance(e, SetTimer) and e.name == "inventory"]
