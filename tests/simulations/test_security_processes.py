"""Identity and security with real processes on 127.0.0.1: zero-touch enrollment through the gateway, bad
claims refused and audited, a forced key rotation, and a revocation that holds through a gateway restart
while the site's uplink is cut."""

import json
import time

import pytest

from simulations.fleet import ProcFleet
from tests.waits import until_true

pytestmark = pytest.mark.integration


def wait_for(predicate, what):
    """Poll the real fleet until ``predicate`` holds, bounded only by the hang guard (tests/waits.py)."""
    return until_true(predicate, what)


@pytest.fixture
def fleet(tmp_path):
    f = ProcFleet(tmp_path / "fleet", sample_interval_s=0.2)
    yield f
    f.kill_all()


def test_enroll_refuse_rotate_and_revoke_offline(fleet: ProcFleet) -> None:
    ops = ["--data-dir", str(fleet.dir("cloud"))]
    fleet.cli("ca", "init", "--dir", str(fleet.dir("ca")), env={"EDGEFLEET_CA_PASSPHRASE": "drill passphrase"})
    fleet.start_cloud(["--ca-dir", str(fleet.dir("ca"))])
    fleet.start_gateway("gw-1", "site-1", proxy=True, extra=fleet.secure_gateway_flags())
    token = json.loads(fleet.cli("enroll-token", "create", "--site", "site-1", "--uses", "1", "--json", *ops).stdout)["token"]

    def identity(device):
        return next((i for i in fleet.api("/v1/identities")["identities"] if i["device_id"] == device), None)

    fleet.enroll_agent("dev-a", "site-1", "gw-1", token, extra=["--drain", "2"])
    wait_for(lambda: (i := identity("dev-a")) and i["status"] == "enrolled", what="dev-a to enroll")
    wait_for(lambda: any(d["device_id"] == "dev-a" for d in fleet.api("/v1/telemetry/summary")["devices"]),
             what="dev-a's telemetry")
    # the token is used up; a made-up one is unknown: both agents stop with the cloud's reason, nothing crashes
    fleet.enroll_agent("dev-b", "site-1", "gw-1", token)
    fleet.enroll_agent("dev-c", "site-1", "gw-1", "ect_00ff00ff00ff00ff_not-a-real-secret")
    assert fleet.wait("dev-b") != 0 and fleet.wait("dev-c") != 0
    assert "used up" in (fleet.root / "logs" / "dev-b.log").read_text()
    assert "unknown claim token" in (fleet.root / "logs" / "dev-c.log").read_text()

    # rotation: a signed command, a new key certified and admitted, telemetry goes on under the new key
    old_key = identity("dev-a")["curve_key"]
    fleet.cli("devices", "rotate", "dev-a", *ops)
    wait_for(lambda: identity("dev-a")["curve_key"] != old_key, what="dev-a's key to rotate")
    new_key = identity("dev-a")["curve_key"]
    wait_for(lambda: (fleet.dir("dev-a") / "curve.key").read_text().strip() == new_key, what="dev-a to use its new key")
    count = lambda: sum(d["count"] for d in fleet.api("/v1/telemetry/summary")["devices"] if d["device_id"] == "dev-a")
    before = count()
    wait_for(lambda: count() > before + 5, what="telemetry under the rotated key")

    # revocation: on the gateway's disk, then the site is cut off and the gateway restarts: still refused
    fleet.cli("devices", "revoke", "dev-a", "--reason", "test", *ops)
    wait_for(lambda: (fleet.dir("gw-1") / "revocations.json").exists(), what="gw-1 to cache the revocation list")
    fleet.proxies["gw-1"].cut()
    fleet.kill("gw-1")
    fleet.restart("gw-1")
    stats_path = fleet.dir("gw-1") / "stats.json"
    stats_path.unlink(missing_ok=True)
    time.sleep(6.0)  # dev-a reconnects (3 heartbeats of silence, then its backoff) and is refused
    fleet.stop(["gw-1"])
    stats = json.loads(stats_path.read_text())
    assert stats["auth_refused_revoked"] + stats["revoked_refused"] > 0
    assert stats["revocation_version"] == 1

    audit = json.loads(fleet.cli("audit", "--json", *ops).stdout)
    assert audit["verified"]
    seen = {(r["action"], r["target"], r["result"]) for r in audit["records"]}
    assert {("devices.enroll", "dev-a", "allowed"), ("devices.enroll", "dev-b", "refused"),
            ("devices.enroll", "dev-c", "refused"), ("devices.rotate", "dev-a", "allowed"),
            ("devices.revoke", "dev-a", "allowed"), ("enroll_tokens.create", "site-1", "allowed")} <= seen
