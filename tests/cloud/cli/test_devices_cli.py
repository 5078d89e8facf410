"""Operator commands against a real API served on 127.0.0.1 from a background event loop."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from cloud.cli.client import DEFAULT_API_URL, ApiClient, Endpoint, resolve_endpoint
from cloud.cli.devices import devices
from cloud.cli.helpers import format_table
from cloud.cli.sites import sites
from cloud.http import ApiContext, create_app, serve_api
from cloud.store import Store
from common.cli import main
from common.errors import ApiError, ConfigError
from common.protocol.messages import ForwardRecord

TOKEN = "operator-token"
T0 = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC


@dataclass(frozen=True)
class Served:
    url: str
    store: Store


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A store with two sites, served by serve_api in an event loop on its own thread.

    site-a's gateway gw-1 reported its status and a gap; pump-1 has records 1, 2 and 6
    of bulk, 3..4 reported dropped, 5 unexplained. Commands go to pump-7 (CLI tests
    that create them use their own device, so the read-only tests above stay exact).
    """
    store = Store.open(f"sqlite:///{tmp_path_factory.mktemp('cloud') / 'cloud.db'}")
    t0 = T0
    status = {"link": "up", "backlog.bulk": 1200, "backlog.critical": 0, "disk.used_bytes": 5_000_000,
              "disk.quota_bytes": 50_000_000, "oldest_age_s.bulk": 42.5, "dropped.bulk.quota": 2}
    gap = {"stream": "bulk", "reason": "quota", "first": 3, "last": 4, "count": 2, "reporter": "gw-1"}
    store.telemetry.ingest(
        "gw-1",
        "site-a",
        [ForwardRecord("pump-1", "bulk", s, t0, "env", {}) for s in (1, 2)]
        + [ForwardRecord("pump-1", "state", 1, t0, "inventory", {"firmware_version": "1.2.0"})]
        + [ForwardRecord("gw-1", "state", 0, t0, "gateway.status", status),
           ForwardRecord("pump-1", "critical", 0, t0, "gap", gap)],
        t0,
    )
    store.telemetry.ingest("gw-1", "site-a", [ForwardRecord("pump-1", "bulk", 6, t0, "env", {})], t0 - 3_600_000)
    store.telemetry.ingest("gw-2", "site-b", [ForwardRecord("valve-22", "bulk", 9, t0, "env", {})], t0 + 60_000)
    store.telemetry.ingest("gw-2", "site-b", [ForwardRecord("pump-7", "bulk", 1, t0, "env", {})], t0 - 3_600_000)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="api-loop", daemon=True)
    thread.start()
    app = create_app(ApiContext(store, TOKEN, now_ms=lambda: T0 + 120_000))
    api = asyncio.run_coroutine_threadsafe(serve_api(app, "127.0.0.1", 0), loop).result(10)
    try:
        yield Served(url=f"http://127.0.0.1:{api.port}", store=store)
    finally:
        asyncio.run_coroutine_threadsafe(api.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        store.close()


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ("EDGEFLEET_API", "EDGEFLEET_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_devices_list_json(runner: CliRunner, served: Served) -> None:
    result = runner.invoke(devices, ["list", "--api", served.url, "--token", TOKEN, "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    # each device row, with the fleet view's state, tags, groups, inventory and config
    assert [{k: d[k] for k in row} for d, row in zip(listed, served.store.telemetry.list_devices(), strict=True)] == (
        served.store.telemetry.list_devices()
    )
    assert all({"tags", "groups", "inventory", "config"} <= set(d) for d in listed)


def test_devices_list_where(runner: CliRunner, served: Served) -> None:
    first = served.store.telemetry.list_devices()[0]["device_id"]
    args = ["list", "--api", served.url, "--token", TOKEN, "--json", "--where", f'id = "{first}"']
    result = runner.invoke(devices, args)
    assert result.exit_code == 0, result.output
    assert [d["device_id"] for d in json.loads(result.output)] == [first]
    bad = runner.invoke(devices, ["list", "--api", served.url, "--token", TOKEN, "--where", "id = "])
    assert bad.exit_code == 2 and "invalid query at position" in bad.output


def test_sites_list_json_through_the_edgefleet_command(runner: CliRunner, served: Served) -> None:
    env = {"EDGEFLEET_API": served.url, "EDGEFLEET_TOKEN": TOKEN}
    result = runner.invoke(main, ["sites", "list", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert [s["site_id"] for s in json.loads(result.output)] == ["site-a", "site-b"]


def test_devices_list_human_table(runner: CliRunner, served: Served) -> None:
    served.store.fleet.change_tags("pump-1", add=["canary"])
    result = runner.invoke(devices, ["list", "--api", served.url, "--token", TOKEN])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "DEVICE    SITE    GATEWAY  STATE   FW     TAGS    GROUPS  CONFIG  LAST SEEN (UTC)",
        "pump-1    site-a  gw-1     active  1.2.0  canary  -       -       2023-11-14 22:13:20",
        "pump-7    site-b  gw-2     active  -      -       -       -       2023-11-14 21:13:20",
        "valve-22  site-b  gw-2     active  -      -       -       -       2023-11-14 22:14:20",
    ]


def test_sites_list_human_table(runner: CliRunner, served: Served) -> None:
    result = runner.invoke(sites, ["list", "--api", served.url, "--token", TOKEN])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "SITE    GATEWAYS (LINK)    DEVICES ON/OFF/ALL  FIRMWARE  OPEN ALERTS  BACKLOG  LAST SEEN (UTC)",
        "site-a  gw-1:up            1/0/1               1.2.0x1             0  0 B      2023-11-14 22:13:20",
        "site-b  1 (no status yet)  1/1/2               -                   0  0 B      2023-11-14 22:14:20",
    ]


def test_sites_show_human_block(runner: CliRunner, served: Served) -> None:
    result = runner.invoke(sites, ["show", "site-a", "--api", served.url, "--token", TOKEN])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "site site-a: first seen 2023-11-14 22:13:20, last seen 2023-11-14 22:13:20 (UTC)",
        "devices: 1 online of 1 (records within the last 5 min)",
        "",
        "gateway gw-1: last seen 2023-11-14 22:13:20, serves 1 devices, link up",
        "  status at 2023-11-14 22:13:20 (UTC):",
        "    backlog.bulk        1200",
        "    backlog.critical    0",
        "    disk.quota_bytes    50000000",
        "    disk.used_bytes     5000000",
        "    dropped.bulk.quota  2",
        "    link                up",
        "    oldest_age_s.bulk   42.5",
        "",
        "gaps (records dropped by rule and reported):",
        "  DEVICE  STREAM  REASON  RANGES  RECORDS",
        "  pump-1  bulk    quota        1        2",
    ]


def test_sites_show_json_and_a_site_without_status(runner: CliRunner, served: Served) -> None:
    result = runner.invoke(sites, ["show", "site-b", "--api", served.url, "--token", TOKEN, "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert [g.pop("inventory") for g in shown["gateways"]] == [None]  # (the API adds each gateway's own inventory)
    assert shown == served.store.telemetry.site_detail("site-b", T0 + 120_000)
    human = runner.invoke(sites, ["show", "site-b", "--api", served.url, "--token", TOKEN])
    assert "devices: 1 online of 2 (records within the last 5 min)" in human.output
    assert "  no status reported yet" in human.output
    assert human.output.rstrip().endswith("gaps: none reported")


def test_sites_show_of_an_unknown_site_exits_2_naming_it(runner: CliRunner, served: Served) -> None:
    result = runner.invoke(sites, ["show", "atlantis", "--api", served.url, "--token", TOKEN])
    assert result.exit_code == 2
    assert "HTTP 404: No site by the id of 'atlantis' was found" in result.output


def test_devices_gaps(runner: CliRunner, served: Served) -> None:
    result = runner.invoke(devices, ["gaps", "--api", served.url, "--token", TOKEN])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "DEVICE  STREAM  FIRST  LAST  COUNT  REASON  REPORTER  REPORTED (UTC)",
        "pump-1  bulk        3     4      2  quota   gw-1      2023-11-14 22:13:20",
    ]
    one = runner.invoke(devices, ["gaps", "pump-1", "--api", served.url, "--token", TOKEN])
    assert one.output.splitlines()[-1] == "unexplained missing: bulk 5"
    none = runner.invoke(devices, ["gaps", "valve-22", "--api", served.url, "--token", TOKEN])
    assert none.output.splitlines() == ["no gaps reported for valve-22", "unexplained missing: none"]
    as_json = runner.invoke(devices, ["gaps", "pump-1", "--api", served.url, "--token", TOKEN, "--json"])
    assert json.loads(as_json.output)["missing"] == {"bulk": [[5, 5]]}


def test_devices_command_then_commands(runner: CliRunner, served: Served) -> None:
    opts = ["--api", served.url, "--token", TOKEN]
    made = runner.invoke(devices, ["command", "pump-7", "reboot", "--arg", "delay=5", "--arg", "m=s", *opts])
    assert made.exit_code == 0, made.output
    assert made.output == "command 1 for pump-7 queued: reboot (expires 2023-11-14 23:15:20 UTC)\n"
    as_json = runner.invoke(devices, ["command", "pump-7", "ping", "--ttl", "60", "--json", *opts])
    assert json.loads(as_json.output) == {"device_id": "pump-7", "seq": 2, "expires_ms": T0 + 180_000}
    served.store.commands.mark_command("pump-7", 1, "done", "rebooted", T0 + 150_000)
    listed = runner.invoke(devices, ["commands", "pump-7", *opts])
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines() == [
        "SEQ  NAME    ARGS         STATUS  DETAIL    CREATED (UTC)        EXPIRES (UTC)        UPDATED (UTC)",
        "  1  reboot  delay=5,m=s  done    rebooted  2023-11-14 22:15:20  2023-11-14 23:15:20  2023-11-14 22:15:50",
        "  2  ping    -            queued  -         2023-11-14 22:15:20  2023-11-14 22:16:20  2023-11-14 22:15:20",
    ]
    listed_json = runner.invoke(devices, ["commands", "pump-7", "--json", *opts])
    assert json.loads(listed_json.output) == served.store.commands.list_commands("pump-7")


def test_devices_commands_of_a_device_without_any(runner: CliRunner, served: Served) -> None:
    result = runner.invoke(devices, ["commands", "valve-22", "--api", served.url, "--token", TOKEN])
    assert (result.exit_code, result.output) == (0, "no commands for valve-22 yet\n")


def test_devices_command_refuses_bad_args_and_unknown_devices(runner: CliRunner, served: Served) -> None:
    opts = ["--api", served.url, "--token", TOKEN]
    bad = runner.invoke(devices, ["command", "pump-7", "reboot", "--arg", "novalue", *opts])
    assert bad.exit_code == 2 and "'novalue' is not KEY=VALUE" in bad.output
    twice = runner.invoke(devices, ["command", "pump-7", "reboot", "--arg", "a=1", "--arg", "a=2", *opts])
    assert twice.exit_code == 2 and "'a' is given twice" in twice.output
    unknown = runner.invoke(devices, ["command", "ghost", "reboot", *opts])
    assert unknown.exit_code == 2
    assert "POST /v1/devices/ghost/commands failed" in unknown.output
    assert "No device by the id of 'ghost'" in unknown.output
    assert served.store.commands.list_commands("ghost") == []


def test_data_dir_supplies_token_and_url(runner: CliRunner, served: Served, tmp_path: Path) -> None:
    (tmp_path / "api_token").write_text(TOKEN + "\n")
    (tmp_path / "endpoints.json").write_text(json.dumps({"api": served.url}))
    result = runner.invoke(devices, ["list", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)) == 3


def test_unreachable_api_exits_2_with_a_clear_message(runner: CliRunner) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(devices, ["list", "--api", url, "--token", TOKEN])
    assert result.exit_code == 2
    assert f"cannot reach the EdgeFleet API at {url}: is `edgefleet cloud` running?" in result.output


def test_wrong_token_exits_2(runner: CliRunner, served: Served) -> None:
    result = runner.invoke(sites, ["list", "--api", served.url, "--token", "nope"])
    assert result.exit_code == 2
    assert "token refused: pass --token or --data-dir" in result.output


def test_no_token_at_all_exits_2(runner: CliRunner, served: Served, tmp_path: Path) -> None:
    result = runner.invoke(devices, ["list", "--api", served.url])
    assert result.exit_code == 2
    assert "no API token" in result.output
    result = runner.invoke(devices, ["list", "--api", served.url, "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert f"cannot read the API token from {tmp_path / 'api_token'}" in result.output


def test_format_table_aligns_columns() -> None:
    assert format_table(["NAME", "N"], [["a", 10], ["long-name", 2]]).splitlines() == [
        "NAME        N",
        "a          10",
        "long-name   2",
    ]


# -- the shared client, without a server ---------------------------------------------------


def test_resolve_endpoint_precedence(tmp_path: Path) -> None:
    (tmp_path / "api_token").write_text("from-file\n")
    (tmp_path / "endpoints.json").write_text(json.dumps({"api": "http://10.0.0.5:9000/"}))
    assert resolve_endpoint(data_dir=tmp_path) == Endpoint("http://10.0.0.5:9000", "from-file")
    assert resolve_endpoint("http://h:1", "explicit", tmp_path) == Endpoint("http://h:1", "explicit")
    assert resolve_endpoint(token="t") == Endpoint(DEFAULT_API_URL, "t")
    assert "from-file" not in repr(resolve_endpoint(data_dir=tmp_path))
    with pytest.raises(ConfigError, match="must start with http"):
        resolve_endpoint("127.0.0.1:8700", "t")


def test_client_translates_http_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer t"
        if request.url.path == "/v1/broken":
            return httpx.Response(503, json={"error": "store_unavailable", "detail": "store listing failed: disk"})
        return httpx.Response(200, text="<html>not json</html>")

    with ApiClient(Endpoint("http://api", "t"), transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ApiError, match="GET /v1/broken failed at http://api with HTTP 503: store listing") as info:
            client.get("/v1/broken")
        assert info.value.status == 503
        with pytest.raises(ApiError, match="not JSON"):
            client.get("/v1/devices")
