"""Prometheus metrics, scraped from live processes and read with the official client's parser.

A cloud (``GET /metrics`` behind the token, and ``--metrics-bind`` with none), a gateway with
``--metrics-bind`` and two agents, as real processes on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from simulations.fleet import ProcFleet
from tests.waits import until_true

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcFleet]:
    f = ProcFleet(tmp_path_factory.mktemp("metrics-fleet"))
    try:
        f.start_cloud(["--metrics-bind", "127.0.0.1:0"])
        f.start_gateway("gw-1", "site-1", extra=["--metrics-bind", "127.0.0.1:0"])
        for name in ("dev-1", "dev-2"):
            f.start_agent(name, "site-1", "gw-1")
        until_true(lambda: len(f.api("/v1/devices")["devices"]) == 2, "both agents' records in the cloud")
        yield f
    finally:
        f.kill_all()


def families(text: str) -> dict[str, object]:
    return {fam.name: fam for fam in text_string_to_metric_families(text)}


def value(fams: dict, name: str, **labels: str) -> float:  # noqa: ANN001
    return sum(s.value for s in fams[name].samples
               if s.name in (name, f"{name}_total") and all(s.labels.get(k) == v for k, v in labels.items()))


def check_names(fams: dict) -> None:  # noqa: ANN001
    for name, fam in fams.items():
        assert name.startswith("edgefleet_"), name
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples), name
        for unit in ("seconds", "bytes"):
            if unit in name:
                assert name.endswith(unit) or fam.type == "histogram", f"{name}: the unit ends the name"


def test_the_cloud_metrics_behind_the_token_and_on_their_own_bind(fleet: ProcFleet) -> None:
    eps = fleet.endpoints("cloud")
    token = (fleet.dir("cloud") / "api_token").read_text().strip()
    assert httpx.get(eps["api"] + "/metrics", timeout=30).status_code == 401
    r = httpx.get(eps["api"] + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")

    def scraped() -> dict | None:
        fams = families(httpx.get(eps["metrics"], timeout=30).text)  # no token on the metrics bind
        link = fams.get("edgefleet_gateway_link_up")
        return fams if link is not None and link.samples and value(fams, "edgefleet_cloud_records_stored") > 0 else None

    fams = until_true(scraped, "records stored and a gateway status in the cloud's metrics")
    check_names(fams)
    assert value(fams, "edgefleet_cloud_records_received", stream="bulk") >= value(fams, "edgefleet_cloud_records_stored", stream="bulk") > 0
    hist = fams["edgefleet_cloud_ingest_commit_seconds"]
    assert hist.type == "histogram"
    assert next(s.value for s in hist.samples if s.name.endswith("_count")) > 0
    assert value(fams, "edgefleet_gateway_link_up", site="site-1", gateway="gw-1") == 1.0
    for stream in ("critical", "state", "bulk"):
        assert [s for s in fams["edgefleet_gateway_backlog_records"].samples if s.labels["stream"] == stream]
        assert [s for s in fams["edgefleet_gateway_oldest_record_age_seconds"].samples if s.labels["stream"] == stream]
    assert value(fams, "edgefleet_devices", site="site-1", connectivity="online") == 2
    for name in ("edgefleet_records_dropped", "edgefleet_gateway_records_dropped", "edgefleet_enrollments",
                 "edgefleet_rollout_devices", "edgefleet_alerts_open", "edgefleet_metrics_follower_backlog_entries",
                 "edgefleet_metrics_follower_lag_seconds"):
        assert name in fams, name


def test_the_gateway_metrics_on_its_opt_in_bind(fleet: ProcFleet) -> None:
    url = json.loads((fleet.dir("gw-1") / "metrics.json").read_text())["metrics"]

    def scraped() -> dict | None:
        fams = families(httpx.get(url, timeout=30).text)
        return fams if value(fams, "edgefleet_gateway_records_received") > 0 and value(fams, "edgefleet_gateway_link_up") == 1 else None

    fams = until_true(scraped, "records received and the uplink up in the gateway's metrics")
    check_names({k: v for k, v in fams.items() if k.startswith("edgefleet_")})
    assert value(fams, "edgefleet_gateway_devices_connected") == 2
    for name in ("edgefleet_gateway_backlog_bytes", "edgefleet_gateway_oldest_record_age_seconds",
                 "edgefleet_gateway_records_dropped", "edgefleet_gateway_cache_bytes", "edgefleet_gateway_cache_hits",
                 "edgefleet_gateway_cache_misses", "edgefleet_gateway_uplink_bytes"):
        assert name in fams, name
