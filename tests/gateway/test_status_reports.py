"""gateway.status.StatusReports on its own: the status numbers, their timer, the inventory reported on change."""

from common.effects import UPSTREAM, Send, SetTimer, TakeInventory
from common.memory_queue import MemoryQueue
from common.protocol import GatewayStatus, decode_record
from common.streams import GATEWAY_POLICIES
from gateway.status import STATUS_COUNTERS, StatusReports

COUNTERS = dict.fromkeys(STATUS_COUNTERS, 0) | {"records_in": 7}


def make(**kw) -> tuple[StatusReports, MemoryQueue]:
    outbox = MemoryQueue("outbox", streams=GATEWAY_POLICIES).start()
    return StatusReports("gw-1", outbox, **kw), outbox


def test_timers_follow_the_intervals():
    reports, _ = make(status_interval_s=5.0, inventory_interval_s=60.0)
    assert reports.timers(1.0) == [SetTimer("status", 6.0), SetTimer("inventory", 1.0)]
    assert make(status_interval_s=0.0)[0].timers(1.0) == []
    assert reports.inventory_due(2.0) == [TakeInventory(), SetTimer("inventory", 62.0)]


def test_status_counts_the_backlog_per_stream_and_the_counters():
    reports, outbox = make()
    outbox.append_many_sync([b"abc", b"de"], stream="bulk")
    values = reports.values(3.0, link_up=False, devices_connected=2, commands_held=1, counters=COUNTERS)
    assert values["link"] == "down" and values["devices_connected"] == 2 and values["commands_held"] == 1
    assert values["backlog.bulk.records"] == 2 and values["backlog.critical.records"] == 0
    assert values["records_in"] == 7 and values["disk.bytes"] == sum(values[f"backlog.{s}.bytes"] for s in ("critical", "state", "bulk"))
    assert reports.send(values, 3.0) == Send(UPSTREAM, GatewayStatus("gw-1", 3000, values))


def test_inventory_is_reported_only_when_it_changes():
    reports, _ = make(inventory_interval_s=60.0)
    (append,) = reports.inventory_taken({"os": "linux", "disk_free": 10}, 1.0)
    rec = decode_record(append.payloads[0])
    assert (rec.device_id, rec.kind, rec.values) == ("gw-1", "inventory", {"os": "linux", "disk_free": 10})
    assert reports.inventory_taken({"os": "linux", "disk_free": 10}, 61.0) == []
    assert len(reports.inventory_taken({"os": "linux", "disk_free": 9}, 121.0)) == 1
