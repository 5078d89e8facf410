"""The cloud core's security events (no I/O): gateway certificates, enrollment relay, revocation pushes."""

from cloud.core import CloudCore
from common.effects import Received, Send
from common.protocol import ErrorReply, Hello
from common.protocol.messages import EnrollReply, EnrollRequest, NodeCertificate, RevocationUpdate
from common.security_events import (
    EnrollDecide,
    EnrollDecided,
    GatewayVerified,
    PeerKey,
    RevocationsChanged,
    VerifyGateway,
)

PEER, KEY = "0a0b", "G" * 40
REQ = EnrollRequest("dev-1", "K" * 40, "hw", "SN", "ect_00_x")


def up(core: CloudCore) -> list:
    core.handle(PeerKey(PEER, KEY, ""), 0.0)
    return core.handle(Received(PEER, Hello("gw-1", "gateway", "site-1", 1, 1)), 0.0)


def test_a_gateway_certificate_is_checked_against_the_key_its_handshake_proved() -> None:
    core = CloudCore(require_gateway_certs=True)
    up(core)
    refused = core.handle(Received(PEER, REQ), 1.0)
    assert [m.outcome for m in (e.msg for e in refused if isinstance(e, Send))] == ["retry"]
    assert core.handle(Received(PEER, NodeCertificate(b"PEM")), 1.0) == [VerifyGateway(PEER, "gw-1", "site-1", KEY, b"PEM")]
    core.handle(GatewayVerified(PEER, ""), 1.1)
    assert core.handle(Received(PEER, REQ), 1.2) == [EnrollDecide(PEER, "gw-1", "site-1", REQ)]
    reply = EnrollReply("dev-1", "K" * 40, "accept", "ok", b"PEM")
    assert core.handle(EnrollDecided(PEER, reply), 1.3) == [Send(PEER, reply)]


def test_a_certificate_that_does_not_verify_ends_the_session() -> None:
    core = CloudCore(require_gateway_certs=True)
    up(core)
    out = core.handle(GatewayVerified(PEER, "certificate of 'gw-1': CurveZMQ key mismatch"), 1.0)
    assert Send(PEER, ErrorReply("certificate", "certificate of 'gw-1': CurveZMQ key mismatch")) in out
    assert PEER not in core.sessions


def test_the_revocation_list_goes_to_every_gateway_now_and_at_each_session_start() -> None:
    core = CloudCore()
    up(core)
    assert core.handle(RevocationsChanged(b"v2"), 1.0) == [Send(PEER, RevocationUpdate(b"v2"))]
    out = core.handle(Received("0c0d", Hello("gw-2", "gateway", "site-2", 1, 1)), 2.0)
    assert Send("0c0d", RevocationUpdate(b"v2")) in out


def test_without_a_ca_a_gateway_certificate_is_ignored_not_held_against_it() -> None:
    core = CloudCore(verify_gateways=False)
    up(core)
    out = core.handle(Received(PEER, NodeCertificate(b"PEM")), 1.0)
    assert not [e for e in out if isinstance(e, (Send, VerifyGateway))] and PEER in core.sessions


def test_a_renewed_certificate_goes_back_to_the_gateway_on_the_same_session() -> None:
    core = CloudCore(require_gateway_certs=True)
    up(core)
    out = core.handle(GatewayVerified(PEER, "", b"FRESH-PEM"), 1.0)
    assert Send(PEER, NodeCertificate(b"FRESH-PEM")) in out
    assert core.sessions[PEER].certified
    assert not [e for e in core.handle(GatewayVerified(PEER, ""), 2.0) if isinstance(e, Send)]  # nothing due: nothing sent
