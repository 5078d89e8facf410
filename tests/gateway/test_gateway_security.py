"""The gateway's security part on the sans-IO core (fake queues, no sockets): enrollment relay,
revocation enforcement, quarantine."""

import random

import gateway.security
from common.effects import UPSTREAM, Append, Log, Received, Send, Start
from common.memory_queue import MemoryQueue
from common.protocol import Command, ErrorReply, Hello, HelloAck, TelemetryBatch, TelemetryRecord
from common.protocol.messages import EnrollReply, EnrollRequest, RevocationUpdate
from common.security_events import AdmitDevice, Admitted, ApplyRevocations, EnrollAttempt, PeerKey, RevocationsApplied
from common.streams import GATEWAY_POLICIES
from gateway.core import GatewayCore
from gateway.security import GatewaySecurity

KEY, OTHER = "K" * 40, "O" * 40
EPEER, PEER = "e:0a", "aa01"


def make(cloud_up=True):
    core = GatewayCore("gw-1", "site-1", MemoryQueue("outbox", streams=GATEWAY_POLICIES).start(), commands=MemoryQueue("c").start(),
                       rng=random.Random(1), security=GatewaySecurity())
    core.handle(Start(), 0.0)
    if cloud_up:
        core.handle(Received(UPSTREAM, HelloAck("cloud", 1, 1000, 8000)), 0.0)
    return core


def sends(effects, peer=None):
    return [e.msg for e in effects if isinstance(e, Send) and (peer is None or e.peer == peer)]


def request(key=KEY, device="dev-9"):
    return EnrollRequest(device, key, "sim-board-1", "SN-9", "ect_00_x")


def test_public_names() -> None:
    assert set(gateway.security.__all__) == {"ENROLL_PREFIX", "REMEDIATION_COMMANDS", "GatewaySecurity"}


def test_an_enrollment_naming_another_key_than_the_handshake_is_refused_and_not_relayed() -> None:
    core = make()
    out = core.handle(EnrollAttempt(EPEER, KEY, request(key=OTHER)), 1.0)
    [reply] = sends(out, EPEER)
    assert reply.outcome == "refuse" and "connected with" in reply.detail
    assert sends(out, UPSTREAM) == []
    assert core.security.counters["enroll_key_mismatch"] == 1


def test_an_enrollment_is_relayed_and_an_accepted_certificate_is_checked_before_the_device_hears() -> None:
    core = make()
    out = core.handle(EnrollAttempt(EPEER, KEY, request()), 1.0)
    assert sends(out, UPSTREAM) == [request()]
    accept = EnrollReply("dev-9", KEY, "accept", "enrolled", b"PEM")
    out = core.handle(Received(UPSTREAM, accept), 2.0)
    assert out == [AdmitDevice(accept)]  # nothing to the device until the driver verified and admitted the key
    out = core.handle(Admitted(accept), 2.1)
    assert sends(out, EPEER) == [accept]


def test_while_the_cloud_is_away_an_enrollment_is_told_to_wait() -> None:
    core = make(cloud_up=False)
    [reply] = sends(core.handle(EnrollAttempt(EPEER, KEY, request()), 1.0), EPEER)
    assert reply.outcome == "pending"


def test_a_revocation_drops_the_session_refuses_every_frame_and_refuses_enrollment() -> None:
    core = make()
    core.handle(Received(PEER, Hello("dev-1", "device", "site-1", 1, 1)), 0.0)
    assert core.handle(Received(UPSTREAM, RevocationUpdate(b"signed")), 1.0) == [ApplyRevocations(b"signed")]
    out = core.handle(RevocationsApplied(2, frozenset({"dev-1"}), frozenset()), 1.1)
    assert [m.code for m in sends(out, PEER)] == ["revoked"] and PEER not in core.sessions
    batch = TelemetryBatch("dev-1", "bulk", 0, [TelemetryRecord(1, 1, "metrics", {})])
    for msg in (batch, Hello("dev-1", "device", "site-1", 1, 1)):
        out = core.handle(Received(PEER, msg), 2.0)
        assert sends(out, PEER) == [ErrorReply("revoked", "device 'dev-1' is revoked; frames refused")]
        assert not [e for e in out if isinstance(e, Append)]
    [reply] = sends(core.handle(EnrollAttempt(EPEER, KEY, request(device="dev-1")), 3.0), EPEER)
    assert reply.outcome == "refuse" and "revoked" in reply.detail
    assert core.security.counters["revoked_refused"] == 2 and core.security.counters["revoked_disconnected"] == 1


def test_a_quarantined_device_gets_remediation_commands_only_and_its_telemetry_is_flagged() -> None:
    core = make()
    core.handle(Received(PEER, Hello("dev-1", "device", "site-1", 1, 1)), 0.0)
    core.handle(RevocationsApplied(3, frozenset(), frozenset({"dev-1"})), 0.5)
    held = core.handle(Received(UPSTREAM, Command("dev-1", 1, "echo", {}, 10_000)), 1.0)
    assert [type(e) for e in held] == [Log] and core.security.counters["quarantine_held_commands"] == 1
    update = core.handle(Received(UPSTREAM, Command("dev-1", 2, "update", {}, 10_000)), 1.0)
    assert [e.token[0] for e in update if isinstance(e, Append)] == ["command"]
    out = core.handle(Received(PEER, TelemetryBatch("dev-1", "bulk", 0, [TelemetryRecord(1, 1, "metrics", {})])), 2.0)
    appends = [e for e in out if isinstance(e, Append)]
    assert [a.stream for a in appends] == ["critical", "bulk"]  # the flag, then the records themselves
    assert core.security.counters["quarantine_flagged"] == 1


def test_a_key_certified_for_one_device_cannot_say_hello_as_another() -> None:
    core = make()
    core.security.bind_identity = True
    assert core.handle(PeerKey(PEER, KEY, "dev-1"), 0.0) == []
    out = core.handle(Received(PEER, Hello("dev-2", "device", "site-1", 1, 1)), 0.1)
    assert [m.code for m in sends(out, PEER)] == ["identity"] and PEER not in core.sessions
    out = core.handle(Received(PEER, Hello("dev-1", "device", "site-1", 1, 1)), 0.2)
    assert [type(m).__name__ for m in sends(out, PEER)] == ["HelloAck"]
    assert core.security.counters["identity_mismatch"] == 1


def test_a_certificate_renewed_by_the_cloud_is_handed_to_the_driver_to_check_and_keep() -> None:
    from common.protocol.messages import NodeCertificate
    from common.security_events import InstallGatewayCertificate

    core = make()
    core.security.certificate = b"OLD-PEM"
    assert core.handle(Received(UPSTREAM, NodeCertificate(b"NEW-PEM")), 1.0) == [InstallGatewayCertificate(b"NEW-PEM")]
    core.security.certificate = b""  # a gateway without a certificate of its own takes none
    assert core.handle(Received(UPSTREAM, NodeCertificate(b"NEW-PEM")), 2.0) == []


def test_the_enrollment_socket_has_a_local_budget_per_key_and_overall() -> None:
    """An anonymous flood is answered "retry" at the gateway and never spends the cloud's per-gateway bucket
    (issue 15, point 8)."""
    core = make()
    flood = [core.handle(EnrollAttempt(f"e:{i:02x}", KEY, request(KEY, f"dev-{i}")), 0.0) for i in range(10)]
    relayed = [out for out in flood if any(isinstance(e, Send) and e.peer == UPSTREAM for e in out)]
    assert len(relayed) == gateway.security.ENROLL_PER_KEY_BURST  # one key: its burst, then "retry"
    assert [m.outcome for m in sends(flood[-1])] == ["retry"]
    keys = [f"{i:040d}" for i in range(40)]
    many = [core.handle(EnrollAttempt(f"e:{i:02x}", k, request(k, f"dev-k{i}")), 1.0) for i, k in enumerate(keys)]
    relayed_many = sum(1 for out in many if any(isinstance(e, Send) and e.peer == UPSTREAM for e in out))
    assert relayed_many <= gateway.security.ENROLL_BURST - gateway.security.ENROLL_PER_KEY_BURST + 1
    assert core.security.counters["enroll_rate_limited"] == 10 - gateway.security.ENROLL_PER_KEY_BURST + 40 - relayed_many


def test_an_attempt_the_cloud_answered_retry_is_given_back_to_the_gateways_budget() -> None:
    core = make()
    keys = [f"{i:040d}" for i in range(gateway.security.ENROLL_BURST)]
    for i, k in enumerate(keys):  # the whole burst relayed (the cloud then says "no certificate yet")
        assert sends(core.handle(EnrollAttempt(f"e:{i:02x}", k, request(k, f"dev-{i}")), 0.0), UPSTREAM)
    late = "9" * 40
    assert [m.outcome for m in sends(core.handle(EnrollAttempt("e:ff", late, request(late, "dev-late")), 0.0))] == ["retry"]
    core.handle(Received(UPSTREAM, EnrollReply("dev-0", keys[0], "retry", "no verified certificate (yet)", b"")), 0.0)
    assert sends(core.handle(EnrollAttempt("e:fe", late, request(late, "dev-late")), 0.0), UPSTREAM)
