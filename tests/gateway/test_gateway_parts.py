"""How the gateway core is put together: parts with public interfaces, a core that only dispatches, and an
ack path on which no record is decoded (observers read the records the codec checked)."""

from __future__ import annotations

import ast
import importlib
import random
from pathlib import Path

import pytest

import common.protocol.codec as codec
from common.alerting import AlertEngine
from common.key_binding import KeyBindings
from common.effects import Append, Persisted, Received, Start, TimerFired
from common.memory_queue import MemoryQueue
from common.protocol import Hello, TelemetryBatch, TelemetryRecord, encode
from common.streams import GATEWAY_POLICIES
from gateway.command_relay import CommandRelay
from gateway.core import GatewayCore
from gateway.rollout_effects import DeviceOutcome
from gateway.rollout_relay import RolloutRelay
from gateway.sessions import DeviceSessions
from gateway.site_alerts import SiteAlerts, site_rules
from gateway.status import StatusReports
from gateway.uplink_drain import UplinkDrain

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
PEER = "aa01"
RULES = [{"type": "threshold", "name": "battery_low", "metric": "battery_percent", "op": "<", "threshold": 15, "for_s": 2},
         {"type": "rate", "name": "message_rate", "window_s": 10, "factor": 4}]


def test_no_gateway_module_reaches_into_another_ones_private_names() -> None:
    found = []
    for path in sorted(GATEWAY.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
            if isinstance(node, ast.ImportFrom) and any(a.name.startswith("_") for a in node.names):
                found.append(f"{path.name}:{node.lineno}: from {node.module} import a private name")
    assert found == []


@pytest.mark.parametrize("module", ["command_relay", "core", "ports", "reports", "rollout_relay", "sessions", "status",
                                    "uplink_drain"])
def test_each_part_names_its_public_interface(module: str) -> None:
    mod = importlib.import_module(f"gateway.{module}")
    assert mod.__all__ and all(hasattr(mod, name) for name in mod.__all__)
    assert all(not name.startswith("_") for name in mod.__all__)


def test_the_core_holds_its_parts_and_nothing_else_with_state() -> None:
    core = GatewayCore("gw-1", "site-1", MemoryQueue("o", streams=GATEWAY_POLICIES).start(), rng=random.Random(1),
                       site_alerts=SiteAlerts("gw-1", site_rules()))
    parts = {k: type(v) for k, v in vars(core).items() if not isinstance(v, (str, int, float, type(None)))}
    assert parts == {"downstream": DeviceSessions, "drain": UplinkDrain, "commands": CommandRelay, "bindings": KeyBindings,
                     "rollouts": RolloutRelay, "site_alerts": SiteAlerts, "reports": StatusReports}


def test_only_the_outbox_drop_hook_decodes_records() -> None:
    users = sorted(p.name for p in GATEWAY.glob("*.py") if "decode_record" in p.read_text())
    assert users == ["reports.py"]  # gap_reports: records dropped by the outbox, off the ack path


def frames(seq0: int, n: int, stream: str, kind: str, values: dict) -> object:
    recs = [TelemetryRecord(s, 1000 + s, kind, values) for s in range(seq0, seq0 + n)]
    return codec.decode_forwarding(encode(TelemetryBatch("dev-1", stream, seq0 - 1, recs)))


def test_site_alerts_and_rollout_outcomes_on_a_down_link_decode_no_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """The frames are cut by the codec (as the real socket does) before decoding is made to fail: the core,
    with site alerts and site rollouts on and the cloud unreachable, still acks, alerts and reports outcomes."""
    batches = [frames(1 + 5 * i, 5, "bulk", "metrics", {"battery_percent": 9.0, "temp_c": 20.0}) for i in range(6)]
    update = frames(1, 1, "critical", "update", {"outcome": "committed", "version": "2.0"})

    def refuse(*_: object, **__: object) -> object:
        raise AssertionError("a record was decoded on the ack path")

    monkeypatch.setattr(codec, "_unpack", refuse)
    outbox = MemoryQueue("outbox", streams=GATEWAY_POLICIES).start()
    core = GatewayCore("gw-1", "site-1", outbox, rng=random.Random(2), site_rollouts=True,
                       site_alerts=SiteAlerts("gw-1", site_rules(RULES)))
    core.handle(Start(), 0.0)
    core.handle(Received(PEER, Hello("dev-1", "device", "site-1", 1, 1)), 0.0)
    alerts, outcomes = [], []
    for i, msg in enumerate([*batches, update]):
        now = 1.0 + i
        for e in core.handle(Received(PEER, msg), now):
            if isinstance(e, Append):
                core.handle(Persisted(e.token, outbox.append_many_sync(e.payloads, stream=e.stream)), now)
            outcomes += [e for e in [e] if isinstance(e, DeviceOutcome)]
        alerts += [e for e in core.handle(TimerFired("heartbeat"), now) if isinstance(e, Append)]
    assert [a.token for a in alerts] == [("report", "alert")]  # battery_low, fired at the site
    assert outcomes == [DeviceOutcome("dev-1", {"outcome": "committed", "version": "2.0"})]
    assert core.counters["records_in"] == 31


class Recording(AlertEngine):
    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.metric_calls: list[tuple[str, str, float]] = []

    def observe_metric(self, device: str, metric: str, value: float, now_ms: int) -> None:
        self.metric_calls.append((device, metric, value))
        super().observe_metric(device, metric, value, now_ms)


def test_site_alerts_read_only_the_metrics_their_rules_name_and_only_while_the_link_is_down() -> None:
    site = SiteAlerts("gw-1", site_rules(RULES))
    site.engine = engine = Recording(site_rules(RULES))
    records = [[1, 1, "metrics", {"temp_c": 20.0, "battery_percent": 50.0}], [2, 2, "state", {"battery_percent": 1.0}],
               [3, 3, "metrics", {"temp_c": 21.0}]]
    site.batch("dev-1", records, 1_000, link_up=True)
    assert engine.metric_calls == []
    site.batch("dev-1", records, 2_000, link_up=False)
    assert engine.metric_calls == [("dev-1", "battery_percent", 50.0)]
