"""The gateway's process: its core on asyncio, the outbox in LMDB, a ROUTER for devices, a DEALER to the cloud.

Devices are admitted by CURVE key from ``allowed_devices`` in the data
directory (re-read when it changes). The outbox has one stream per class with a
byte quota and a TTL on the steady clock; when bulk or state is full its oldest
records are evicted, and every eviction or expiry becomes a ``gap`` report per
device and contiguous range, queued (in the same commit) in the critical stream
for the cloud. Commands for devices are held in a second durable queue.

After binding, ``endpoints.json`` in the data directory names the
device-facing endpoint and the gateway's public key, so tools can find a
gateway that bound an ephemeral port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zmq.asyncio

from common.clock import SteadyClock, wall_ms
from common.errors import CertificateError, ConfigError, KeyFileError, ProtocolError, TrustError
from common.revocation import RevocationCache
from common.protocol.messages import NodeCertificate
from common.security_events import (
    AdmitDevice,
    Admitted,
    ApplyRevocations,
    InstallGatewayCertificate,
    PeerKey,
    RevocationsApplied,
)
from common.signed import EnvelopeVerifier, key_id_for
from common.durable_queue import DurableQueue
from common.effects import Firmware, InventoryTaken, Start, TakeInventory
from common.inventory import host_inventory
from common.fileio import write_atomic
from common.keys import Allowlist, load_or_create_keypair, start_authenticator
from common.pki import verify_certificate
from common.process import Periodic, kill_children, stop_on_signals
from common.protocol import STREAMS
from common.protocol.codec import decode_forwarding
from common.runner import NodeRunner
from common.shaping import LinkWindows, TokenBucket
from common.sockets import ServerSocket, UpstreamLink
from common.streams import GATEWAY_POLICIES, StreamPolicy
from common.transfer.fetcher import Fetcher
from gateway.admission import CertExpiry, DeviceAdmission, OpenEnrollment
from gateway.core import COMMANDS, OUTBOX, GatewayCore, gap_reports
from gateway.enroll_socket import ENROLL_DOMAIN, EnrollSocket, SocketRouter
from gateway.firmware import SiteFirmware
from gateway.security import GatewaySecurity
from gateway.site_alerts import SiteAlerts, site_rules
from gateway.site_cache import SiteCache

__all__ = ["GatewayConfig", "run_gateway"]

log = logging.getLogger("edgefleet.gateway")

@dataclass(frozen=True, slots=True)
class GatewayConfig:
    gateway_id: str
    site: str
    data_dir: Path
    cloud: str  # the cloud's ZeroMQ endpoint; N coordinators: their endpoints, comma-separated (tried in turn)
    cloud_key: bytes  # the cloud's CURVE public key (Z85)
    bind: str = "tcp://127.0.0.1:7701"  # device-facing socket
    heartbeat_s: float = 1.0
    policies: dict[str, StreamPolicy] = field(default_factory=lambda: dict(GATEWAY_POLICIES))
    durable: bool = True
    uplink_bytes_per_s: float = 0.0  # 0: no cap
    uplink_burst_bytes: float = 2048
    link_windows: tuple[tuple[str, float], ...] = ()  # (crontab, seconds); empty: always open
    timezone: str = "UTC"
    status_interval_s: float = 5.0
    cache_mb: int = 1024  # the site cache's budget for firmware images and deltas
    metrics_bind: str = ""  # HOST:PORT: Prometheus metrics (gateway.metrics), opt-in
    release_keys: tuple[str, ...] = ()  # PEM release keys: if given, manifests are checked here too
    firmware_window: int = 1  # chunk requests in flight to the cloud (credit): a cut resends at most this many
    enroll_bind: str = ""  # the enrollment socket (any key may connect; EnrollRequest only); empty: none
    ca_chain: str = ""  # the fleet CA bundle (chain.pem) that issued certificates must verify against
    cloud_sign_keys: tuple[str, ...] = ()  # the cloud's signing.pub (several while one replaces another)
    uplink_source: str = ""  # the local address the uplink leaves from (its own interface); empty: the OS picks
    cert: str = ""  # this gateway's certificate (edgefleet ca issue --role gateway), shown to the cloud
    cert_check_s: float = 6 * 3600.0  # how often the certificate is shown again (the cloud renews it at 2/3 of its life)
    rollout_key: str = ""  # PEM Ed25519 public key of the cloud's rollout plans; empty: no site rollouts
    # rules the gateway evaluates for its devices while its uplink is down (gateway.site_alerts);
    # None: SITE_RULES, (): none
    site_alert_rules: tuple[dict[str, Any], ...] | None = None
    inventory_interval_s: float = 60.0  # how often its own inventory is read (reported only on change)
    # hawkBit's DDI API for devices running SWUpdate's suricatta (docs/DDI.md); "" (default): not served
    ddi_bind: str = ""  # HOST:PORT
    ddi_tenant: str = "default"
    ddi_poll_s: float = 60.0  # the polling interval DDI devices are told
    ddi_tls_cert: str = ""  # the site's TLS certificate chain (PEM) and key: DDI over HTTPS
    ddi_tls_key: str = ""
    ddi_gateway_token_file: str = ""  # a file holding the site's GatewayToken (optional)


async def run_gateway(cfg: GatewayConfig, stop: asyncio.Event | None = None) -> dict[str, object]:
    """Run until ``stop`` is set (SIGTERM/SIGINT set it when run from the CLI)."""
    stop = stop or asyncio.Event()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    keys = load_or_create_keypair(cfg.data_dir)
    allow = Allowlist(cfg.data_dir / "allowed_devices")
    steady = SteadyClock(cfg.data_dir / "steady.json").start()
    outbox = DurableQueue(
        str(cfg.data_dir / "outbox"),
        streams=cfg.policies,
        durable=cfg.durable,
        clock=steady.now_ms,
        on_drop=gap_reports(cfg.gateway_id, wall_ms),
    ).start()
    held = DurableQueue(str(cfg.data_dir / "commands"), max_bytes=16 << 20).start()
    ctx = zmq.asyncio.Context()
    revocations = _revocation_cache(cfg)
    expiry = CertExpiry(cfg.data_dir / "admitted.json").load()
    admission = DeviceAdmission(allow, lambda: revocations.current.revoked if revocations is not None else {}, expiry)
    own_cert = Path(cfg.cert).read_bytes() if cfg.cert else b""
    security = (GatewaySecurity(bind_identity=bool(cfg.ca_chain), certificate=own_cert)
                if (cfg.enroll_bind or revocations is not None or own_cert) else None)
    auth = start_authenticator(ctx, admission)  # type: ignore[arg-type]  # an Allowlist with revocations
    if cfg.enroll_bind:
        auth.configure_curve_callback(ENROLL_DOMAIN, OpenEnrollment(admission.revoked_keys))
    core = GatewayCore(
        cfg.gateway_id,
        cfg.site,
        outbox,
        commands=held,
        rng=random.Random(),
        heartbeat_s=cfg.heartbeat_s,
        bucket=TokenBucket(cfg.uplink_bytes_per_s, cfg.uplink_burst_bytes) if cfg.uplink_bytes_per_s else None,
        link_windows=LinkWindows(cfg.link_windows, cfg.timezone) if cfg.link_windows else None,
        status_interval_s=cfg.status_interval_s,
        security=security,
        site_rollouts=bool(cfg.rollout_key),
        site_alerts=_site_alerts(cfg),
        inventory_interval_s=cfg.inventory_interval_s,
        **_ddi_options(cfg),
    )
    if core.ddi is not None:
        state = cfg.data_dir / "ddi" / "state.json"
        core.ddi.load(state.read_bytes() if state.exists() else b"")
    runner: NodeRunner

    def take_inventory(_effect: TakeInventory) -> None:
        fw = firmware.counters  # the site cache as the cloud's site page shows it (read here, on the loop)
        site_cache = {"cache.bytes": cache.used_bytes(), "cache.evicted": cache.evicted,
                      "cache.hits": max(0, fw["device_offers"] - fw["cloud_fetches"]), "cache.misses": fw["cloud_fetches"]}

        def read() -> dict[str, object]:
            return {"role": "gateway", "site": cfg.site, **host_inventory(cfg.data_dir), **site_cache}

        loop.run_in_executor(None, read).add_done_callback(
            lambda f: runner.feed(InventoryTaken(f.result())) if f.exception() is None else log.warning(
                "inventory not read", extra={"error": str(f.exception())})
        )
    loop = asyncio.get_running_loop()
    rollouts, rollout_handlers = _site_rollouts(cfg, loop, lambda: runner, lambda: firmware)
    # TelemetryBatch frames arrive as TelemetryEntries: checked, each record already its outbox entry
    # each device's handshake key and its allowlist name, before its first frame: the core binds each key to one
    # device id (common.key_binding), with or without a CA
    identify = lambda peer, key: PeerKey(peer, key, allow.keys().get(key.encode(), ""))  # noqa: E731
    server = ServerSocket(ctx, cfg.bind, keys, lambda e: runner.feed(e), decoder=decode_forwarding, identify=identify)
    link = UpstreamLink(ctx, _uplink_endpoint(cfg), keys, cfg.cloud_key, lambda e: runner.feed(e))
    enroll = EnrollSocket(ctx, cfg.enroll_bind, keys, lambda e: runner.feed(e)) if cfg.enroll_bind else None
    chain = _ca_chain(cfg)
    cache = SiteCache(cfg.data_dir / "cache", cfg.cache_mb << 20)
    fetcher = Fetcher(link.send, is_up=lambda: core.uplink.up, window=cfg.firmware_window)
    firmware = SiteFirmware(cache, fetcher, server.send, verify=_manifest_check(cfg.release_keys))

    def admit(effect: AdmitDevice) -> None:
        """An accepted certificate: verified here (CA, key, site, revocations) before its key is admitted."""
        reply = effect.reply
        try:
            if chain is None:
                raise ConfigError(f"gateway {cfg.gateway_id!r} has no CA chain (--ca-chain) to verify certificates with")
            ident = verify_certificate(
                reply.certificate, chain, now=datetime.now(UTC), expected_curve_key=reply.curve_key,
                revoked_subjects=revocations.current.revoked if revocations is not None else ())
            if ident.subject_id != reply.device_id or ident.site != cfg.site:
                raise CertificateError(ident.subject_id, f"names device {ident.subject_id!r} at site {ident.site!r}, "
                                                         f"not {reply.device_id!r} at {cfg.site!r}")
        except (CertificateError, ConfigError) as exc:
            log.error("certificate refused", extra={"device": reply.device_id, "error": str(exc)})
            runner.feed(Admitted(replace(reply, outcome="refuse", detail=str(exc)[:256], certificate=b"")))
            return
        try:
            expiry.record(reply.curve_key.encode(), int(ident.not_after.timestamp() * 1000))  # before it is admitted
            allow.add(reply.curve_key.encode(), reply.device_id)
        except (OSError, KeyFileError) as exc:
            log.error("enrolled key not admitted", extra={"device": reply.device_id, "error": str(exc)})
            runner.feed(Admitted(replace(reply, outcome="retry", detail=f"gateway could not admit the key: {exc}"[:256],
                                         certificate=b"")))
            return
        runner.feed(Admitted(reply))

    def apply_revocations(effect: ApplyRevocations) -> None:
        assert revocations is not None
        try:
            changed = revocations.update(effect.envelope, now_ms=wall_ms())  # on disk before it takes effect
        except (TrustError, ProtocolError) as exc:
            log.error("revocation list refused", extra={"error": str(exc)})
            return
        except OSError as exc:  # not on disk, so not in force; the cloud sends it again at the next session
            log.error("revocation list could not be written", extra={"error": str(exc)})
            return
        if changed:
            runner.feed(_applied(revocations))

    def install_certificate(effect: InstallGatewayCertificate) -> None:
        """A renewal from the cloud: it must certify this gateway, its site and its key (checked against the
        CA chain when the gateway has one), then it replaces the file, atomically, and is shown from now on."""
        assert security is not None
        try:
            if chain is not None:
                ident = verify_certificate(effect.pem, chain, now=datetime.now(UTC), expected_curve_key=keys.public.decode())
                if (ident.role, ident.subject_id, ident.site) != ("gateway", cfg.gateway_id, cfg.site):
                    raise CertificateError(ident.subject_id, f"certifies {ident.role} {ident.subject_id!r} at {ident.site!r}")
            if cfg.cert:
                write_atomic(Path(cfg.cert), effect.pem, 0o644)
        except (CertificateError, OSError) as exc:
            log.error("renewed certificate not installed; the current one stays", extra={"error": str(exc)})
            return
        security.certificate = effect.pem
        log.info("gateway certificate renewed", extra={"gateway": cfg.gateway_id})

    def present_certificate() -> None:
        if security is not None and security.certificate and core.uplink.up:
            link.send(NodeCertificate(security.certificate))

    extra: dict = {Firmware: firmware.handle, TakeInventory: take_inventory, **rollout_handlers}
    ddi = None
    if core.ddi is not None:
        from gateway.ddi.driver import DdiDriver

        ddi = DdiDriver(cfg.data_dir, cfg.ddi_bind, lambda e: runner.feed(e), firmware, cache,
                        tls=(cfg.ddi_tls_cert, cfg.ddi_tls_key) if cfg.ddi_tls_cert else None)
        extra |= ddi.handlers()
    if security is not None:
        extra |= {AdmitDevice: admit, ApplyRevocations: apply_revocations, InstallGatewayCertificate: install_certificate}
    runner = NodeRunner(core, queues={OUTBOX: outbox, COMMANDS: held}, server=SocketRouter(server, enroll) if enroll else server,
                        upstream=link, log=log, extra=extra)
    stop_on_signals(loop, stop)
    endpoint = server.start()
    enroll_endpoint = enroll.start() if enroll is not None else ""
    ddi_url = await ddi.start() if ddi is not None else ""
    write_atomic(
        cfg.data_dir / "endpoints.json",
        json.dumps({"devices": endpoint, "public_key": keys.public.decode(), "enroll": enroll_endpoint,
                    "ddi": ddi_url}).encode(),
        0o644,
    )
    checkpoint = Periodic(loop, 5.0, steady.checkpoint)  # so ages survive a power cut
    exporter = None
    if cfg.metrics_bind:
        from gateway.metrics import MetricsExporter

        exporter = MetricsExporter.start(cfg.metrics_bind)
        exporter_tick = Periodic(loop, 1.0, lambda: exporter.update(
            {**core.counters, **core.status(loop.time()), "cache_bytes": cache.used_bytes(),
             **{f"firmware_{k}": v for k, v in firmware.counters.items()}}))
        write_atomic(cfg.data_dir / "metrics.json", json.dumps({"metrics": f"http://{cfg.metrics_bind.rsplit(':', 1)[0]}:"
                                                                         f"{exporter.port}/metrics"}).encode(), 0o644)
    cert_check = Periodic(loop, cfg.cert_check_s, present_certificate) if cfg.cert else None
    rollout_tick = Periodic(loop, 1.0, rollouts.tick) if rollouts is not None else None
    link.open()
    runner.feed(Start())
    if revocations is not None:
        runner.feed(_applied(revocations))  # the cached list holds from the first frame on, cloud or no cloud
    log.info("gateway started", extra={"gateway": cfg.gateway_id, "site": cfg.site, "devices": endpoint,
                                      "backlog": {s: outbox.stats(s).count for s in STREAMS}})
    try:
        await stop.wait()
    finally:
        checkpoint.cancel()
        if exporter is not None:
            exporter_tick.cancel()
            exporter.stop()
        if cert_check is not None:
            cert_check.cancel()
        if rollout_tick is not None:
            rollout_tick.cancel()
        if ddi is not None:
            await ddi.stop()
        await runner.stop()
        kill_children()  # a local delta being made for devices is abandoned, not awaited (its candidates run as children)
        await firmware.stop()
        await server.stop()
        if enroll is not None:
            await enroll.stop()
        await link.close()
        auth.stop()
        ctx.destroy(linger=0)
        stats = {**core.counters, **core.status(loop.time()), "refused_sends": sum(server.refused.values()), "auth_refused": allow.refused,
                 **{f"firmware_{k}": v for k, v in firmware.counters.items()},
                 **{f"fetch_{k}": v for k, v in fetcher.counters.items()},
                 "cache_bytes": cache.used_bytes(), "cache_evicted": cache.evicted,
                 "auth_refused_revoked": admission.refused_revoked,
                 "auth_refused_expired": admission.refused_expired, **(security.counters if security is not None else {}),
                 "revocation_version": revocations.version if revocations is not None else 0,
                 **(core.ddi.counters if core.ddi is not None else {}), **(ddi.counters if ddi is not None else {})}
        cache.close()
        outbox.close()
        held.close()
        steady.checkpoint()
        write_atomic(cfg.data_dir / "stats.json", json.dumps(stats).encode(), 0o644)
        log.info("gateway stopped", extra={"records_in": core.counters["records_in"]})
    return stats


def _ddi_options(cfg: GatewayConfig) -> dict[str, Any]:
    """The core's DDI options: the credential table in force (``DATA/ddi_tokens.json``), tenant, interval."""
    if not cfg.ddi_bind:
        return {}
    from gateway.ddi.tokens import DdiTokens, token_hash

    gw_hash = ""
    if cfg.ddi_gateway_token_file:
        gw_hash = token_hash(Path(cfg.ddi_gateway_token_file).read_text().strip())
    path = cfg.data_dir / "ddi_tokens.json"
    try:
        tokens = DdiTokens.from_json(path.read_bytes(), gw_hash) if path.exists() else DdiTokens(cfg.site, 0, {}, gw_hash)
    except (ValueError, KeyError, TypeError) as exc:  # a corrupt table would fail open or shut: say so, do not guess
        raise ConfigError(f"gateway {cfg.gateway_id!r}: {path} is not a DDI credential table ({exc}); move it away "
                          "and the cloud sends the current one at the next session") from exc
    return {"ddi_tokens": tokens, "ddi_tenant": cfg.ddi_tenant, "ddi_poll_s": cfg.ddi_poll_s}


def _manifest_check(paths: tuple[str, ...]):  # noqa: ANN202
    """With release keys, a manifest is checked here before anything is fetched for it (signature,
    expiry); hardware and version floors are each device's to check."""
    if not paths:
        return None
    from common.firmware.keys import load_trusted_keys
    from common.firmware.manifest import verify_manifest

    trusted = load_trusted_keys(list(paths))
    return lambda signed, hw: verify_manifest(signed, trusted, hw=hw, now_ms=wall_ms(), security_floor=0)


def _revocation_cache(cfg: GatewayConfig) -> RevocationCache | None:
    """The cached revocation list (DATA/revocations.json), loaded and re-verified; None without a cloud key."""
    if not cfg.cloud_sign_keys:
        return None
    from common.command_auth import load_public_key

    keys = [load_public_key(p) for p in cfg.cloud_sign_keys]
    cache = RevocationCache(cfg.data_dir / "revocations.json", EnvelopeVerifier({key_id_for(k): k for k in keys}))
    cache.load()  # a corrupt or unverifiable file raises: starting with no revocations would fail open
    return cache


def _applied(cache: RevocationCache) -> RevocationsApplied:
    rl = cache.current
    return RevocationsApplied(rl.version, frozenset(rl.revoked), frozenset(rl.quarantined))


def _ca_chain(cfg: GatewayConfig):
    if not cfg.ca_chain:
        return None
    from common.pki import Chain

    try:
        return Chain.from_pem(Path(cfg.ca_chain).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"gateway {cfg.gateway_id!r}: cannot read the CA chain {cfg.ca_chain!r}: {exc}") from exc


def _uplink_endpoint(cfg: GatewayConfig) -> list[str]:
    """The cloud endpoints (one per coordinator, failed over in turn), each leaving from ``uplink_source`` if
    given (ZeroMQ's ``tcp://SOURCE:0;HOST:PORT``)."""
    endpoints = [e.strip() for e in cfg.cloud.split(",") if e.strip()]
    if not cfg.uplink_source:
        return endpoints
    return [f"tcp://{cfg.uplink_source}:0;{e.removeprefix('tcp://')}" if e.startswith("tcp://") else e for e in endpoints]


class _SiteRolloutDriver:
    """Wires ``gateway.site_rollouts.SiteRollouts`` to the core: its answers are fed back as events."""

    def __init__(self, cfg: GatewayConfig, loop: asyncio.AbstractEventLoop, runner: Callable[[], NodeRunner],
                 firmware: Callable[[], SiteFirmware]) -> None:
        from common.firmware.keys import load_public_key
        from gateway.site_rollouts import SiteRollouts

        self.site = SiteRollouts(cfg.data_dir, cfg.site, load_public_key(cfg.rollout_key))
        self.loop, self.runner, self.firmware = loop, runner, firmware
        self.pinned: set[str] = set()  # rollouts whose release this site holds pinned in its cache
        self.loop.call_soon(lambda: self._feed(self.site.load(wall_ms())))

    def _feed(self, events: list[object]) -> None:
        for ev in events:
            self.loop.call_soon(self.runner().feed, ev)
        self._prefetch()

    def _prefetch(self) -> None:
        """An approved rollout's release is fetched into the site cache now, before its window opens, and
        pinned there until the rollout ends; then the pin goes (the cache may evict it by LRU)."""
        from common.rollouts.states import RolloutState

        for rid, eng in self.site.engines.items():
            holder = f"rollout:{rid}"
            over = eng.state in (RolloutState.COMPLETED, RolloutState.ABORTED)
            if not over and rid not in self.pinned:
                self.pinned.add(rid)
                for hw in eng.plan.release.hardware:
                    fut = asyncio.ensure_future(self.firmware().prefetch(eng.plan.release.version, hw, holder))
                    fut.add_done_callback(lambda f, v=eng.plan.release.version: log.warning(
                        "prefetch failed; devices will fetch it on demand", extra={"release": v, "error": str(f.exception())})
                        if not f.cancelled() and f.exception() is not None else None)
            elif over and rid in self.pinned:
                self.pinned.discard(rid)
                asyncio.ensure_future(self.firmware().release_pins(holder))

    def tick(self) -> None:
        self._feed(self.site.tick(wall_ms()))

    def handlers(self) -> dict[type, Callable[[Any], None]]:
        from gateway.rollout_effects import DeviceOutcome, SitePlanArrived

        return {
            SitePlanArrived: lambda e: self._feed(self.site.plan(e.blob, wall_ms())),
            DeviceOutcome: lambda e: self._feed(self.site.outcome(e.device_id, e.values, wall_ms())),
        }


def _site_rollouts(cfg: GatewayConfig, loop: asyncio.AbstractEventLoop, runner: Callable[[], NodeRunner],
                   firmware: Callable[[], SiteFirmware]):
    if not cfg.rollout_key:
        return None, {}
    driver = _SiteRolloutDriver(cfg, loop, runner, firmware)
    return driver, driver.handlers()


def _site_alerts(cfg: GatewayConfig) -> SiteAlerts | None:
    rules = site_rules(cfg.site_alert_rules)
    return SiteAlerts(cfg.gateway_id, rules) if rules else None
