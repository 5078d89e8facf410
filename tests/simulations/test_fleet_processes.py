"""Real OS processes on 127.0.0.1: telemetry end to end, and garbage on every listening port."""

import json
import os
import socket
import subprocess
import sys

import pytest
import zmq

from common.keys import load_or_create_keypair, secure_client
from common.protocol import ErrorReply, Hello, HelloAck, decode, encode
from simulations.fleet import ProcFleet
from tests.waits import until_true

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(tmp_path):
    f = ProcFleet(tmp_path / "fleet", sample_interval_s=0.1)
    yield f
    f.kill_all()


def wait_for(predicate, what):
    """Poll the real fleet until ``predicate`` holds, bounded only by the hang guard (tests/waits.py)."""
    return until_true(predicate, what)


def stored(fleet):
    return fleet.api("/v1/telemetry/summary")


def test_telemetry_flows_end_to_end_once(fleet):
    fleet.start_cloud()
    fleet.start_gateway("gw-1", "site-1")
    agents = [f"dev-{i}" for i in range(3)]
    for a in agents:
        fleet.start_agent(a, "site-1", "gw-1")
    # one summary row per device and stream (bulk samples, the state stream its inventory): count devices
    wait_for(lambda: len({d["device_id"] for d in stored(fleet)["devices"]}) == 3, what="all three devices to reach the cloud")
    codes = fleet.stop(agents)
    assert codes == {a: 0 for a in agents}
    produced = {a: fleet.agent_stats(a) for a in agents}
    sent = sum(sum(s["produced"].values()) for s in produced.values())  # samples (bulk) and inventory (state)
    summary = wait_for(lambda: (s := stored(fleet))["distinct"] >= sent and s, what="the backlog to drain")
    assert summary["distinct"] == sent and summary["duplicates_stored"] == 0
    per_device = {(d["device_id"], d["stream"]): d for d in summary["devices"]}
    for a, s in produced.items():
        row = per_device[(a, "bulk")]
        assert row["count"] == s["produced"]["bulk"]
        assert (row["min_seq"], row["max_seq"]) == (s["first_seq"]["bulk"], s["last_seq"]["bulk"])
        assert s["buffered"] == {"critical": 0, "state": 0, "bulk": 0}
    # the operator CLI reads the same store through the API
    out = subprocess.run(
        [sys.executable, "-m", "common", "devices", "list", "--data-dir", str(fleet.dir("cloud")), "--json"],
        capture_output=True, text=True, check=True,
    )
    listed = json.loads(out.stdout)
    rows = listed["devices"] if isinstance(listed, dict) else listed
    assert sorted(d["device_id"] for d in rows) == agents
    assert fleet.stop(["gw-1", "cloud"]) == {"gw-1": 0, "cloud": 0}


def _port(endpoint):
    return int(endpoint.rsplit(":", 1)[1])


def _raw_garbage(port):
    """Bytes that are not ZMTP at all, then a 100 MB blob, on a plain TCP connection."""
    for payload in (os.urandom(4096), b"\xff" + b"\x00" * 8 + b"\x7f" + os.urandom(200), b"\x00" * (100 * 1024 * 1024)):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            try:
                s.sendall(payload)
            except OSError:
                pass  # the server hung up on us: that is the point


def _client(ctx, fleet, name, server, endpoint):
    keys = load_or_create_keypair(fleet.dir(name))
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvtimeo = 5000
    secure_client(sock, keys, load_or_create_keypair(fleet.dir(server)).public)
    sock.setsockopt(zmq.MAXMSGSIZE, -1)  # this client wants to send oversized frames
    sock.connect(endpoint)
    return sock


def test_garbage_on_every_port_leaves_every_process_serving(fleet):
    cloud = fleet.start_cloud()
    gw = fleet.start_gateway("gw-1", "site-1")
    fleet.start_agent("dev-1", "site-1", "gw-1")
    wait_for(lambda: stored(fleet)["distinct"] > 0, what="first telemetry")

    for endpoint in (cloud["gateways"], gw["devices"]):
        _raw_garbage(_port(endpoint))

    fleet.allow("gw-1", "mallory")  # an admitted key that sends garbage
    ctx = zmq.Context()
    try:
        sock = _client(ctx, fleet, "mallory", "gw-1", gw["devices"])
        for frame in (os.urandom(64), b"\x93\x01\x01", b"\x92\x0a\x01", b"\xc1", encode(Hello("x", "device", "s", 1, 1))[:-3]):
            sock.send(frame)
            reply = decode(sock.recv())
            assert isinstance(reply, ErrorReply) and reply.code == "malformed", reply
        # a 100 MB frame is over the frame limit: libzmq drops the connection, the gateway carries on
        sock.send(b"\x00" * (100 * 1024 * 1024))
        sock.close()

        fresh = _client(ctx, fleet, "mallory", "gw-1", gw["devices"])
        fresh.send(encode(Hello("mallory", "device", "site-1", 1, 1)))
        assert isinstance(decode(fresh.recv()), HelloAck)
        fresh.close()
    finally:
        ctx.destroy(linger=0)

    before = stored(fleet)["distinct"]
    wait_for(lambda: stored(fleet)["distinct"] > before, what="telemetry after the garbage")
    assert all(p.running for p in fleet.procs.values())
    assert fleet.stop(["dev-1", "gw-1", "cloud"]) == {"dev-1": 0, "gw-1": 0, "cloud": 0}
