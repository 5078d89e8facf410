"""A device key is bound to one device id on every gateway, with or without a CA (issue 15, point 3)."""

import random

from common.effects import UPSTREAM, Received, Send, Start
from common.memory_queue import MemoryQueue
from common.protocol import ErrorReply, Hello, HelloAck
from common.security_events import PeerKey
from common.streams import GATEWAY_POLICIES
from gateway.core import GatewayCore

KEY_1, KEY_2 = "1" * 40, "2" * 40


def make() -> GatewayCore:  # no GatewaySecurity: no CA, no enrollment, no revocation list
    core = GatewayCore("gw-1", "site-1", MemoryQueue("outbox", streams=GATEWAY_POLICIES).start(),
                       commands=MemoryQueue("c").start(), rng=random.Random(1))
    core.handle(Start(), 0.0)
    core.handle(Received(UPSTREAM, HelloAck("cloud", 1, 1000, 8000)), 0.0)
    return core


def hello(core: GatewayCore, peer: str, device: str, now: float = 1.0) -> list:
    return [e.msg for e in core.handle(Received(peer, Hello(device, "device", "site-1", 1, 1)), now) if isinstance(e, Send)]


def test_one_key_cannot_say_hello_as_many_devices_without_a_ca() -> None:
    core = make()
    core.handle(PeerKey("p1", KEY_1, ""), 1.0)  # admitted by hand, no name in allowed_devices
    assert isinstance(hello(core, "p1", "dev-1")[0], HelloAck)
    core.handle(PeerKey("p1b", KEY_1, ""), 2.0)  # the same key on a new socket
    (err,) = hello(core, "p1b", "dev-2", 2.0)
    assert isinstance(err, ErrorReply) and err.code == "identity" and "said Hello as 'dev-1'" in err.detail
    assert core.downstream.peer_of("dev-2") is None  # no session, so no held command of dev-2 goes to it
    core.handle(PeerKey("p2", KEY_2, ""), 3.0)
    (err,) = hello(core, "p2", "dev-1", 3.0)  # another key may not take dev-1 over
    assert err.code == "identity" and "bound to another key" in err.detail
    assert core.downstream.peer_of("dev-1") == "p1"


def test_a_named_key_says_hello_only_as_its_device() -> None:
    core = make()
    core.handle(PeerKey("p1", KEY_1, "dev-1"), 1.0)
    (err,) = hello(core, "p1", "dev-7")
    assert err.code == "identity" and "admitted as 'dev-1'" in err.detail
    assert isinstance(hello(core, "p1", "dev-1")[0], HelloAck)
