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

from cloud.api import create_app, serve_api
from cloud.api_client import DEFAULT_API_URL, ApiClient, Endpoint, resolve_endpoint
from cloud.ops_cli import devices, format_table, sites
from cloud.store import Store
from common.cli import main
from common.errors import ApiError, ConfigError
from common.protocol.messages import ForwardRecord

TOKEN = "operator-token"


@dataclass(frozen=True)
class Served:
    url: str
    store: Store


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A store with two sites, served by serve_api in an event loop on its own thread."""
    store = Store.open(f"sqlite:///{tmp_path_factory.mktemp('cloud') / 'cloud.db'}")
    t0 = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC
    store.ingest("gw-1", "site-a", [ForwardRecord("pump-1", s, t0, "env", {}) for s in (1, 2)], t0)
    store.ingest("gw-2", "site-b", [ForwardRecord("valve-22", 9, t0, "env", {})], t0 + 60_000)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="api-loop", daemon=True)
    thread.start()
    api = asyncio.run_coroutine_threadsafe(serve_api(create_app(store, TOKEN), "127.0.0.1", 0), loop).result(10)
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
    assert json.loads(result.output) == served.store.list_devices()


def test_sites_list_json_through_the_edgefleet_command(runner: CliRunner, served: Served) -> None:
    env = {"EDGEFLEET_API": served.url, "EDGEFLEET_TOKEN": TOKEN}
    result = runner.invoke(main, ["sites", "list", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert [s["site_id"] for s in json.loads(result.output)] == ["site-a", "site-b"]


def test_devices_list_human_table(runner: CliRunner, served: Served) -> None:
    result = runner.invoke(devices, ["list", "--api", served.url, "--token", TOKEN])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "DEVICE    SITE    GATEWAY  LAST SEQ  FIRST SEEN (UTC)     LAST SEEN (UTC)",
        "pump-1    site-a  gw-1            2  2023-11-14 22:13:20  2023-11-14 22:13:20",
        "valve-22  site-b  gw-2            9  2023-11-14 22:14:20  2023-11-14 22:14:20",
    ]


def test_sites_list_human_table(runner: CliRunner, served: Served) -> None:
    result = runner.invoke(sites, ["list", "--api", served.url, "--token", TOKEN])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "SITE    GATEWAYS  DEVICES  FIRST SEEN (UTC)     LAST SEEN (UTC)",
        "site-a         1        1  2023-11-14 22:13:20  2023-11-14 22:13:20",
        "site-b         1        1  2023-11-14 22:14:20  2023-11-14 22:14:20",
    ]


def test_data_dir_supplies_token_and_url(runner: CliRunner, served: Served, tmp_path: Path) -> None:
    (tmp_path / "api_token").write_text(TOKEN + "\n")
    (tmp_path / "endpoints.json").write_text(json.dumps({"api": served.url}))
    result = runner.invoke(devices, ["list", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)) == 2


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
