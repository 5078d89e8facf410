"""Alerts through the operator API and the ``edgefleet alerts`` commands: list, ack, silence."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from click.testing import CliRunner

from cloud.cli.alerts import alerts
from cloud.cli.helpers import parse_duration
from cloud.http import ApiContext, ApiHooks, create_app, serve_api
from cloud.store import Store
from common.cli import main

TOKEN = "alert-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC


def _alert(rule: str, subject: str, opened_ms: int, state: str = "open") -> dict:
    return {
        "id": f"{rule}:{subject}:{opened_ms}", "rule": rule, "type": "offline", "subject": subject,
        "severity": "warning", "state": state, "opened_ms": opened_ms,
        "resolved_ms": opened_ms + 60_000 if state == "resolved" else None,
        "last_event": "fired" if state == "open" else "resolved", "last_event_ms": opened_ms, "detail": {},
    }


OFFLINE = _alert("device_offline", "pump-1", T0)
LINK = _alert("gateway_link_down", "gw-1", T0 - 120_000, "resolved")


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    s.alerts.save_alerts([OFFLINE, LINK])
    yield s
    s.close()


class Silenced:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, target: str, until_ms: int) -> None:
        self.calls.append((target, until_ms))


@pytest.fixture
def silenced() -> Silenced:
    return Silenced()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(store: Store, silenced: Silenced) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ApiContext(store, TOKEN, now_ms=lambda: T0 + 1_000, hooks=ApiHooks(on_silence=silenced)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", headers=AUTH) as c:
        yield c


# --- the API ----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_list_alerts_by_state(client: httpx.AsyncClient) -> None:
    for state, ids in (("open", [OFFLINE["id"]]), ("resolved", [LINK["id"]]), ("all", [OFFLINE["id"], LINK["id"]])):
        response = await client.get("/v1/alerts", params={"state": state})
        assert response.status_code == 200
        assert [a["id"] for a in response.json()["alerts"]] == ids
    assert [a["id"] for a in (await client.get("/v1/alerts")).json()["alerts"]] == [OFFLINE["id"]]  # open
    bad = await client.get("/v1/alerts", params={"state": "closed"})
    assert (bad.status_code, bad.json()["error"]) == (422, "invalid_request")
    assert (await client.get("/v1/alerts", headers={"Authorization": "Bearer nope"})).status_code == 401


@pytest.mark.anyio
async def test_ack_an_alert(client: httpx.AsyncClient, store: Store) -> None:
    response = await client.post(f"/v1/alerts/{OFFLINE['id']}/ack", json={"by": "alice"})
    assert response.status_code == 200
    assert (response.json()["acked_by"], response.json()["acked_ms"]) == ("alice", T0 + 1_000)
    assert store.alerts.get_alert(OFFLINE["id"])["acked_by"] == "alice"
    anonymous = await client.post(f"/v1/alerts/{LINK['id']}/ack")  # no body: "operator"; resolved ones too
    assert anonymous.json()["acked_by"] == "operator"
    missing = await client.post("/v1/alerts/device_offline:ghost:1/ack", json={})
    assert missing.status_code == 404 and "device_offline:ghost:1" in missing.json()["detail"]


@pytest.mark.anyio
async def test_silence_for_a_while_or_until_and_the_engine_is_told(
    client: httpx.AsyncClient, store: Store, silenced: Silenced
) -> None:
    made = await client.post("/v1/silences", json={"target": "battery_low", "for_s": 3600, "reason": "swap day"})
    assert made.status_code == 201
    assert made.json() | {"id": 0} == {"id": 0, "target": "battery_low", "until_ms": T0 + 1_000 + 3_600_000,
                                        "created_ms": T0 + 1_000, "created_by": "operator", "reason": "swap day"}
    until = await client.post("/v1/silences", json={"target": "gw-1", "until_ms": T0 + 5_000, "by": "bob"})
    assert until.status_code == 201
    assert silenced.calls == [("battery_low", T0 + 3_601_000), ("gw-1", T0 + 5_000)]
    listed = (await client.get("/v1/silences")).json()["silences"]
    assert [s["target"] for s in listed] == ["battery_low", "gw-1"] == [s["target"] for s in store.alerts.active_silences(T0)]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        {"target": "x"},  # neither end
        {"target": "x", "for_s": 60, "until_ms": T0 + 9_000},  # both
        {"target": "x", "until_ms": T0},  # already over
        {"target": "", "for_s": 60},
        {"target": "x", "for_s": -1},
        {"target": "x", "for_s": 60, "colour": "red"},
    ],
)
async def test_bad_silences_are_refused(client: httpx.AsyncClient, silenced: Silenced, body: dict) -> None:
    response = await client.post("/v1/silences", json=body)
    assert (response.status_code, response.json()["error"]) == (422, "invalid_request")
    assert silenced.calls == []


# --- the commands -----------------------------------------------------------------------------------


@pytest.fixture
def served(store: Store, silenced: Silenced) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="api-loop", daemon=True)
    thread.start()
    app = create_app(ApiContext(store, TOKEN, now_ms=lambda: T0 + 1_000, hooks=ApiHooks(on_silence=silenced)))
    api = asyncio.run_coroutine_threadsafe(serve_api(app, "127.0.0.1", 0), loop).result(10)
    try:
        yield f"http://127.0.0.1:{api.port}"
    finally:
        asyncio.run_coroutine_threadsafe(api.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, served: str) -> CliRunner:
    monkeypatch.delenv("EDGEFLEET_API", raising=False)
    return CliRunner(env={"EDGEFLEET_API": served, "EDGEFLEET_TOKEN": TOKEN})


def test_alerts_list_table_and_json(runner: CliRunner, store: Store) -> None:
    result = runner.invoke(main, ["alerts", "list"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "ID                                   RULE            SUBJECT  SEVERITY  STATE  OPENED (UTC)"
        "         RESOLVED (UTC)  ACKED BY  LAST",
        "device_offline:pump-1:1700000000000  device_offline  pump-1   warning   open   2023-11-14 22:13:20"
        "  -               -         fired",
    ]
    result = runner.invoke(alerts, ["list", "--state", "all", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == store.alerts.list_alerts("all")
    result = runner.invoke(alerts, ["list", "--state", "resolved", "--subject", "pump-1"])
    assert result.output == "no resolved alerts\n"


def test_alerts_ack(runner: CliRunner, store: Store) -> None:
    result = runner.invoke(alerts, ["ack", OFFLINE["id"], "--by", "alice"])
    assert result.exit_code == 0, result.output
    assert result.output == f"alert {OFFLINE['id']} acknowledged by alice (open)\n"
    assert store.alerts.get_alert(OFFLINE["id"])["acked_by"] == "alice"
    missing = runner.invoke(alerts, ["ack", "no:such:alert"])
    assert missing.exit_code == 2 and "No alert by the id of 'no:such:alert'" in missing.output


def test_alerts_silence(runner: CliRunner, silenced: Silenced) -> None:
    result = runner.invoke(alerts, ["silence", "gw-1", "--for", "1h", "--reason", "site visit"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("gw-1 silenced until 2023-11-14 23:13:21 UTC (silence ")
    assert silenced.calls == [("gw-1", T0 + 1_000 + 3_600_000)]
    bad = runner.invoke(alerts, ["silence", "gw-1", "--for", "soon"])
    assert bad.exit_code == 2 and "not a duration" in bad.output


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800), ("1h30m", 5400),
                          ("0.5h", 1800)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5", "h", "5x", "1h30", "nan", "inf", "1..5m"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
