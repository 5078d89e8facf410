"""A gateway's key is bound to its id and site before its Hello is honoured; a gateway reports only what was sent
to it; its records are stored only for devices of its own site (issue 15, point 2)."""

from __future__ import annotations

from cloud.core import CloudCore
from cloud.store import Store
from common.effects import CommandsReady, LoadCommands, Received, Send, StoreCommandStatus
from common.protocol import Command, CommandAck, ErrorReply, ForwardRecord, Hello, HelloAck
from common.security_events import PeerKey, RefusedHello

KEY_A, KEY_B, KEY_X = "A" * 40, "B" * 40, "X" * 40
NOW_MS = 1_700_000_000_000


def hello(core: CloudCore, peer: str, gw: str, site: str, now: float = 0.0) -> list:
    return core.handle(Received(peer, Hello(gw, "gateway", site, 1, 1)), now)


def accepted(effects: list) -> bool:
    return any(isinstance(e, Send) and isinstance(e.msg, HelloAck) for e in effects)


def refused(effects: list) -> str:
    (err,) = [e.msg for e in effects if isinstance(e, Send) and isinstance(e.msg, ErrorReply)]
    assert err.code == "identity" and any(isinstance(e, RefusedHello) for e in effects)
    assert not any(isinstance(e, LoadCommands) for e in effects)
    return err.detail


def test_a_named_key_says_hello_only_as_its_gateway_and_site() -> None:
    core = CloudCore()
    core.handle(PeerKey("p-a", KEY_A, "gw-a site-a"), 0.0)
    core.handle(PeerKey("p-x", KEY_X, "gw-x site-a"), 0.0)  # another admitted gateway, of site A
    assert accepted(hello(core, "p-a", "gw-a", "site-a"))
    assert "admitted as 'gw-x'" in refused(hello(core, "p-x", "gw-a", "site-a", 1.0))  # impersonation
    assert "for site 'site-a'" in refused(hello(core, "p-a", "gw-a", "site-b", 2.0))  # a site it is not of
    assert core.peer_of("gw-a") == "p-a" and core.sessions["p-a"].site == "site-a"  # gw-a's session stands
    assert core.counters["hello_refused"] == 2


def test_an_unnamed_key_is_bound_to_its_first_hello_and_cannot_take_another_gateways_id() -> None:
    core = CloudCore()
    core.handle(PeerKey("p-a", KEY_A, ""), 0.0)
    core.handle(PeerKey("p-b", KEY_B, ""), 0.0)
    assert accepted(hello(core, "p-a", "gw-a", "site-a"))
    assert accepted(hello(core, "p-b", "gw-b", "site-b"))
    assert "said Hello as 'gw-b'" in refused(hello(core, "p-b", "gw-a", "site-a", 1.0))
    core.handle(PeerKey("p-x", KEY_X, ""), 1.0)  # a fresh admitted key
    assert "bound to another key" in refused(hello(core, "p-x", "gw-a", "site-a", 1.0))
    assert core.peer_of("gw-a") == "p-a" and core.peer_of("gw-b") == "p-b"  # no session was ended
    core.handle(PeerKey("p-b2", KEY_B, ""), 2.0)  # the same key on a new socket: still only gw-b
    assert "said Hello as 'gw-b'" in refused(hello(core, "p-b2", "gw-a", "site-a", 2.0))
    core.handle(PeerKey("p-a2", KEY_A, ""), 3.0)
    assert "is at site 'site-a'" in refused(hello(core, "p-a2", "gw-a", "site-b", 3.0))
    assert accepted(hello(core, "p-a2", "gw-a", "site-a", 3.0))  # its own reconnect replaces its old session
    assert core.peer_of("gw-a") == "p-a2" and "p-a" not in core.sessions


def test_the_allowlist_may_name_a_new_key_for_a_gateway() -> None:
    core = CloudCore()
    core.handle(PeerKey("p-a", KEY_A, "gw-a"), 0.0)
    assert accepted(hello(core, "p-a", "gw-a", "site-a"))
    core.handle(PeerKey("p-new", KEY_X, "gw-a"), 1.0)  # an operator replaced gw-a's key
    assert accepted(hello(core, "p-new", "gw-a", "site-a", 1.0))


def test_a_gateway_reports_held_only_the_commands_sent_to_it() -> None:
    core = CloudCore()
    for peer, key, gw, site in (("p-a", KEY_A, "gw-a", "site-a"), ("p-b", KEY_B, "gw-b", "site-b")):
        core.handle(PeerKey(peer, key, f"{gw} {site}"), 0.0)
        hello(core, peer, gw, site)
    core.handle(CommandsReady([("gw-b", Command("dev-b", 7, "reboot", {}, NOW_MS))]), 0.5)
    assert not [e for e in core.handle(Received("p-a", CommandAck("dev-b", 7, "held", "")), 1.0)
                if isinstance(e, StoreCommandStatus)]
    assert core.counters["foreign_acks_refused"] == 1
    assert core.handle(Received("p-b", CommandAck("dev-b", 7, "held", "")), 1.0) == [
        StoreCommandStatus("dev-b", 7, "held", "held by gw-b")]


def test_the_store_keeps_no_record_a_gateway_sends_for_another_sites_device(tmp_path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    try:
        store.telemetry.ingest("gw-b", "site-b", [ForwardRecord("dev-b", "bulk", 1, NOW_MS, "env", {"t": 1.0})], NOW_MS)
        store.commands.create_command("dev-b", "reboot", {}, NOW_MS + 60_000, NOW_MS)
        # gw-a (site A) forwards records for dev-b: a future seq (so the real one would be a "duplicate"),
        # a command report, and one for gw-b's own id
        forged = [ForwardRecord("dev-b", "bulk", 2, NOW_MS, "env", {"t": 666.0}),
                  ForwardRecord("dev-b", "state", 0, NOW_MS, "command.status", {"seq": 1, "status": "done", "detail": "x"}),
                  ForwardRecord("dev-a", "bulk", 1, NOW_MS, "env", {"t": 2.0})]
        result = store.telemetry.ingest("gw-a", "site-a", forged, NOW_MS + 1)
        assert result.stored == 1  # dev-a's, of site A
        assert any("'dev-b' refused: it belongs to site 'site-b'" in r for r in result.rejected)
        rows = {d["device_id"]: d for d in store.telemetry.list_devices()}
        assert rows["dev-b"]["site_id"] == "site-b" and rows["dev-b"]["gateway_id"] == "gw-b"
        assert [c["status"] for c in store.commands.list_commands("dev-b")] == ["queued"]
        real = store.telemetry.ingest("gw-b", "site-b", [ForwardRecord("dev-b", "bulk", 2, NOW_MS, "env", {"t": 2.0})],
                                      NOW_MS + 2)
        assert real.stored == 1 and real.duplicates == 0  # the device's own record 2 is kept, not a "duplicate"
    finally:
        store.close()
