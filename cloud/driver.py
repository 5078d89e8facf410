"""The cloud's process: its core on asyncio, a ROUTER for gateways, the store on one thread, the operator API.

Gateways are admitted by CURVE key from ``allowed_gateways`` in the data
directory. Every store call runs on one dedicated thread, in order, so the
event loop never blocks on the database and commits happen in the order the
core asked for them; the operator API's calls go ahead of queued work on that
thread (``cloud.store_thread``), so a backlog being drained does not stall
``sites show``. The HTTP API is served by uvicorn in the same loop.
Alerts: the alert service (``cloud.alerts.service``) hears every committed batch and
every gateway session touch, is ticked every ``alert_tick_s``, and its alert
rows are saved on the store thread before their events go to the webhooks
(``cloud.alerts.webhooks``: a down webhook delays nothing but its own deliveries).
Fleet jobs (``cloud.fleet.jobs``, on apscheduler): metric retention, pushing changed desired configs,
the ghost and lifecycle inputs of the alert service, published releases for the firmware rule.
Firmware releases (``cloud.releases.service``): images and deltas under DATA_DIR/artifacts,
deltas computed in a process pool, published once a key in ``release_keys`` signed them.
Rollouts (``cloud.rollouts.service``): ticked every ``rollout_tick_s``, fed every committed batch.
Ingest: forwarded batches waiting for the store thread are written together, one transaction for many
gateways' batches (``cloud.store_thread.IngestQueue``); metric points and rollups are folded from the
stored telemetry by the metrics follower every ``metrics_follow_s``, off the acknowledgement path.
N coordinators over one PostgreSQL (``cloud.coordination``, docs/DEPLOY.md): leader-only work runs fenced on
the leader, which tails the store; commands and site plans for a gateway held elsewhere wake its coordinator.
After binding, ``endpoints.json`` names the gateway endpoint, the API URL and
the cloud's public key; ``api_token`` (0600) holds the operator token.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time

import httpx
import zmq.asyncio

from cloud.alerts.service import AlertService, TickResult, site_alert_event
from cloud.console import mount as mount_console
from cloud.metrics import CloudMetrics
from cloud.http.prometheus import serve_metrics
from cloud.http import ApiContext, ApiHooks, FleetOptions, create_app, serve_api
from cloud.releases.artifacts import ArtifactStore
from cloud.fleet import lifecycle
from cloud.config import CloudConfig, ensure_api_token, security_service
from cloud.coordination import Coordination
from cloud.coordination.forward import install as forward_to_leader
from cloud.coordination.leader_feed import LeaderFeed
from cloud.coordination.plans import PLANS_CHANNEL, send_site_plans
from cloud.core import CloudCore, DdiCredentialsChanged
from cloud.metrics_follower import MetricsFollower
from cloud.releases.firmware import FirmwareService
from cloud.fleet.jobs import make_day_partitions, start_fleet_jobs
from cloud.releases.plan import load_release_keys
from cloud.releases.service import ReleaseService
from cloud.rollouts.service import RolloutService, load_or_create_rollout_key
from cloud.security.service import SecurityService
from cloud.security.service import Actor
from cloud.store import Store
from cloud.store_thread import IngestLanes, StoreThread
from cloud.alerts.webhooks import WebhookSender
from common.effects import CommandsReady, Firmware, LoadCommands, Start, StoreCommandStatus, Stored, StoreIngest, StoreTouch
from common.errors import StoreError
from common.keys import Allowlist, load_or_create_keypair, start_authenticator, write_atomic
from common.process import kill_children, stop_on_signals
from common.protocol import Command
from common.protocol.messages import DdiCredentials, KeyRotation
from common.runner import NodeRunner
from common.sockets import ServerSocket
from common.security_events import EnrollDecide, EnrollDecided, GatewayVerified, PeerKey, RefusedHello, RevocationsChanged, VerifyGateway
from common.uplink import LIVENESS

__all__ = ["CloudConfig", "ensure_api_token", "run_cloud"]

log = logging.getLogger("edgefleet.cloud")
REVOCATION_RESIGN_S = 24 * 3600.0  # well within common.revocation's 7-day acceptance window
GC_THRESHOLDS = (200_000, 10, 10)  # allocations between young collections (CPython: 700), young per middle, middle per full
TOUCH_EVERY_S = 0.25  # gateways heard (Hello, Heartbeat) are written together at most this often


async def run_cloud(cfg: CloudConfig, stop: asyncio.Event | None = None) -> dict[str, int]:
    """Run until ``stop`` is set (SIGTERM/SIGINT set it when run from the CLI)."""
    stop = stop or asyncio.Event()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    keys = load_or_create_keypair(cfg.data_dir)
    token = ensure_api_token(cfg.data_dir)
    release_keys = load_release_keys(cfg.release_keys)  # a bad key file is a ConfigError before anything starts
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the webhook sender logs what matters
    http = httpx.AsyncClient()
    try:
        webhooks = WebhookSender(cfg.webhooks, client=http)  # a bad URL is a ConfigError before anything starts
    except BaseException:
        await http.aclose()
        raise
    metrics = CloudMetrics()
    store_thread = StoreThread()  # one thread; the operator API's calls go ahead of the backlog (``.urgent``)
    loop = asyncio.get_running_loop()
    store = await loop.run_in_executor(store_thread, Store.open, cfg.database or f"sqlite:///{cfg.data_dir / 'cloud.db'}")
    await loop.run_in_executor(store_thread, make_day_partitions, store, cfg.fleet.partitions_ahead_days, _now_ms())
    artifacts = ArtifactStore(cfg.data_dir / "artifacts")
    releases = ReleaseService(store.releases, artifacts, release_keys, cfg.releases, store_executor=store_thread)
    releases.start()
    security = security_service(cfg, store)
    allow = Allowlist(cfg.data_dir / "allowed_gateways")
    ctx = zmq.asyncio.Context()
    auth = start_authenticator(ctx, allow)
    coord = Coordination(store.db, cfg.coordinator_id, settings=cfg.lease,
                         on_lead=lambda token: on_lead(token), on_follow=lambda why: on_follow(why),
                         on_wake=lambda gw: on_wake(gw), on_tail=lambda rows: feed.telemetry(rows),
                         on_gateways=lambda rows: feed.gateways(rows), on_plans=lambda gw: plans_for(gw))
    multi = coord.multi
    store.telemetry.on_ingest_id = coord.own_ingest  # the leader notes its own batches (it feeds them itself)
    # leader-only work, fenced (refused once another coordinator holds the lease), ahead of an ingest backlog
    leader_exec = coord.fenced(store_thread.urgent)
    core = CloudCore(heartbeat_s=cfg.heartbeat_s, require_gateway_certs=cfg.require_gateway_certs,
                     verify_gateways=bool(cfg.ca_dir), **({"command_retry_s": cfg.command_poll_s} if multi else {}))
    alerts = AlertService(cfg.alerts, liveness_ms=int(LIVENESS * cfg.heartbeat_s * 1000))
    webhooks.start()
    timers: dict[str, asyncio.TimerHandle] = {}
    leader_work: dict[str, object] = {}
    runner: NodeRunner

    def settle(then, what: str):
        """The done callback calling ``then(result)`` on the loop; a StoreError is logged (what it concerned
        is retried by its protocol: an unacknowledged batch is resent)."""

        def done(fut: asyncio.Future) -> None:
            if fut.cancelled():  # the cloud is stopping: it never ran, so nothing is acknowledged
                return
            exc = fut.exception()
            if exc is None:
                then(fut.result())
            elif isinstance(exc, StoreError):
                log.error(what, extra={"error": str(exc)})
            else:
                raise exc

        return done

    def on_store(call, then, what: str, executor=store_thread) -> None:
        """Run ``call`` on the store thread (or ``executor``), then ``then(result)`` on the loop (``settle``)."""
        loop.run_in_executor(executor, call).add_done_callback(settle(then, what))

    # the batches waiting go as one transaction, over ingest_writers lanes on PostgreSQL (cloud.store_thread)
    ingests = IngestLanes(store_thread, cfg.ingest_writers if multi else 1, lambda b: store.ingest_many(b, _now_ms()))
    # on the leader, behind the ingests (fenced: a deposed leader's step is refused)
    follower = MetricsFollower(lambda rows: store.follow_metrics(rows), coord.fenced(store_thread), lambda: ingests.writes,
                               interval_s=cfg.metrics_follow_s, running=lambda: coord.leader)

    def audit_refusals(gateway_id: str, refused: tuple[tuple[str, int, str], ...]) -> None:
        for device_id, seq, why in refused:
            security.audit(Actor(device_id, f"via {gateway_id}"), "command.refused", f"{device_id} command {seq}", False,
                           why, _now_ms())

    def audit_ddi(gateway_id: str, records: list) -> None:
        for r in records:
            v = r.values
            security.audit(Actor(f"ddi:{v.get('source', '?')}", f"via {gateway_id}"), "ddi.refused", r.device_id, False,
                           f"{v.get('count', 1)} refused in a minute: {v.get('reason', '')}", r.ts_ms)

    def observe(gateway_id: str, site: str, records: list) -> None:  # a committed batch, heard by the leader
        alerts.observe_batch(gateway_id, records, _now_ms())
        rollouts.observe_batch(site, records)

    def ingest(effect: StoreIngest) -> None:
        arrived = time.monotonic()

        def stored(result) -> None:
            metrics.observe_ingest(time.monotonic() - arrived, effect.records, result.stored, result.duplicates)
            for why in result.rejected:
                log.error("store rejected a record", extra={"gateway": effect.gateway_id, "error": why})
            runner.feed(Stored(effect.token, result.stored, result.duplicates))
            if not multi:
                observe(effect.gateway_id, effect.site, effect.records)
            elif coord.fed_here(result.ingest_id):  # the leader's own batch: its tail leaves these rows out
                records = [r for r in effect.records if r.seq > 0]  # what the tail would read (status: from gateways)
                coord.feed_own(result.ingest_id, effect.gateway_id,  # in order after the tail's earlier rows
                               lambda: observe(effect.gateway_id, effect.site, records))
            # else: the leader (this coordinator or another) hears the batch from its tail (on_tail)
            refused_ddi = [r for r in effect.records if r.seq == 0 and r.kind == "ddi.refused"]
            if refused_ddi and security is not None:  # a gateway refused DDI requests: unknown or revoked tokens
                on_store(lambda: audit_ddi(effect.gateway_id, refused_ddi), lambda _: None, "auditing DDI refusals failed")
            if result.refused_commands and security is not None:  # a device refused a command: forged? replayed?
                on_store(lambda: audit_refusals(effect.gateway_id, result.refused_commands), lambda _: None,
                         "auditing refused commands failed")
            for row in result.site_alerts:  # raised by a gateway while its uplink was down: stored, now announced
                event = site_alert_event(row)
                log.info(f"site alert {event.event}", extra={"alert": event.alert_id, "gateway": effect.gateway_id})
                webhooks.submit(event)

        fut = ingests.submit(effect.gateway_id, (effect.gateway_id, effect.site, effect.records), len(effect.records))
        asyncio.wrap_future(fut, loop=loop).add_done_callback(settle(stored, f"store refused a batch from {effect.gateway_id}"))

    touched: dict[str, str] = {}  # gateway -> site, heard since the last write: one transaction for all of them

    def touch(effect: StoreTouch) -> None:
        if not multi:  # with N coordinators the leader sees gateways from the store
            alerts.observe_gateway(effect.gateway_id, _now_ms())
        if not touched:
            timers["touch"] = loop.call_later(TOUCH_EVERY_S, write_touches)
        touched[effect.gateway_id] = effect.site

    def write_touches() -> None:
        seen = list(touched.items())
        touched.clear()
        on_store(lambda: store.touch_gateways(seen, _now_ms()), lambda _: None, "gateway touch failed")

    def load_commands(effect: LoadCommands, hello: bool = True) -> None:
        if multi and hello:  # the leader feeds its batches itself only once its tail handed out the earlier ones
            coord.arrived(effect.gateway_id, _now_ms())

        def query() -> list[tuple[str, Command]]:
            if multi and hello:  # this coordinator holds the gateway's session now: its commands come here
                coord.session_up(effect.gateway_id, _now_ms())
            store.expire_commands(_now_ms())
            return [(effect.gateway_id, _command(r, security)) for r in store.commands_for_gateway(effect.gateway_id, ("queued",))]

        on_store(query, lambda cmds: runner.feed(CommandsReady(cmds)), "loading commands failed")
        if hello:  # the newest site plans of coordinated rollouts, again (a follower loads them from the store)
            rollouts.gateway_hello(effect.gateway_id) if coord.leader else plans_for(effect.gateway_id)

    def plans_for(gateway_id: str) -> None:
        if multi and not coord.leader and core.peer_of(gateway_id) is not None:
            leader_work[f"plans:{gateway_id}"] = asyncio.ensure_future(send_site_plans(rollouts, gateway_id))

    def send_plan(gateway_id: str, msg: object) -> None:
        runner.feed(CommandsReady([(gateway_id, msg)]))
        if multi and core.peer_of(gateway_id) is None:  # held by a follower: it sends the plans from the store
            on_store(lambda: coord.wake([gateway_id], PLANS_CHANNEL), lambda _: None, "waking for site plans failed")

    def on_wake(gateway_id: str) -> None:  # another coordinator made a command for this gateway: send it if here
        if core.peer_of(gateway_id) is not None:
            load_commands(LoadCommands(gateway_id), hello=False)

    def command_status(effect: StoreCommandStatus) -> None:
        call = lambda: store.mark_command(effect.device_id, effect.seq, effect.status, effect.detail, _now_ms())  # noqa: E731
        on_store(call, lambda _: None, "recording a command status failed")

    def on_command(device_id: str, seq: int) -> None:
        """A command was just created through the API: send it now if its gateway is connected."""

        def query() -> list[tuple[str, Command]]:
            gateway_id = store.device_gateway(device_id)
            rows = [r for r in store.commands_for([device_id], ("queued",)) if r["seq"] == seq]
            return [(gateway_id, _command(r, security)) for r in rows] if gateway_id else []

        on_store(query, lambda cmds: sent_or_wake(cmds), "loading a new command failed")

    def sent_or_wake(cmds: list[tuple[str, Command]]) -> None:
        runner.feed(CommandsReady(cmds))
        away = sorted({gw for gw, _ in cmds if core.peer_of(gw) is None})
        if away and multi:  # its gateway's session is on another coordinator (or nowhere yet): wake them
            on_store(lambda: coord.wake(away), lambda _: None, "waking the coordinators failed")

    def on_lead(token: int) -> None:
        """This coordinator leads (on SQLite: from the start): restore what the leader keeps, start its work."""
        now = _now_ms()
        on_store(lambda: (store.list_alerts("open", limit=10_000), store.active_silences(now)),
                 lambda rows: alerts.restore(*rows, now), "restoring alerts failed")
        if multi:  # the engines as the last leader left them in the store, before the tail feeds them
            rollouts.engines.clear()
            coord.tail_held = True
            leader_work["restore"] = task = asyncio.ensure_future(rollouts.restore())
            task.add_done_callback(lambda t: setattr(coord, "tail_held", False) if not t.cancelled() else None)
        resign_revocations()
        refresh_maintenance()
        alert_tick()
        rollout_tick()
        follower.start()  # one follower folds every coordinator's stored telemetry
        leader_work["fleet"] = start_fleet_jobs(cfg.fleet, store, leader_exec, alerts, on_command, _now_ms)

    def on_follow(reason: str) -> None:
        follower.stop()
        for name in ("revocations", "maintenance", "alerts", "rollouts"):
            if name in timers:
                timers.pop(name).cancel()
        fleet = leader_work.pop("fleet", None)
        if fleet is not None:
            fleet.stop()  # type: ignore[attr-defined]
        rollouts.engines.clear()

    def alert_tick() -> None:
        timers["alerts"] = loop.call_later(cfg.alert_tick_s, alert_tick)
        out = alerts.tick(_now_ms())
        if out.rows or out.events:
            loop.run_in_executor(leader_exec, store.save_alerts, out.rows).add_done_callback(
                lambda fut: None if fut.cancelled() else deliver(out, fut.exception())
            )

    def deliver(out: TickResult, exc: BaseException | None) -> None:
        """After the rows' commit: the events go out even if the store refused them (an alert matters more
        than its record; the service offers the rows again)."""
        if exc is not None:
            alerts.persist_failed(out.rows)
            log.error("saving alerts failed", extra={"error": str(exc), "alerts": len(out.rows)})
        for event in out.events:
            about = {"alert": event.alert_id, "rule": event.rule, "subject": event.subject}
            log.info(f"alert {event.event}", extra=about)
            webhooks.submit(event)

    def rollout_tick() -> None:
        timers["rollouts"] = loop.call_later(cfg.rollout_tick_s, rollout_tick)
        rollouts.tick()

    def refresh_maintenance() -> None:
        timers["maintenance"] = loop.call_later(cfg.maintenance_refresh_s, refresh_maintenance)
        # maintenance suppresses alerts, and a retired device raises none (cloud.fleet.lifecycle.eligible_for_alerts)
        in_maintenance = lambda: store.devices_in_state("maintenance") + store.devices_in_state("retired")  # noqa: E731
        on_store(in_maintenance, alerts.set_maintenance, "reading devices in maintenance failed")
        if multi:  # silences made through another coordinator's API
            silences = lambda rows: [alerts.silence(r["target"], r["until_ms"]) for r in rows]  # noqa: E731
            on_store(lambda: store.active_silences(_now_ms()), silences, "reading silences failed")

    def enroll(effect: EnrollDecide) -> None:
        decide = security.rotate if isinstance(effect.request, KeyRotation) else security.enroll
        call = lambda: decide(effect.request, gateway_id=effect.gateway_id, gateway_site=effect.site, now_ms=_now_ms())  # noqa: E731
        on_store(call, lambda reply: runner.feed(EnrollDecided(effect.peer, reply)), "enrollment failed")

    def revocations_changed(blob: bytes) -> None:
        runner.feed(RevocationsChanged(blob))

    def ddi_tokens_changed(site: str) -> None:
        """A site's DDI tokens changed (or the cloud starts): its gateways get the live table."""
        def load() -> DdiCredentials:
            version, rows = store.ddi.site_credentials(site)
            return DdiCredentials(site, version, [r["device_id"] for r in rows], [r["token_sha256"] for r in rows],
                                  [r["hw"] for r in rows])

        on_store(load, lambda msg: runner.feed(DdiCredentialsChanged(msg)), "reading DDI tokens failed")

    def resign_revocations() -> None:
        """The list's signature expires (so a gateway cannot be fed a stale one forever): sign it afresh daily."""
        timers["revocations"] = loop.call_later(REVOCATION_RESIGN_S, resign_revocations)
        on_store(lambda: security.sign_revocations(None, _now_ms()), revocations_changed, "signing revocations failed",
                 leader_exec)

    def refused_hello(effect: RefusedHello) -> None:
        """A key said Hello as a gateway (or site) it is not bound to: the audit log keeps who tried what."""
        if security is not None:
            on_store(lambda: security.audit(Actor(f"key:{effect.curve_key}", "gateway socket"), "gateway.hello",
                                            effect.node_id, False, f"site {effect.site!r}: {effect.reason}", _now_ms()),
                     lambda _: None, "auditing a refused Hello failed")

    def verify_gateway(effect: VerifyGateway) -> None:
        def call() -> GatewayVerified:
            who = {"curve_key": effect.curve_key, "gateway_id": effect.gateway_id, "site": effect.site, "now_ms": _now_ms()}
            problem = security.verify_gateway(effect.certificate, **who)
            return GatewayVerified(effect.peer, problem, b"" if problem else security.renew_gateway(effect.certificate, **who))

        on_store(call, runner.feed, "verifying a gateway failed")

    # each gateway's handshake key and its allowlist name: the core binds key, gateway id and site before it honours
    # a Hello (common.key_binding), and checks a certificate against the key (it costs a frame copy per frame)
    identify = lambda peer, key: PeerKey(peer, key, allow.keys().get(key.encode(), ""))  # noqa: E731
    server = ServerSocket(ctx, cfg.bind, keys, lambda e: runner.feed(e), identify=identify)
    firmware = FirmwareService(store.releases, artifacts, store_executor=store_thread, send=server.send)
    runner = NodeRunner(
        core,
        server=server,
        extra={StoreIngest: ingest, StoreTouch: touch, LoadCommands: load_commands, StoreCommandStatus: command_status,
               Firmware: firmware.handle, EnrollDecide: enroll, VerifyGateway: verify_gateway,
               RefusedHello: refused_hello},
        log=log,
    )
    stop_on_signals(loop, stop)
    endpoint = server.start()
    rollouts = RolloutService(store.rollouts, store_thread.urgent, on_command, commands=store.commands, releases=store.releases,
                              telemetry=store.telemetry, now_ms=_now_ms,
                              signing_key=load_or_create_rollout_key(cfg.data_dir),
                              send_to_gateway=send_plan, steps=leader_exec)
    if not multi:
        await rollouts.restore()
    feed = LeaderFeed(alerts, rollouts, _now_ms)  # with N coordinators: what the leader's tail hears
    api_ctx = ApiContext(
        store, token, executor=store_thread.urgent, releases=releases, security=security, rollouts=rollouts,
        hooks=ApiHooks(on_command=on_command, on_silence=alerts.silence, on_revocations=revocations_changed,
                       on_ddi_tokens=ddi_tokens_changed),
        fleet=FleetOptions(retention=cfg.fleet.retention, ghost_s=cfg.fleet.ghost_after_s), metrics=metrics,
    )
    app = create_app(api_ctx, mounts=[mount_console] if cfg.console else [])
    if multi:  # a rollout made or controlled on a follower goes to the leader
        forward_to_leader(app, lambda: coord.leader, lambda: coord.leader_api, http)
    api = await serve_api(app, cfg.api_host, cfg.api_port)
    metrics_api = await serve_metrics(api_ctx, cfg.metrics_bind) if cfg.metrics_bind else None
    api_url = f"http://{cfg.api_host}:{api.port}"
    write_atomic(
        cfg.data_dir / "endpoints.json",
        json.dumps({"gateways": endpoint, "api": api_url, "public_key": keys.public.decode(), "coordinator": coord.id,
                    **({"metrics": f"http://{cfg.metrics_bind.rsplit(':', 1)[0]}:{metrics_api.port}/metrics"}
                       if metrics_api is not None else {})}).encode(),
        0o644,
    )
    runner.feed(Start())
    on_store(store.ddi.sites, lambda sites: [ddi_tokens_changed(s) for s in sites], "reading DDI sites failed")
    coord.api_url = cfg.api_advertise or api_url
    await coord.start()  # leader-only work starts in on_lead

    def revoke_retired(row: dict) -> None:
        """A retired device's credentials are revoked (on the store thread, after the retirement committed);
        the new list goes to every gateway from the loop."""
        loop.call_soon_threadsafe(revocations_changed, security.revoke_retired(row, _now_ms()))

    if security is not None:
        lifecycle.ON_RETIRE.append(revoke_retired)
    # the collector took ~9% of ingest at 700; freeze the start. Waiting batches are young and alive, walked by each
    # collection: 1.1-1.25 s a million records on PostgreSQL at 50,000, 0.4-0.56 s at 200,000 (pauses <= 80 ms)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    log.info("cloud started", extra={"gateways": endpoint, "api": api_url, "webhooks": len(webhooks.urls),
                                     "coordinator": coord.id, "coordinators": "many" if multi else "one"})
    try:
        await stop.wait()
    finally:
        log.info("cloud stopping")
        on_follow("stopping")
        await coord.stop()  # the lease is handed over at once
        for timer in timers.values():
            timer.cancel()
        if revoke_retired in lifecycle.ON_RETIRE:
            lifecycle.ON_RETIRE.remove(revoke_retired)
        await runner.stop()
        # the store thread and ingest lanes take no new work: the transactions in hand commit, queued batches are
        # dropped unacknowledged (their gateways send them again), then the store closes on the store thread
        ingests.shutdown(last=store.close)
        await firmware.stop()
        await server.stop()
        await releases.stop()
        kill_children()  # a delta still being made is abandoned (its temp file goes at the next start), not awaited
        await api.stop()  # after: a release request waiting on that delta now fails at once instead of holding it
        if metrics_api is not None:
            await metrics_api.stop()
        await webhooks.stop(drain_s=2.0)
        await http.aclose()
        auth.stop()
        ctx.destroy(linger=0)
        await asyncio.to_thread(store_thread.join)  # the call in hand, without blocking the loop
        firmware_counters = {f"firmware_{k}": v for k, v in firmware.counters.items()}
        log.info("cloud stopped", extra=core.counters | firmware_counters | {f"alerts_{k}": v for k, v in alerts.counters.items()}
                 | {"store_calls_dropped": ingests.cancelled})
    return dict(core.counters) | firmware_counters


def _command(row: dict, security: SecurityService | None = None) -> Command:
    envelope = security.sign_command(row) if security is not None else b""
    return Command(row["device_id"], row["seq"], row["name"], dict(row["args"] or {}), row["expires_ms"], envelope)


def _now_ms() -> int:
    return int(time.time() * 1000)
