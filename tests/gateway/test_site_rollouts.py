"""The gateway's part of rollouts: signed site plans verified, site-gated commands held until released,
the site's engine driving installs from its plan and reporting, its state surviving a restart."""

from __future__ import annotations

import random

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.rollouts.plan import ReleaseInfo, RolloutPlan
from common.rollouts.siteplan import SitePlan, sign_site_plan
from common.effects import UPSTREAM, Persisted, Received, Send, Start
from common.memory_queue import MemoryQueue
from common.protocol import Command, Hello, HelloAck, SitePlanEnvelope, TelemetryBatch, TelemetryRecord, decode_record
from common.signed import key_id_for
from common.streams import GATEWAY_POLICIES
from gateway.core import GatewayCore
from gateway.rollout_effects import DeviceOutcome, ReleaseCommands, SitePlanArrived, SiteReport
from gateway.site_rollouts import SiteRollouts

NOW = 1_780_000_000_000
KEY = Ed25519PrivateKey.generate()
PLAN = RolloutPlan(release=ReleaseInfo("2.0.0"), canary=1, waves=("100%",), soak_s=0, max_installing_per_site=5)


def _blob(approved: int, seq: int, key=KEY, site="site-1", state="running") -> bytes:
    sp = SitePlan("r1", site, PLAN, {"dev-1": 0, "dev-2": 1, "dev-3": 1}, approved, state)
    return sign_site_plan(sp, seq=seq, now_ms=NOW, ttl_ms=86_400_000, key=key, key_id=key_id_for(KEY.public_key()))


def test_core_holds_site_gated_commands_until_released_and_passes_plans_and_outcomes_on():
    outbox = MemoryQueue("outbox", streams=GATEWAY_POLICIES).start()
    commands = MemoryQueue("commands").start()
    core = GatewayCore("gw-1", "site-1", outbox, commands=commands, rng=random.Random(1), site_rollouts=True)
    core.handle(Start(), 0.0)
    core.handle(Received(UPSTREAM, HelloAck("cloud", 1, 1000, 8000)), 0.0)
    core.handle(Received("p1", Hello("dev-1", "device", "site-1", 1, 1)), 0.0)
    gated = Command("dev-1", 3, "update", {"gate": "site", "rollout": "r1"}, NOW + 10**9)
    (append,) = core.handle(Received(UPSTREAM, gated), 1.0)
    effects = core.handle(Persisted(append.token, commands.append_many_sync(append.payloads)), 1.0)
    assert Send("p1", gated) not in effects  # held: the site's rollout has not released dev-1
    assert Send("p1", gated) not in core.handle(Received("p1", Hello("dev-1", "device", "site-1", 1, 1)), 2.0)
    assert core.handle(ReleaseCommands(("dev-1",), 2_500), 3.0) == []  # released too late: the window closed
    assert core.handle(ReleaseCommands(("dev-1",), 3_500), 3.0) == [Send("p1", gated)]
    assert Send("p1", gated) not in core.handle(Received("p1", Hello("dev-1", "device", "site-1", 1, 1)), 4.0)
    assert core.handle(Received(UPSTREAM, SitePlanEnvelope("r1", b"blob")), 3.0) == [SitePlanArrived("r1", b"blob")]
    rec = TelemetryRecord(1, NOW, "update", {"version": "2.0.0", "outcome": "committed", "reason": ""})
    effects = core.handle(Received("p1", TelemetryBatch("dev-1", "critical", 0, [rec])), 5.0)
    assert DeviceOutcome("dev-1", {"version": "2.0.0", "outcome": "committed", "reason": ""}) in effects
    (report,) = core.handle(SiteReport("dev-1", {"rollout": "r1", "state": "succeeded"}), 6.0)
    assert decode_record(report.payloads[0]).kind == "rollout"


def test_site_runs_only_what_a_trusted_plan_approved_and_comes_back_after_a_restart(tmp_path):
    site = SiteRollouts(tmp_path, "site-1", KEY.public_key())
    forged = _blob(1, 5, key=Ed25519PrivateKey.generate())
    assert site.plan(forged, NOW) == [] and site.counters["plans_refused"] == 1
    assert site.plan(_blob(0, 6, site="site-2"), NOW) == [] and site.counters["plans_refused"] == 2  # not ours
    out = site.plan(_blob(0, 7), NOW)
    assert [e.device_ids for e in out if isinstance(e, ReleaseCommands)] == [("dev-1",)]  # the canary, approved
    assert {e.device_id for e in out if isinstance(e, SiteReport)} == {"dev-1", "dev-2", "dev-3"}
    out = site.outcome("dev-1", {"version": "2.0.0", "outcome": "committed"}, NOW + 1000)
    assert not any(isinstance(e, ReleaseCommands) for e in out + site.tick(NOW + 2000))  # wave 1 not approved
    assert site.plan(_blob(1, 7), NOW) == [] and site.counters["plans_refused"] == 3  # a replayed seq
    out = site.plan(_blob(1, 8), NOW + 3000)
    assert [e.device_ids for e in out if isinstance(e, ReleaseCommands)] == [("dev-2", "dev-3")]
    # a restart: the saved plan and engine come back; devices mid-install are released again
    again = SiteRollouts(tmp_path, "site-1", KEY.public_key())
    (released,) = again.load(NOW + 4000)
    assert released.device_ids == ("dev-2", "dev-3") and released.not_after_ms > NOW + 4000
    assert again.plan(_blob(1, 8), NOW + 4000) == []  # the verifier's high-water mark survived too


def test_a_release_delivers_only_the_releasing_rollouts_gated_commands():
    """A device holding gated commands of two rollouts (the first still waiting for a later stage, the
    second releasing it as a canary) gets only the second's: found by the fleet simulation, where the
    older release's command went along and installed outside its approved stage."""
    outbox = MemoryQueue("outbox", streams=GATEWAY_POLICIES).start()
    commands = MemoryQueue("commands").start()
    core = GatewayCore("gw-1", "site-1", outbox, commands=commands, rng=random.Random(1), site_rollouts=True)
    core.handle(Start(), 0.0)
    core.handle(Received(UPSTREAM, HelloAck("cloud", 1, 1000, 8000)), 0.0)
    core.handle(Received("p1", Hello("dev-1", "device", "site-1", 1, 1)), 0.0)
    old = Command("dev-1", 3, "update", {"gate": "site", "rollout": "r1", "version": "2.0.0"}, NOW + 10**9)
    new = Command("dev-1", 4, "update", {"gate": "site", "rollout": "r2", "version": "2.1.0"}, NOW + 10**9)
    for cmd in (old, new):
        (append,) = core.handle(Received(UPSTREAM, cmd), 1.0)
        core.handle(Persisted(append.token, commands.append_many_sync(append.payloads)), 1.0)
    assert core.handle(ReleaseCommands(("dev-1",), 3_500, "r2"), 3.0) == [Send("p1", new)]
    assert core.handle(Received("p1", Hello("dev-1", "device", "site-1", 1, 1)), 3.1)[-1:] == [Send("p1", new)]
    assert core.handle(ReleaseCommands(("dev-1",), 3_500, "r1"), 3.2) == [Send("p1", old)]
    unnamed = Command("dev-2", 1, "update", {"gate": "site"}, NOW + 10**9)  # no rollout named: any release opens it
    core.handle(Received("p2", Hello("dev-2", "device", "site-1", 1, 1)), 3.3)
    (append,) = core.handle(Received(UPSTREAM, unnamed), 3.3)
    core.handle(Persisted(append.token, commands.append_many_sync(append.payloads)), 3.3)
    assert core.handle(ReleaseCommands(("dev-2",), 3_500, "r9"), 3.4) == [Send("p2", unnamed)]
