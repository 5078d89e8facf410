"""The DDI part of the gateway core, sans-IO, with the real command relay (no queue) and a fake clock."""

from __future__ import annotations

import json

import pytest

from common.effects import Append
from common.protocol import Command, decode_record
from common.swu import SwuError, is_swu, member, pack, unpack
from device_agent import simimage
from gateway.command_relay import CommandRelay
from gateway.ddi.api import parse_config_data, parse_feedback, parse_range
from gateway.ddi.core import DdiDevices
from gateway.ddi.events import ArtifactInfo, ArtifactReady, DdiRequest, DdiResponse, PrepareArtifact, SaveDdiState
from gateway.ddi.tokens import DdiTokens, token_hash
from gateway.reports import OUTBOX

NOW = 1_800_000_000.0
BASE = "http://gw:8080/default/controller/v1"
ART = ArtifactInfo("2.0.0", "ab" * 32, "cd" * 20, "ef" * 16, 5000, "swupdate", "release-2.0.0.swu")


def make(held: tuple[Command, ...] | list[Command] = ()) -> tuple[DdiDevices, CommandRelay]:
    relay = CommandRelay(None, connected=lambda d: None)
    for i, c in enumerate(held, 1):
        relay.held.add(i, c)
    tokens = DdiTokens("site-1", 1, {"ddi-1": (token_hash("tok-1"), "ddi-board"), "ddi-2": (token_hash("tok-2"), "ddi-board")})
    return DdiDevices("gw-1", "site-1", relay, tokens, poll_s=30.0), relay


def req(path: str, method: str = "GET", body: object = None, token: str = "tok-1", rid: int = 1, source: str = "10.0.0.5",
        rng: str = "") -> DdiRequest:
    raw = json.dumps(body).encode() if body is not None else b""
    return DdiRequest(rid, method, path, "", f"TargetToken {token}" if token else "", raw, source, "http://gw:8080", rng)


def responses(effects: list) -> list[DdiResponse]:
    return [e for e in effects if isinstance(e, DdiResponse)]


def update(seq: int = 7, expires: float = NOW + 600) -> Command:
    return Command("ddi-1", seq, "update", {"version": "2.0.0", "rollout_version": "2.0.0"}, int(expires * 1000))


def records(effects: list) -> list:
    return [decode_record(e.payloads[0]) for e in effects if isinstance(e, Append) and e.token[0] == "ddi"]


def test_unknown_wrong_device_and_revoked_tokens_get_one_401_and_one_audit_report_a_minute() -> None:
    ddi, _ = make()
    ddi.revoked = lambda: frozenset({"ddi-2"})
    out = ddi.request(req("/default/controller/v1/ddi-1", token="nope"), NOW)
    assert responses(out)[0].status == 401
    audit = [e for e in out if isinstance(e, Append) and e.token == ("report", "ddi.refused")]
    assert len(audit) == 1 and decode_record(audit[0].payloads[0]).values["reason"] == "unknown TargetToken"
    # ddi-1's token for ddi-2's URL, and a revoked device: 401 with the same text, no second report this minute
    for path, token in (("/default/controller/v1/ddi-2", "tok-1"), ("/default/controller/v1/ddi-2", "tok-2")):
        again = ddi.request(req(path, token=token), NOW + 1)
        assert [r.status for r in responses(again)] == [401]
        assert responses(again)[0].body == responses(out)[0].body
        assert not [e for e in again if isinstance(e, Append)]
    assert ddi.counters["ddi_refused"] == 3
    assert [e for e in ddi.request(req("/default/controller/v1/ddi-1", token=""), NOW + 61) if isinstance(e, Append)]


def test_a_source_refused_too_often_is_throttled_before_its_token_is_looked_at() -> None:
    ddi, _ = make()
    for i in range(ddi.refusals_per_minute):
        ddi.request(req("/default/controller/v1/ddi-1", token="bad"), NOW + i / 100)
    out = ddi.request(req("/default/controller/v1/ddi-1"), NOW + 1)  # even a good token: this source waits
    assert responses(out)[0].status == 429 and ddi.counters["ddi_throttled"] == 1
    assert responses(ddi.request(req("/default/controller/v1/ddi-1", source="10.0.0.6"), NOW + 1))[0].status == 200
    assert responses(ddi.request(req("/default/controller/v1/ddi-1"), NOW + 61))[0].status == 200


def test_poll_prepares_the_release_then_offers_the_action_once_it_is_in_the_site_cache() -> None:
    ddi, _ = make([update()])
    first = ddi.request(req("/default/controller/v1/ddi-1"), NOW)
    body = json.loads(responses(first)[0].body)
    assert "deploymentBase" not in body["_links"] and body["_links"]["configData"]["href"] == f"{BASE}/ddi-1/configData"
    assert body["config"]["polling"]["sleep"] == "00:00:02"  # preparing: look again soon
    assert PrepareArtifact("2.0.0", "ddi-board") in first
    assert [r.kind for r in records(first)] == ["ddi.poll"]  # the device is seen (offline alerts)
    saves = [i for i, e in enumerate(first) if isinstance(e, SaveDdiState)]
    appends = [i for i, e in enumerate(first) if isinstance(e, Append)]
    assert saves and saves[0] < appends[0]  # the sequence is saved before its record is appended
    ddi.artifact_ready(ArtifactReady("ddi-board", ART))
    body = json.loads(responses(ddi.request(req("/default/controller/v1/ddi-1"), NOW + 1))[0].body)
    assert body["_links"]["deploymentBase"]["href"].startswith(f"{BASE}/ddi-1/deploymentBase/7")
    assert body["config"]["polling"]["sleep"] == "00:00:30"
    dep = json.loads(responses(ddi.request(req("/default/controller/v1/ddi-1/deploymentBase/7"), NOW + 2))[0].body)
    art = dep["deployment"]["chunks"][0]["artifacts"][0]
    assert (dep["id"], dep["deployment"]["update"], art["size"], art["hashes"]["sha1"]) == ("7", "forced", 5000, ART.sha1)
    assert art["_links"]["download"]["href"] == f"{BASE}/ddi-1/softwaremodules/7/artifacts/release-2.0.0.swu"


def test_a_release_of_another_module_fails_the_action_instead_of_being_offered() -> None:
    ddi, relay = make([update()])
    ddi.request(req("/default/controller/v1/ddi-1"), NOW)
    ddi.artifact_ready(ArtifactReady("ddi-board", ArtifactInfo("2.0.0", ART.sha256, ART.sha1, ART.md5, 5000, "rootfs-image", "x")))
    out = ddi.request(req("/default/controller/v1/ddi-1"), NOW + 1)
    assert "deploymentBase" not in json.loads(responses(out)[0].body).get("_links", {})
    (rec,) = [r for r in records(out) if r.kind == "update"]
    assert rec.values["outcome"] == "failed" and "rootfs-image" in rec.values["reason"]
    tail = ddi.persisted(("ddi", "ddi-1", "critical", rec.seq))
    assert any(isinstance(e, Append) and e.token == ("report", "command") for e in tail) and not relay.held.held


def test_feedback_closed_success_is_committed_once_durable_and_finishes_the_command() -> None:
    ddi, relay = make([update()])
    ddi.request(req("/default/controller/v1/ddi-1"), NOW)
    ddi.artifact_ready(ArtifactReady("ddi-board", ART))
    ddi.request(req("/default/controller/v1/ddi-1"), NOW + 1)
    fb = "/default/controller/v1/ddi-1/deploymentBase/7/feedback"
    progress = {"id": "7", "status": {"execution": "proceeding", "result": {"finished": "none"}, "details": ["dl"]}}
    assert [r.status for r in responses(ddi.request(req(fb, "POST", progress), NOW + 2))] == [200]
    done = {"id": "7", "status": {"execution": "closed", "result": {"finished": "success"}, "details": ["ok"]}}
    out = ddi.request(req(fb, "POST", done, rid=9), NOW + 3)
    assert not responses(out)  # answered only when the record is durable
    (rec,) = records(out)
    assert (rec.stream, rec.kind, rec.values["outcome"], rec.values["running_version"]) == ("critical", "update", "committed", "2.0.0")
    assert isinstance(out[0], SaveDdiState) and json.loads(out[0].blob)["devices"]["ddi-1"]["seq"]["critical"] == rec.seq
    tail = ddi.persisted(("ddi", "ddi-1", "critical", rec.seq))
    assert [r.rid for r in responses(tail)] == [9] and not relay.held.held
    assert ddi.counters["ddi_updated"] == 1
    assert [r.status for r in responses(ddi.request(req(fb, "POST", done), NOW + 4))] == [200]  # a repeat: nothing new
    installed = ddi.request(req("/default/controller/v1/ddi-1/installedBase/7"), NOW + 5)
    assert responses(installed)[0].status == 200


@pytest.mark.parametrize("execution,finished", [("closed", "failure"), ("rejected", "none")])
def test_feedback_failure_is_failed_and_an_append_refused_reopens_the_action(execution: str, finished: str) -> None:
    ddi, relay = make([update()])
    ddi.request(req("/default/controller/v1/ddi-1"), NOW)
    ddi.artifact_ready(ArtifactReady("ddi-board", ART))
    ddi.request(req("/default/controller/v1/ddi-1"), NOW + 1)
    body = {"status": {"execution": execution, "result": {"finished": finished}, "details": ["handler failed"]}}
    out = ddi.request(req("/default/controller/v1/ddi-1/deploymentBase/7/feedback", "POST", body, rid=4), NOW + 2)
    (rec,) = records(out)
    assert rec.values["outcome"] == "failed" and "handler failed" in rec.values["reason"]
    refused = ddi.persist_failed(("ddi", "ddi-1", "critical", rec.seq), "outbox full")
    assert [(r.rid, r.status) for r in responses(refused)] == [(4, 503)]
    assert ddi.devices["ddi-1"]["actions"]["7"]["state"] == "installing" and relay.held.held  # not finished


def test_config_data_is_the_inventory_and_bad_bodies_are_400() -> None:
    ddi, _ = make()
    out = ddi.request(req("/default/controller/v1/ddi-1/configData", "PUT", {"data": {"hwrevision": "1.0"}, "mode": "merge"}), NOW)
    (rec,) = records(out)
    assert (rec.stream, rec.kind, rec.values["update_modules"], rec.values["attr.hwrevision"]) == ("state", "inventory", "swupdate", "1.0")
    assert responses(ddi.request(req("/default/controller/v1/ddi-1/configData", "PUT", [1]), NOW))[0].status == 400
    bad = req("/default/controller/v1/ddi-1/deploymentBase/x/feedback", "POST", {})
    assert responses(ddi.request(bad, NOW))[0].status == 400
    assert responses(ddi.request(req("/other/controller/v1/ddi-1"), NOW))[0].status == 404


def test_download_ranges_and_an_expired_command_becomes_cancel_action() -> None:
    ddi, relay = make([update(expires=NOW + 10)])
    ddi.request(req("/default/controller/v1/ddi-1"), NOW)
    ddi.artifact_ready(ArtifactReady("ddi-board", ART))
    ddi.request(req("/default/controller/v1/ddi-1"), NOW + 1)
    path = "/default/controller/v1/ddi-1/softwaremodules/7/artifacts/release-2.0.0.swu"
    whole = responses(ddi.request(req(path), NOW + 2))[0]
    assert (whole.status, whole.file) == (200, (ART.sha256, 0, 4999))
    part = responses(ddi.request(req(path, rng="bytes=1000-"), NOW + 2))[0]
    assert (part.status, part.file, dict(part.headers)["Content-Range"]) == (206, (ART.sha256, 1000, 4999), "bytes 1000-4999/5000")
    assert responses(ddi.request(req(path, rng="bytes=6000-"), NOW + 2))[0].status == 416
    assert responses(ddi.request(req(path, token="tok-2"), NOW + 2))[0].status == 401  # not ddi-2's
    relay.tick(NOW + 11)  # the command expires at the gateway
    ddi.expired(NOW + 11)
    poll = json.loads(responses(ddi.request(req("/default/controller/v1/ddi-1"), NOW + 12))[0].body)
    assert poll["_links"]["cancelAction"]["href"].endswith("/cancelAction/7")
    cancel = {"status": {"execution": "closed", "result": {"finished": "success"}}}
    ddi.request(req("/default/controller/v1/ddi-1/cancelAction/7/feedback", "POST", cancel), NOW + 13)
    assert "cancelAction" not in json.loads(responses(ddi.request(req("/default/controller/v1/ddi-1"), NOW + 14))[0].body).get("_links", {})


def test_state_is_restored_so_sequences_never_repeat() -> None:
    ddi, _ = make()
    out = ddi.request(req("/default/controller/v1/ddi-1"), NOW)
    saved = next(e for e in out if isinstance(e, SaveDdiState)).blob
    again, _ = make()
    again.load(saved)
    (rec,) = records(again.request(req("/default/controller/v1/ddi-1"), NOW + 120))
    assert rec.seq == 2 and rec.device_id == "ddi-1"
    assert all(e.queue == OUTBOX for e in out if isinstance(e, Append))


def test_api_parsers() -> None:
    assert parse_feedback(b'{"status": {"execution": "closed", "result": {"finished": "success"}}}') == ("closed", "success", [])
    for bad in (b"[]", b"{}", b'{"status": {"execution": "done"}}', b"not json"):
        with pytest.raises(ValueError):
            parse_feedback(bad)
    assert parse_range("", 10) == (0, 9, False) and parse_range("bytes=-3", 10) == (7, 9, True)
    assert parse_range("bytes=2-4", 10) == (2, 4, True) and parse_range("bytes=11-", 10) is None
    assert parse_range("bytes=0-1,4-5", 10) == (0, 9, False)
    with pytest.raises(ValueError):
        parse_config_data(json.dumps({"data": {f"k{i}": "v" for i in range(100)}}).encode())


def test_swu_archives_and_the_simulated_board_reading_one() -> None:
    image = simimage.make("2.0.0", "fail", 4096)
    blob = pack([("sw-description", b"software = {};"), ("sw-description.sig", b"sig"), ("rootfs.img", image)])
    assert is_swu(blob) and [n for n, _ in unpack(blob)] == ["sw-description", "sw-description.sig", "rootfs.img"]
    assert member(blob, "rootfs.img") == image and member(b"junk", "x") is None
    assert simimage.info(blob) == {"version": "2.0.0", "health": "fail"}
    for bad in (b"", b"070701" + b"zz" * 60, blob[:150]):
        with pytest.raises(SwuError):
            unpack(bad)
    assert simimage.info(blob[:150]) is None


def test_tokens_table_round_trips_and_only_newer_versions_replace_it() -> None:
    from common.protocol import DdiCredentials

    t = DdiTokens.from_message(DdiCredentials("site-1", 5, ["a"], [token_hash("x")], ["hw"]))
    back = DdiTokens.from_json(t.to_json())
    assert back.authenticate("TargetToken x", "a", revoked=frozenset()) == ("a", "")
    assert not back.newer(DdiCredentials("site-1", 5, [], [], [])) and back.newer(DdiCredentials("site-1", 6, [], [], []))
    gw = DdiTokens("s", 1, {"a": (token_hash("x"), "hw")}, gateway_token_hash=token_hash("site-secret"))
    assert gw.authenticate("GatewayToken site-secret", "a", revoked=frozenset()) == ("a", "")
    assert gw.authenticate("GatewayToken site-secret", "stranger", revoked=frozenset())[0] is None
    assert gw.authenticate("Basic x", "a", revoked=frozenset())[0] is None
