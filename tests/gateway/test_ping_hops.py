"""A ping's answer carries the gateway's own times (held, answered), so the operator sees each hop."""

from __future__ import annotations

from cloud.cli.fleet import _hops
from common.effects import UPSTREAM, Append, Persisted, Received
from common.protocol import Command, CommandAck, decode_record
from tests.gateway.test_gateway_core import PEER, cloud_up, hello, make


def test_the_gateway_stamps_when_it_held_a_ping_and_when_the_device_answered() -> None:
    core, _ = make()
    cloud_up(core)
    cmd = Command("dev-1", 3, "ping", {}, 10_000_000)
    (append,) = core.handle(Received(UPSTREAM, cmd), 1.0)
    core.handle(Persisted(append.token, core.commands_queue.append_many_sync(append.payloads)), 1.1)
    hello(core, 2.0)
    effects = core.handle(Received(PEER, CommandAck("dev-1", 3, "done", "pong device_ms=2050")), 2.2)
    (report,) = [e for e in effects if isinstance(e, Append)]
    detail = decode_record(report.payloads[0]).values["detail"]
    assert detail == "pong device_ms=2050 gateway_held_ms=1100 gateway_done_ms=2200"


def test_other_commands_keep_the_devices_detail() -> None:
    core, _ = make()
    cloud_up(core)
    cmd = Command("dev-1", 4, "echo", {}, 10_000_000)
    (append,) = core.handle(Received(UPSTREAM, cmd), 1.0)
    core.handle(Persisted(append.token, core.commands_queue.append_many_sync(append.payloads)), 1.1)
    hello(core, 2.0)
    effects = core.handle(Received(PEER, CommandAck("dev-1", 4, "done", "{}")), 2.2)
    (report,) = [e for e in effects if isinstance(e, Append)]
    assert decode_record(report.payloads[0]).values["detail"] == "{}"


def test_hops_are_the_differences_of_the_stamps_in_order() -> None:
    row = {"created_ms": 1000, "updated_ms": 2400,
           "detail": "pong device_ms=2050 gateway_held_ms=1100 gateway_done_ms=2200"}
    assert _hops(row) == {"total_ms": 1400, "cloud_to_gateway_ms": 100, "gateway_to_device_ms": 950,
                          "device_to_gateway_ms": 150, "gateway_to_cloud_ms": 200}
    assert _hops({"created_ms": 1000, "updated_ms": 2400, "detail": "pong device_ms=2050"}) == {
        "total_ms": 1400, "cloud_to_device_ms": 1050, "device_to_cloud_ms": 350}
