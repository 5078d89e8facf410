"""Two coordinators over one PostgreSQL, a gateway given both endpoints, a device: real processes.

The coordinator holding the gateway's session is SIGKILLed: the gateway fails over to the other within the
liveness bound, ingest resumes (the pause is measured from the stored arrival times), and in the end every
sample the device made is stored exactly once. A command made through the API of the coordinator that does
*not* hold the session reaches the device by the NOTIFY wake-up (the polling fallback is set to 120 s here, so
nothing else could deliver it in time). And a batch ingested by two coordinators at once is stored once.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from cloud.coordination import postgres as pg
from cloud.store import Store
from common.protocol.messages import ForwardRecord
from simulations.drill_steps import drain_agents
from simulations.fleet import ProcFleet
from tests.waits import until_true


def test_a_batch_resent_to_another_coordinator_while_the_first_commits_is_stored_once(pg_url: str) -> None:
    a, b = Store.open(pg_url), Store.open(pg_url)
    try:
        batch = [ForwardRecord("dev-x", "bulk", seq, 1000 + seq, "env", {"t": float(seq)}) for seq in range(1, 501)]
        a.ingest("gw-x", "site-x", batch[:10], 1)  # the device and gateway exist
        results = []
        start = threading.Barrier(2)

        def ingest(store: Store) -> None:
            start.wait()
            results.append(store.ingest("gw-x", "site-x", batch, 2))

        threads = [threading.Thread(target=ingest, args=(s,)) for s in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sum(r.stored for r in results) == 490 and sum(r.duplicates for r in results) == 510
        with a.db.transaction("count") as conn:
            rows, distinct = conn.execute(sa.text(
                "SELECT count(*), count(DISTINCT (device_id, stream, seq)) FROM telemetry WHERE device_id = 'dev-x'")).one()
        assert rows == distinct == 500
    finally:
        a.close()
        b.close()


def session_of(watch: Store, gateway: str) -> str:
    with watch.db.transaction("read the session") as conn:
        return pg.session_holder(conn, gateway)


def arrivals(watch: Store, device: str, since_ms: int) -> list[int]:
    with watch.db.transaction("read arrivals") as conn:
        return [r[0] for r in conn.execute(sa.text(
            "SELECT DISTINCT received_ms FROM telemetry WHERE device_id = :d AND received_ms >= :s ORDER BY 1"),
            {"d": device, "s": since_ms})]


def test_the_gateway_fails_over_when_its_coordinator_dies_and_commands_follow_its_session(pg_url: str, tmp_path: Path) -> None:
    fleet = ProcFleet(tmp_path / "fleet")
    watch = Store.open(pg_url)
    flags = ["--lease-ttl", "3", "--command-poll", "120"]
    try:
        fleet.start_coordinator("cloud", pg_url, flags)
        fleet.start_coordinator("cloud-2", pg_url, flags)
        fleet.start_gateway("gw-1", "site-1")
        fleet.start_agent("dev-1", "site-1", "gw-1")
        holder = until_true(lambda: session_of(watch, "gw-1"), "gw-1's session recorded")
        other = "cloud-2" if holder == "cloud" else "cloud"  # (the first of its list, unless that hello timed out)
        until_true(lambda: len(arrivals(watch, "dev-1", 0)) > 5, "dev-1's samples stored")
        killed_ms = int(time.time() * 1000)
        killed_at = time.monotonic()
        fleet.kill(holder)
        until_true(lambda: session_of(watch, "gw-1") == other, "gw-1's session on the other coordinator")
        failover_s = time.monotonic() - killed_at
        until_true(lambda: any(t > killed_ms + 1000 for t in arrivals(watch, "dev-1", killed_ms)), "ingest resumed")
        seen = arrivals(watch, "dev-1", killed_ms - 2000)
        pause_s = max(b - a for a, b in zip(seen, seen[1:])) / 1000
        print(f"failover: session moved after {failover_s:.2f} s; longest ingest pause {pause_s:.2f} s")
        assert pause_s < 10.0  # liveness 3 heartbeats (3 s) + the first reconnect's spread (<= 2 s) + handshake

        fleet.restart(holder)  # back, without the session: a command made there must be routed to the other
        api = fleet.endpoints(holder)["api"]
        token = (fleet.dir(holder) / "api_token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        until_true(lambda: httpx.get(f"{api}/v1/devices/dev-1/commands", headers=headers, timeout=30).status_code == 200,
                   "the restarted coordinator's API", tolerate=(httpx.HTTPError,))
        made_at = time.monotonic()
        r = httpx.post(f"{api}/v1/devices/dev-1/commands", headers=headers, json={"name": "ping", "args": {}}, timeout=30)
        assert r.status_code == 201, r.text
        seq = r.json()["seq"]

        def status() -> str:
            page = httpx.get(f"{api}/v1/devices/dev-1/commands", headers=headers, timeout=30).json()["commands"]
            s = next(c["status"] for c in page if c["seq"] == seq)
            return s if s != "queued" else ""

        reached = until_true(status, "the command leaving the queue")
        routed_s = time.monotonic() - made_at
        print(f"command made on {holder}, session on {other}: {reached} after {routed_s:.2f} s")
        assert routed_s < 60.0, "only the NOTIFY wake-up delivers before the 120 s poll"

        # any coordinator serves the operator API: a rollout made on the follower is made by the leader
        body = {"id": "r-ha", "draft": True, "plan": {"release": {"version": "9.9.9"}, "selector": {"devices": ["dev-1"]}}}

        def made_on_the_follower() -> httpx.Response | None:
            with watch.db.transaction("read the lease") as conn:
                leader = pg.holder_of(conn)
            if not leader:
                return None
            follower = "cloud" if leader == "cloud-2" else "cloud-2"
            r = httpx.post(f"{fleet.endpoints(follower)['api']}/v1/rollouts", headers=headers, json=body, timeout=60)
            return None if r.status_code == 503 else r  # 503: leadership moved under the request (a loaded machine)

        r = until_true(made_on_the_follower, "a rollout made through the follower's API")
        assert r.status_code == 201, r.text
        assert r.json()["id"] == "r-ha"

        codes, stats, sent, summary, dropped = drain_agents(fleet, ["dev-1"])
        assert codes == {"dev-1": 0}
        mine = sum(d["count"] for d in summary["devices"] if d["device_id"] == "dev-1" and d["stream"] == "bulk")
        assert sent > 0 and mine + dropped == sent, (sent, mine, dropped)
        assert summary["duplicates_stored"] == 0
    finally:
        fleet.kill_all()
        watch.close()


def test_a_gateway_held_by_a_follower_gets_the_leaders_site_plans(pg_url: str, tmp_path: Path) -> None:
    fleet = ProcFleet(tmp_path / "fleet")
    watch = Store.open(pg_url)
    try:
        fleet.start_coordinator("cloud", pg_url, ["--lease-ttl", "3"])
        fleet.start_coordinator("cloud-2", pg_url, ["--lease-ttl", "3"])
        key = ["--rollout-key", str(fleet.dir("cloud") / "rollout_signing.pub")]
        for s in (1, 2):  # each gateway's list rotated: gw-1 starts on cloud, gw-2 on cloud-2
            fleet.start_gateway(f"gw-{s}", f"site-{s}", extra=key)
            fleet.start_agent(f"plan-dev-{s}", f"site-{s}", f"gw-{s}")  # in no other test's rollout
        held = until_true(lambda: all(h := (session_of(watch, "gw-1"), session_of(watch, "gw-2"))) and h,
                          "both gateways' sessions")
        assert held[0] != held[1], f"the sessions should be on two coordinators: {held}"
        with watch.db.transaction("read the lease") as conn:
            leader = until_true(lambda: pg.holder_of(conn), "a leader")
        until_true(lambda: {"plan-dev-1", "plan-dev-2"} <= {d["device_id"] for d in fleet.api("/v1/devices")["devices"]},
                   "both devices known")
        body = {"id": "r-sites", "draft": True, "plan": {"release": {"version": "9.9.9"}, "site_autonomy": True,
                                                         "selector": {"devices": ["plan-dev-1", "plan-dev-2"]}}}
        fleet.api("/v1/rollouts", body, node=leader)

        def holds_plan(gateway: str) -> bool:
            path = fleet.dir(gateway) / "rollouts.json"
            try:
                return "r-sites" in json.loads(path.read_text()).get("rollouts", {})
            except (OSError, ValueError):
                return False

        until_true(lambda: holds_plan("gw-1") and holds_plan("gw-2"), "both gateways holding the signed site plan")
    finally:
        fleet.kill_all()
        watch.close()
