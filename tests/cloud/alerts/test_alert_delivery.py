"""A real cloud process delivers alert events to a local webhook receiver: a gateway that dies fires
gateway_link_down, its return resolves it; a silence set through the API holds an alert's event."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from simulations.alert_drill import WebhookReceiver, write_cloud_config
from simulations.fleet import ProcFleet
from tests.waits import until_true

pytestmark = pytest.mark.integration

RULES = [
    {"type": "offline", "name": "device_offline", "after_s": 4},
    {"type": "offline", "name": "gateway_link_down", "after_s": 2, "kind": "gateway"},
]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
def fleet(tmp_path, receiver: WebhookReceiver) -> Iterator[ProcFleet]:
    f = ProcFleet(tmp_path / "fleet", sample_interval_s=0.2)
    config = write_cloud_config(tmp_path / "cloud.toml", RULES)
    f.start_cloud(extra=["--config", str(config), "--webhook", receiver.url])
    yield f
    f.kill_all()


def wait_for(predicate, what):
    """Poll the real fleet until ``predicate`` holds, bounded only by the hang guard (tests/waits.py)."""
    return until_true(predicate, what)


def events(receiver: WebhookReceiver, rule: str) -> list[tuple[str, str]]:
    with receiver.lock:
        return [(e["event"], e["alert_id"]) for e in receiver.events if e.get("rule") == rule]


def test_a_dead_gateway_fires_and_its_return_resolves_at_the_webhook(
    fleet: ProcFleet, receiver: WebhookReceiver
) -> None:
    fleet.start_gateway("gw-1", "site-1")
    fleet.start_agent("dev-1", "site-1", "gw-1")
    wait_for(lambda: fleet.api("/v1/telemetry/summary")["devices"], "dev-1's records")
    fleet.kill("gw-1")
    [(event, alert_id)] = wait_for(lambda: events(receiver, "gateway_link_down"), "a fired event")
    assert event == "fired" and alert_id.startswith("gateway_link_down:gw-1:")
    [row] = fleet.api("/v1/alerts?state=open")["alerts"]
    assert (row["id"], row["last_event"]) == (alert_id, "fired")  # persisted before it was delivered
    fleet.restart("gw-1")
    wait_for(lambda: len(events(receiver, "gateway_link_down")) == 2, "a resolved event")
    assert events(receiver, "gateway_link_down") == [("fired", alert_id), ("resolved", alert_id)]
    [row] = fleet.api("/v1/alerts?state=resolved")["alerts"]
    assert row["id"] == alert_id and row["resolved_ms"] >= row["opened_ms"]
    assert events(receiver, "device_offline") == []  # dev-1's silence was its gateway's outage


def test_a_silence_set_through_the_api_holds_the_fired_event(fleet: ProcFleet, receiver: WebhookReceiver) -> None:
    fleet.start_gateway("gw-1", "site-1")
    fleet.start_agent("dev-1", "site-1", "gw-1")
    wait_for(lambda: fleet.api("/v1/telemetry/summary")["devices"], "dev-1's records")
    api = fleet.endpoints("cloud")["api"]
    token = (fleet.dir("cloud") / "api_token").read_text().strip()
    made = httpx.post(f"{api}/v1/silences", json={"target": "dev-1", "for_s": 600},
                      headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert made.status_code == 201
    fleet.stop(["dev-1"])
    [row] = wait_for(lambda: fleet.api("/v1/alerts?state=open")["alerts"], "dev-1's alert to open")
    assert (row["rule"], row["subject"], row["last_event"]) == ("device_offline", "dev-1", "silenced")
    time.sleep(2.0)  # two more ticks: nothing may reach the receiver
    assert receiver.count == 0
