"""The cloud's rollout service over a real store, behind the real operator API, and the operator CLI."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from click.testing import CliRunner

from cloud.cli.rollouts import rollout
from cloud.http import ApiContext, create_app
from cloud.rollouts.service import RolloutService
from cloud.store import Store
from common.protocol.messages import ForwardRecord

TOKEN = "rollout-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Clock:
    def __init__(self) -> None:
        self.ms = 1_780_000_000_000

    def __call__(self) -> int:
        return self.ms


def _fleet(store: Store) -> None:
    for s in (1, 2):
        store.telemetry.ingest(f"gw-{s}", f"site-{s}",
                     [ForwardRecord(f"d-{s}-{i}", "bulk", 1, 1000, "env", {"t": 1.0}) for i in range(5)], 1000)


def _outcome(device: str, seq: int, outcome: str, version: str = "2.0.0") -> ForwardRecord:
    return ForwardRecord(device, "critical", seq, 2000, "update",
                         {"version": version, "outcome": outcome, "reason": "self-test", "running_version": version})


async def _settle(executor: ThreadPoolExecutor) -> None:
    await asyncio.wrap_future(executor.submit(lambda: None))
    await asyncio.sleep(0)


async def _settle_chains(executor: ThreadPoolExecutor, rounds: int = 10) -> None:
    """Let chains of store-thread work and loop callbacks (a step's commit, then its plans signed and sent)
    run to their end: each round drains the store thread's queue and runs what became ready. Rounds, not
    a clock: a loaded machine makes them slower, never fewer."""
    for _ in range(rounds):
        await _settle(executor)


def _plan(**kw):
    return {"release": {"version": "2.0.0"}, "canary": 2, "waves": ["50%", "100%"], "soak_s": 5, **kw}


@pytest.fixture
def env(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    _fleet(store)
    ex = ThreadPoolExecutor(1)
    yield store, ex
    ex.submit(store.close).result()
    ex.shutdown()


def test_service_drives_a_rollout_through_commands_and_outcomes(env):
    store, ex = env
    clock = Clock()
    pushed: list[tuple[str, int]] = []

    async def run():
        svc = RolloutService(store.rollouts, ex, lambda d, s: pushed.append((d, s)), commands=store.commands,
                             releases=store.releases, telemetry=store.telemetry, now_ms=clock)
        app = create_app(ApiContext(store, TOKEN, executor=ex, rollouts=svc))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            r = await http.post("/v1/rollouts", json={"plan": _plan(), "install_args": {"manifest": "/m", "image": "/i"}},
                                headers=AUTH)
            assert r.status_code == 201, r.text
            view = r.json()
            assert view["state"] == "running" and view["totals"] == {"installing": 2, "pending": 8}
            canary = [d["device_id"] for d in view["devices"] if d["stage"] == 0]
            await _settle(ex)
            assert sorted(d for d, _ in pushed) == sorted(canary)  # commands were created, then pushed
            cmds = store.commands.list_commands(canary[0])
            assert cmds[-1]["name"] == "update" and cmds[-1]["args"]["manifest"] == "/m"
            assert int(cmds[-1]["args"]["install_by_ms"]) >= cmds[-1]["expires_ms"] - 1000  # the device's deadline
            # outcomes arrive as committed update records
            seq = 10
            for rnd in range(6):
                installing = [d["device_id"] for d in (await http.get("/v1/rollouts/r1", headers=AUTH)).json()["devices"]
                              if d["state"] == "installing"]
                by_site: dict[str, list] = {}
                for d in installing:
                    seq += 1
                    by_site.setdefault("site-" + d.split("-")[1], []).append(_outcome(d, seq, "committed"))
                for site, recs in by_site.items():
                    svc.observe_batch(site, recs)
                await _settle(ex)
                clock.ms += 6_000
                svc.tick()
                await _settle(ex)
            final = (await http.get("/v1/rollouts/r1", headers=AUTH)).json()
            assert final["state"] == "completed", final["reason"]
            assert final["totals"] == {"succeeded": 10}
            assert set(final["progress"]) == {"canary", "wave 1", "wave 2"}
            listed = (await http.get("/v1/rollouts", headers=AUTH)).json()["rollouts"]
            assert [r["id"] for r in listed] == ["r1"]
            # a finished rollout cannot be paused: 409 naming it
            r = await http.post("/v1/rollouts/r1/pause", headers=AUTH)
            assert r.status_code == 409 and "r1" in r.json()["detail"]
            r = await http.get("/v1/rollouts/nope", headers=AUTH)
            assert r.status_code == 404 and r.json()["error"] == "not_found"
            r = await http.post("/v1/rollouts", json={"plan": {"release": {}}}, headers=AUTH)
            assert r.status_code == 422 and "release.version" in r.json()["detail"]  # the request model says so

    asyncio.run(run())


def test_failing_canary_pauses_and_abort_reverts_and_a_second_rollout_is_held_off(env):
    store, ex = env
    clock = Clock()
    pushed: list[tuple[str, int]] = []

    async def run():
        svc = RolloutService(store.rollouts, ex, lambda d, s: pushed.append((d, s)), commands=store.commands,
                             releases=store.releases, telemetry=store.telemetry, now_ms=clock)
        first = await svc.create({"plan": _plan(canary=3, failure="2")})
        canary = [d["device_id"] for d in first["devices"] if d["stage"] == 0]
        svc.observe_batch("site-1", [_outcome(canary[0], 50, "committed")])
        svc.observe_batch("site-1", [_outcome(canary[1], 51, "rolled_back", "2.0.0")])
        svc.observe_batch("site-1", [_outcome(canary[2], 52, "rolled_back")])
        await _settle(ex)
        clock.ms += 1000
        svc.tick()
        await _settle(ex)
        view = await svc.show("r1")
        assert view["state"] == "paused" and "failure threshold 2" in view["reason"]
        assert all(d["state"] == "pending" for d in view["devices"] if d["stage"] > 0)
        # a second rollout: every device but the skipped ones is held by r1 (the older one)
        second = await svc.create({"plan": {**_plan(), "release": {"version": "2.1.0"}}, "id": "r-next"})
        assert all(d["state"] == "skipped" and "held by rollout r1" in d["reason"] for d in second["devices"])
        n = len(pushed)
        aborted = await svc.control("r1", "abort", revert=True)
        assert aborted["state"] == "aborted" and aborted["counters"]["reverts"] == 1
        await _settle(ex)
        assert pushed[n:] == [(canary[0], store.commands.list_commands(canary[0])[-1]["seq"])]
        assert store.commands.list_commands(canary[0])[-1]["name"] == "rollback"

    asyncio.run(run())


def test_cli_create_show_list_pause_resume_abort(env, monkeypatch):
    store, ex = env
    clock = Clock()

    async def serve(port_box, stop):
        from cloud.http import serve_api

        svc = RolloutService(store.rollouts, ex, lambda d, s: None, commands=store.commands,
                             releases=store.releases, telemetry=store.telemetry, now_ms=clock)
        app = create_app(ApiContext(store, TOKEN, executor=ex, rollouts=svc))
        api = await serve_api(app, "127.0.0.1", 0)
        port_box.append(api.port)
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await api.stop()

    import threading

    port_box: list[int] = []
    stop = threading.Event()
    t = threading.Thread(target=lambda: asyncio.run(serve(port_box, stop)))
    t.start()
    try:
        while not port_box:
            pass
        base = ["--api", f"http://127.0.0.1:{port_box[0]}", "--token", TOKEN]
        cli = CliRunner()
        out = cli.invoke(rollout, ["create", "--release", "2.0.0", "--canary", "2", "--soak", "5",
                                   "--window", "0 2 * * */3600", "--tz", "Europe/Berlin", *base])
        assert out.exit_code == 0, out.output
        assert "rollout r1 of release 2.0.0: running, 10 devices targeted" in out.output
        out = cli.invoke(rollout, ["show", "r1", *base, "--json"])
        view = json.loads(out.output)
        assert view["plan"]["windows"] == {"*": [["0 2 * * *", 3600.0]]} and view["plan"]["timezones"] == {"*": "Europe/Berlin"}
        out = cli.invoke(rollout, ["show", "r1", *base])
        assert "canary" in out.output and "site-1" in out.output
        assert "r1" in cli.invoke(rollout, ["list", *base]).output
        assert "paused" in cli.invoke(rollout, ["pause", "r1", *base]).output
        assert "running" in cli.invoke(rollout, ["resume", "r1", *base]).output
        out = cli.invoke(rollout, ["abort", "r1", *base])
        assert "aborted" in out.output and "no new installs will start" in out.output
        out = cli.invoke(rollout, ["pause", "r1", *base])
        assert out.exit_code == 2 and "r1 is aborted" in out.output
        out = cli.invoke(rollout, ["create", "--release", "2.0.0", "--failure", "lots", *base])
        assert out.exit_code == 2 and "neither a count" in out.output
    finally:
        stop.set()
        t.join()


def test_a_restarted_service_carries_on_and_versions_reported_by_devices_are_respected(env):
    store, ex = env
    clock = Clock()
    # d-1-0 already reported running 3.0.0: a rollout of 2.0.0 must not take it back
    store.telemetry.ingest("gw-1", "site-1", [ForwardRecord("d-1-0", "critical", 5, 1500, "update",
                                                  {"version": "3.0.0", "outcome": "committed", "reason": "",
                                                   "running_version": "3.0.0"})], 1500)

    async def first():
        svc = RolloutService(store.rollouts, ex, lambda d, s: None, commands=store.commands,
                             releases=store.releases, telemetry=store.telemetry, now_ms=clock)
        view = await svc.create({"plan": _plan(canary=1)})
        skipped = {d["device_id"]: d["reason"] for d in view["devices"] if d["state"] == "skipped"}
        assert list(skipped) == ["d-1-0"] and "newer than 2.0.0" in skipped["d-1-0"]
        return [d["device_id"] for d in view["devices"] if d["state"] == "installing"]

    canary = asyncio.run(first())

    async def second():  # the cloud restarted: the engine comes back from the store and goes on
        svc = RolloutService(store.rollouts, ex, lambda d, s: None, commands=store.commands,
                             releases=store.releases, telemetry=store.telemetry, now_ms=clock)
        assert await svc.restore() == 1
        svc.observe_batch("site-x", [_outcome(canary[0], 60, "committed")])
        await _settle(ex)
        clock.ms += 10_000
        svc.tick()
        await _settle(ex)
        view = await svc.show("r1")
        assert view["stage"] == "wave 1" and view["totals"]["succeeded"] == 1

    asyncio.run(second())


def test_coordinated_rollout_gates_commands_signs_site_plans_and_takes_site_reports(env, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from common.protocol import SitePlanEnvelope
    from common.rollouts.siteplan import verify_site_plan
    from common.signed import EnvelopeVerifier, key_id_for

    store, ex = env
    clock = Clock()
    key = Ed25519PrivateKey.generate()
    sent: list[tuple[str, object]] = []

    async def run():
        svc = RolloutService(store.rollouts, ex, lambda d, s: None, commands=store.commands,
                             releases=store.releases, telemetry=store.telemetry, now_ms=clock, signing_key=key,
                             send_to_gateway=lambda gw, msg: sent.append((gw, msg)))
        view = await svc.create({"plan": _plan(site_autonomy=True), "install_args": {"manifest": "/m"}})
        await _settle(ex)
        cmds = {d: store.commands.list_commands(d)[-1] for d in (f"d-{s}-{i}" for s in (1, 2) for i in range(5))}
        assert all(c["name"] == "update" and c["args"]["gate"] == "site" for c in cmds.values())
        assert view["totals"] == {"pending": 10}  # the coordinator drives nothing itself
        by_gw = {gw: m for gw, m in sent}
        assert set(by_gw) == {"gw-1", "gw-2"} and all(isinstance(m, SitePlanEnvelope) for m in by_gw.values())
        verifier = EnvelopeVerifier({key_id_for(key.public_key()): key.public_key()})
        sp = verify_site_plan(verifier, by_gw["gw-1"].blob, "site-1", clock.ms)
        assert set(sp.stages) == {f"d-1-{i}" for i in range(5)} and sp.approved_stage == 0
        # site-1 reports its canary device succeeded: the coordinator takes the state
        canary = [d["device_id"] for d in view["devices"] if d["stage"] == 0]
        reports = [ForwardRecord(d, "critical", 0, 3000, "rollout", {"rollout": "r1", "state": "succeeded", "reason": ""})
                   for d in canary]
        svc.observe_batch("site-1", reports)
        await _settle(ex)
        clock.ms += 6_000
        n = len(sent)
        svc.tick()
        await _settle_chains(ex)
        shown = await svc.show("r1")
        assert shown["stage"] == "wave 1" and shown["totals"]["succeeded"] == 2
        assert len(sent) > n  # the approval of wave 1 went out as new signed plans
        latest = verify_site_plan(verifier, sent[-1][1].blob, "site-2" if sent[-1][0] == "gw-2" else "site-1", clock.ms)
        assert latest.approved_stage == 1
        # a newcomer joins: its gated command is made and it is in the next plans
        store.telemetry.ingest("gw-2", "site-2", [ForwardRecord("d-2-new", "bulk", 1, 4000, "env", {})], 4000)
        svc.observe_batch("site-2", [ForwardRecord("d-2-new", "bulk", 1, 4000, "env", {})])
        await _settle_chains(ex)
        assert store.commands.list_commands("d-2-new")[-1]["args"]["gate"] == "site"

    asyncio.run(run())


def test_telemetry_feeds_the_health_gate_metric_rules_and_reboots(env):
    store, ex = env
    clock = Clock()

    async def run():
        svc = RolloutService(store.rollouts, ex, lambda d, s: None, commands=store.commands,
                             releases=store.releases, telemetry=store.telemetry, now_ms=clock)
        view = await svc.create({"plan": _plan(canary=2, soak_s=60, metric_rules=["cpu_percent < 90"])})
        canary = [d["device_id"] for d in view["devices"] if d["stage"] == 0]
        for i, d in enumerate(canary):
            svc.observe_batch("s", [_outcome(d, 70 + i, "committed"),
                                    ForwardRecord(d, "bulk", 80, 5000, "metrics", {"uptime_s": 500.0, "cpu_percent": 20.0})])
        await _settle(ex)
        svc.observe_batch("s", [ForwardRecord(canary[0], "bulk", 81, 6000, "metrics", {"uptime_s": 3.0, "cpu_percent": 20.0}),
                                ForwardRecord(canary[1], "bulk", 81, 6000, "metrics", {"uptime_s": 560.0, "cpu_percent": 97.5})])
        await _settle(ex)
        clock.ms += 61_000
        svc.tick()
        await _settle(ex)
        shown = await svc.show("r1")
        assert shown["state"] == "paused" and "health gate: 2 of 2 updated devices unhealthy" in shown["reason"]
        engine = svc.engines["r1"]
        assert {engine.devices[d].unhealthy for d in canary} == {"rebooted unexpectedly", "broke cpu_percent < 90"}

    asyncio.run(run())


def test_devices_whose_inventory_lacks_the_releases_update_module_are_skipped(env):
    store, ex = env
    store.telemetry.ingest("gw-1", "site-1", [
        ForwardRecord("d-1-0", "state", 7, 1500, "inventory", {"model": "board-a", "update_modules": "rootfs-image,swupdate"}),
        ForwardRecord("d-1-1", "state", 7, 1500, "inventory", {"model": "board-a", "update_modules": "rootfs-image,file"}),
    ], 1500)

    async def run():
        svc = RolloutService(store.rollouts, ex, lambda d, s: None, commands=store.commands,
                             releases=store.releases, telemetry=store.telemetry, now_ms=Clock())
        view = await svc.preview({"plan": _plan(release={"version": "2.0.0", "module": "file"})})
        assert list(view["skipped"]) == ["d-1-0"], view["skipped"]
        assert "update module 'file'" in view["skipped"]["d-1-0"]

    asyncio.run(run())


def test_an_install_command_carries_the_deadline_the_device_checks():
    from common.install_deadline import install_deadline_ms
    from common.rollouts import Install
    from common.rollouts.windows import install_deadline_args
    from cloud.rollouts.service import install_command

    name, args, expires = install_command(Install("d-1", "site-1", "2.0.0", False, 90_000), {}, 1_000)
    assert (name, args, expires) == ("update", {"version": "2.0.0", "rollout_version": "2.0.0",
                                                "install_by_ms": "90000"}, 90_000)
    windows = install_deadline_args({"site-1": (("0 12 * * *", 3600.0),)}, {"site-1": "UTC"}, "site-1")
    _, gated, _ = install_command(Install("d-1", "site-1", "2.0.0", False, 10**13), {}, 1_000, windows)
    assert "install_by_ms" not in gated and install_deadline_ms(gated, 43_200_000 + 1) == 46_800_000  # day 1, 13:00
    _, old, _ = install_command(Install("d-1", "site-9", "2.0.0", False, 10**13), {}, 1_000, {})  # always open
    assert install_deadline_ms(old, 1_000) is None
