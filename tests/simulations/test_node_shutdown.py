"""Every node stops on SIGTERM within its stated bound with a backlog, and loses nothing it acknowledged.

Real processes, real LMDB backlogs, the cloud's real SQLite. The bounds are the ones docs/RUNBOOK.md states:
cloud and gateway within ``STOP_BOUND_S`` of SIGTERM, the agent within its ``--drain`` plus that.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from pathlib import Path

import psutil
import pytest

from common.clock import SteadyClock
from common.durable_queue import DurableQueue
from common.protocol import ForwardRecord, encode_record
from common.streams import DEVICE_POLICIES, GATEWAY_POLICIES, STREAMS
from simulations.fleet import ProcFleet

pytestmark = pytest.mark.integration

STOP_BOUND_S = 5.0
DEVICES = 10
VALUES = {f"m{i}": 20.0 + i / 7 for i in range(64)}  # the most a record may carry: the store is the slow part


def entry(gateway: str, k: int) -> tuple[str, int]:
    """The (device, seq) of the k-th backlog record of ``gateway`` (0-based)."""
    return f"{gateway}-dev-{k % DEVICES}", k // DEVICES + 1


def prefill(data_dir: Path, gateway: str, records: int) -> None:
    """A gateway outbox holding ``records`` bulk records, as if its uplink had been down."""
    data_dir.mkdir(parents=True, exist_ok=True)
    steady = SteadyClock(data_dir / "steady.json").start()
    q = DurableQueue(str(data_dir / "outbox"), streams=dict(GATEWAY_POLICIES), clock=steady.now_ms).start()
    try:
        now = int(time.time() * 1000)
        entries = []
        for k in range(records):
            device, seq = entry(gateway, k)
            entries.append(encode_record(ForwardRecord(device, "bulk", seq, now, "metrics", VALUES)))
        q.append_many_sync(entries, stream="bulk")
    finally:
        q.close()
        steady.checkpoint()


def stored(db: Path) -> set[tuple[str, int]]:
    """(device, seq) of every bulk record in the cloud's database (read-only)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return set(conn.execute("SELECT device_id, seq FROM telemetry WHERE stream = 'bulk'").fetchall())
    except sqlite3.OperationalError:  # not created yet
        return set()


def outbox_left(data_dir: Path) -> tuple[int, int]:
    """(first unacknowledged seq, records held) of a stopped gateway's bulk stream."""
    q = DurableQueue(str(data_dir / "outbox"), streams=dict(GATEWAY_POLICIES)).start()
    try:
        st = q.stats("bulk")
        return st.first_seq, st.count
    finally:
        q.close()


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def sigterm_and_time(fleet: ProcFleet, name: str) -> tuple[int, float]:
    t0 = time.monotonic()
    fleet.signal(name, signal.SIGTERM)
    code = fleet.wait(name, timeout_s=60)
    return code, time.monotonic() - t0


def log_event(fleet: ProcFleet, name: str, msg: str) -> dict:
    lines = (fleet.root / "logs" / f"{name}.log").read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return [e for e in events if e.get("msg") == msg][-1]


@pytest.fixture
def fleet(tmp_path: Path):
    f = ProcFleet(tmp_path / "fleet", heartbeat_s=0.5)
    yield f
    f.kill_all()


def test_the_cloud_stops_within_the_bound_with_its_store_behind_and_keeps_what_it_acknowledged(fleet: ProcFleet) -> None:
    gateways = {f"gw-{i}": 12_000 for i in range(1, 4)}
    for gw, n in gateways.items():
        prefill(fleet.dir(gw), gw, n)
    fleet.start_cloud()
    for gw in gateways:
        fleet.start_gateway(gw, "site-1")
    db = fleet.dir("cloud") / "cloud.db"
    # three gateways keep 8,000 records each in flight: the store thread has seconds of batches queued
    wait_for(lambda: len(stored(db)) >= 1000, 60, "the cloud to store its first batch")
    code, took = sigterm_and_time(fleet, "cloud")
    assert code == 0
    assert took < STOP_BOUND_S, f"the cloud took {took:.1f} s to stop"
    stop = log_event(fleet, "cloud", "cloud stopped")
    assert stop["store_calls_dropped"] > 0, "the store thread was not behind: the test proved nothing"
    codes = fleet.stop(list(gateways))
    assert set(codes.values()) == {0}
    have = stored(db)
    for gw, n in gateways.items():  # what the cloud acknowledged left the outbox: it must be stored
        first, left = outbox_left(fleet.dir(gw))
        assert first - 1 + left == n
        acked = {entry(gw, k) for k in range(first - 1)}
        assert acked <= have, f"{gw}: {len(acked - have)} acknowledged records not stored"
    # restarted, the cloud takes the dropped batches again and stores each record once
    fleet.restart("cloud")
    for gw in gateways:
        fleet.restart(gw)
    wait_for(lambda: len(stored(db)) > len(have), 60, "the restarted cloud to store more")
    summary = fleet.api("/v1/telemetry/summary")
    assert summary["duplicates_stored"] == 0


def test_a_gateway_stops_within_the_bound_while_draining_and_every_record_is_stored_or_held(fleet: ProcFleet) -> None:
    n = 30_000
    prefill(fleet.dir("gw-1"), "gw-1", n)
    fleet.start_cloud()
    fleet.start_gateway("gw-1", "site-1")
    db = fleet.dir("cloud") / "cloud.db"
    wait_for(lambda: len(stored(db)) >= 1000, 60, "the drain to start")
    code, took = sigterm_and_time(fleet, "gw-1")
    assert code == 0
    assert took < STOP_BOUND_S, f"the gateway took {took:.1f} s to stop"
    first, left = outbox_left(fleet.dir("gw-1"))
    assert left > 0, "the backlog drained before the stop: the test proved nothing"
    assert first - 1 + left == n
    assert {entry("gw-1", k) for k in range(first - 1)} <= stored(db)  # dropped from the outbox only once stored
    fleet.restart("gw-1")  # and the rest goes on from where it was
    wait_for(lambda: len(stored(db)) >= n, 120, "the restarted gateway to drain the rest")
    assert fleet.api("/v1/telemetry/summary")["duplicates_stored"] == 0


def test_an_agent_stops_within_its_drain_and_the_bound_and_keeps_its_buffer(fleet: ProcFleet) -> None:
    fleet.start_cloud()
    fleet.start_gateway("gw-1", "site-1")
    fleet.sample_interval_s = 0.005
    fleet.start_agent("dev-1", "site-1", "gw-1", extra=["--drain", "1"])
    fleet.kill("gw-1")  # the gateway is gone: the agent's buffer only grows
    buffer = fleet.dir("dev-1") / "buffer"
    # once its buffer is open (a slow start on a loaded machine is not sampling time), let it sample into
    # the buffer for a while: about 600 samples at 5 ms
    wait_for(lambda: (buffer / "data.mdb").exists(), 60, "the agent to open its buffer")
    time.sleep(3)
    code, took = sigterm_and_time(fleet, "dev-1")
    assert code == 0
    assert took < 1 + STOP_BOUND_S, f"the agent took {took:.1f} s to stop with --drain 1"
    stats = fleet.agent_stats("dev-1")
    assert stats["buffered"]["bulk"] > 100
    q = DurableQueue(str(buffer), streams=dict(DEVICE_POLICIES)).start()
    try:
        held = {s: q.stats(s).count for s in STREAMS}
    finally:
        q.close()
    assert held == stats["buffered"]  # everything it took is still there, durable
    assert sum(stats["produced"].values()) == sum(held.values()) + sum(stats["acked"].values())


def test_the_cloud_stops_within_the_bound_while_making_a_delta_and_leaves_no_worker_behind(fleet: ProcFleet) -> None:
    from simulations.delivery import make_key, make_versions, publish

    key = make_key(fleet.root / "key")
    images = make_versions(fleet.root / "images", ["1.0.0", "1.1.0"], 32 << 20)  # a delta of a minute or so
    fleet.start_cloud(["--release-key", str(key.public)])
    publish(fleet, key, images["1.0.0"], "1.0.0", "hw-1")
    def second() -> None:
        try:
            publish(fleet, key, images["1.1.0"], "1.1.0", "hw-1")
        except RuntimeError:  # the stop cuts it short: expected
            pass

    threading.Thread(target=second, daemon=True).start()
    cloud = psutil.Process(fleet.procs["cloud"].popen.pid)
    wait_for(lambda: any("multiprocessing" in " ".join(c.cmdline()) for c in cloud.children(recursive=True)), 60,
             "the cloud to start computing the delta")
    code, took = sigterm_and_time(fleet, "cloud")
    assert code == 0
    assert took < STOP_BOUND_S, f"the cloud took {took:.1f} s to stop while making a delta"
    wait_for(lambda: not fleet_processes(fleet), 5, "no process of the fleet to be left")


def fleet_processes(fleet: ProcFleet) -> list[int]:
    """Live processes carrying this fleet's EDGEFLEET_FLEET marker (nodes and anything they started)."""
    marker = f"EDGEFLEET_FLEET={fleet.root}".encode()
    out = []
    for p in psutil.process_iter():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and marker in Path(f"/proc/{p.pid}/environ").read_bytes().split(b"\0"):
                out.append(p.pid)
        except (psutil.Error, OSError):
            pass
    return out
