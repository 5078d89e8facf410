"""The device agent's process: its core on asyncio, its buffer in LMDB, its link to the gateway.

The buffer has one stream per class (critical, state, bulk), each with a byte
quota and a TTL measured on the steady clock (correct across reboots and clock
steps). When bulk or state reaches its quota the oldest records go first; each
eviction and expiry is written, in the same commit, as a ``gap`` record in the
critical stream, so the cloud learns exactly which sequences were dropped and why.

On SIGTERM (or ``stop``) sampling stops, the buffer is drained to the gateway
for up to ``drain_s`` seconds, ``stats.json`` records what was produced and
acknowledged, and the process exits. Whatever is still unacknowledged stays in
the buffer for the next start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import zmq.asyncio

from common.clock import SteadyClock, wall_ms
from common.durable_queue import DurableQueue
from common.effects import (
    UPSTREAM,
    Buffered,
    CommandResult,
    Firmware,
    InventoryTaken,
    Received,
    RunCommand,
    Sampled,
    Start,
    Stop,
    TakeInventory,
    TakeSample,
)
from common.errors import CertificateError, KeyFileError
from common.protocol.messages import EnrollReply
from common.security_events import InstallRotation, PrepareRotation, RotateNow, RotationInstalled, RotationKeyReady
from common.fileio import write_atomic
from common.install_deadline import DEFERRED, LATE_INSTALL_REFUSED
from common.keys import load_or_create_keypair
from common.process import Periodic, stop_on_signals
from common.protocol import STREAMS, Command, encode_sample
from common.runner import NodeRunner
from common.sockets import UpstreamLink
from common.streams import DEVICE_POLICIES, StreamPolicy
from device_agent.commands import CommandLog, Simulation, run_command
from device_agent.core import BUFFER, AgentCore, gap_record
from device_agent.inventory import AppliedConfig, collect
from device_agent.logtail import LOG_KIND, LogTail
from device_agent.sampler import sample_metrics
from common.transfer.fetcher import Fetcher
from device_agent.download import FirmwareDownloader
from device_agent.board.profile import BoardProfile
from device_agent.updater import AgentUpdater

__all__ = ["AgentConfig", "run_agent"]

log = logging.getLogger("edgefleet.agent")

@dataclass(frozen=True, slots=True)
class AgentConfig:
    device_id: str
    site: str
    data_dir: Path
    gateway: str  # ZeroMQ endpoint, e.g. tcp://127.0.0.1:7701
    gateway_key: bytes  # the gateway's CURVE public key (Z85)
    sample_interval_s: float = 1.0
    heartbeat_s: float = 1.0
    policies: dict[str, StreamPolicy] = field(default_factory=lambda: dict(DEVICE_POLICIES))
    drain_s: float = 10.0
    durable: bool = True
    allow_simulation: bool = False  # the simulate command may override sampled metrics (drills)
    hw: str = "sim-board-1"  # the hardware model firmware manifests must name
    release_keys: tuple[str, ...] = ()  # public keys (PEM files) trusted to sign firmware manifests
    download_rate: float = 0.0  # bytes/s a firmware download may take from the link; 0: no limit
    enroll_endpoint: str = ""  # the gateway's enrollment socket; set: enroll first if DATA/cert.pem is missing
    claim_token: str = ""  # a site claim token (edgefleet enroll-token create); empty: claim by serial
    serial: str = ""  # the factory serial number (default: the device id)
    cloud_sign_keys: tuple[str, ...] = ()  # the cloud's signing.pub: commands must be signed by it
    rotation_check_s: float = 3600.0  # how often the certificate is checked for rotation (2/3 of its life)
    hw_rev: str = ""  # hardware revision, reported in the inventory
    location: str = ""  # reported in the inventory until a config sets ``location``
    inventory_interval_s: float = 60.0  # how often the inventory is read (it is sent only when it changed)
    board: BoardProfile = field(default_factory=BoardProfile)  # the board updated (default: the simulated one)


async def run_agent(cfg: AgentConfig, stop: asyncio.Event | None = None) -> dict[str, object]:
    """Run until ``stop`` is set (SIGTERM/SIGINT set it when run from the CLI); returns the final stats."""
    stop = stop or asyncio.Event()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    keys = load_or_create_keypair(cfg.data_dir)
    steady = SteadyClock(cfg.data_dir / "steady.json").start()
    buffer = DurableQueue(
        str(cfg.data_dir / "buffer"),
        streams=cfg.policies,
        durable=cfg.durable,
        clock=steady.now_ms,
        on_drop=gap_record(cfg.device_id, wall_ms),
    ).start()
    commands = CommandLog(cfg.data_dir / "commands.json")
    simulation = Simulation(enabled=cfg.allow_simulation)
    ctx = zmq.asyncio.Context()
    loop = asyncio.get_running_loop()
    stop_on_signals(loop, stop)
    if cfg.enroll_endpoint:
        from device_agent.enroll import enroll, set_aside_if_expired

        set_aside_if_expired(cfg.data_dir, wall_ms())  # the rule: an expired certificate means enrolling again
        cert = await enroll(ctx, cfg.data_dir, keys, device_id=cfg.device_id, endpoint=cfg.enroll_endpoint,
                            gateway_key=cfg.gateway_key, hw=cfg.hw, serial=cfg.serial or cfg.device_id,
                            claim_token=cfg.claim_token, stop=stop)
        if cert is None:  # stopped before it was enrolled
            buffer.close()
            ctx.destroy(linger=0)
            return {"device_id": cfg.device_id, "enrolled": False}
    check = _command_check(cfg)
    rotation = _rotation(cfg)
    core = AgentCore(
        cfg.device_id,
        cfg.site,
        buffer,
        rng=random.Random(),
        sample_interval_s=cfg.sample_interval_s,
        heartbeat_s=cfg.heartbeat_s,
        ran=commands.load(),
        command_check=check,
        rotation=rotation,
        inventory_interval_s=cfg.inventory_interval_s,
    )
    tail = LogTail(node=cfg.device_id)
    logging.getLogger().addHandler(tail)
    applied_config = AppliedConfig(cfg.data_dir)
    reboot_requested = False
    runner: NodeRunner

    def report_update(values: dict[str, object]) -> None:
        """From the update's worker thread: durable in the critical stream before returning, then sent."""
        buffer.append_many_sync([encode_sample(wall_ms(), "update", values)], stream="critical")
        loop.call_soon_threadsafe(runner.feed, Buffered())

    def rebooting() -> None:
        """From the update's worker thread: the reboot command ran (a real board); stop, exit 75."""
        nonlocal reboot_requested
        reboot_requested = True
        loop.call_soon_threadsafe(stop.set)

    from device_agent.board.boards import make_board

    board = make_board(cfg.board, cfg.data_dir, link_up=lambda: core.uplink.up)
    modules = None
    if cfg.board.modules:  # file / script update modules beside the board's own
        from device_agent.board.modules import module_boards

        modules = module_boards(cfg.board, cfg.data_dir)
    updater = AgentUpdater(
        cfg.data_dir, cfg.device_id, cfg.hw, list(cfg.release_keys), on_report=report_update,
        link_up=lambda: core.uplink.up, now_ms=wall_ms, board=board, on_reboot=rebooting, modules=modules,
    )

    def run(effect: RunCommand) -> None:
        cmd = effect.command
        commands.starting(cmd.seq)  # persisted first: a crash never runs it twice
        if cmd.name == "update" and "version" in cmd.args:  # fetched through the gateway, then installed
            fut = downloader.update_to(cmd.args["version"], cmd.args)
            fut.add_done_callback(lambda f: updated(cmd.seq, f))
            return
        if cmd.name == "download" and "version" in cmd.args:  # ahead of a maintenance window: fetch, do not install
            fut = downloader.download_only(cmd.args["version"])
            fut.add_done_callback(lambda f: runner.feed(CommandResult(cmd.seq, "done" if f.exception() is None else "failed",
                                                                      str(f.exception() or f.result()))))
            return
        if cmd.name == "rollback":  # "return to the previous release" (a rollout aborted with --revert)
            fut = loop.run_in_executor(None, updater.revert)
            fut.add_done_callback(lambda f: runner.feed(CommandResult(
                cmd.seq, "done" if f.exception() is None and not str(f.result()).startswith("refused") else "failed",
                str(f.exception() or f.result()))))
            return
        if cmd.name == "rotate":  # rotate the key and certificate now (edgefleet devices rotate)
            runner.feed(RotateNow())
            runner.feed(CommandResult(cmd.seq, "done" if rotation is not None else "failed",
                                      "rotation started" if rotation is not None else "this agent has no certificate"))
            return
        if cmd.name == "update":  # blocking work (slot writes, fsync, health checks): off the loop
            args = cmd.args
            fut = loop.run_in_executor(None, lambda: updater.start(
                args.get("manifest", ""), args.get("image", ""),
                delta_path=args.get("delta", ""), allowance_path=args.get("allowance", "")))
            fut.add_done_callback(lambda f: runner.feed(CommandResult(cmd.seq, "done" if f.exception() is None else "failed",
                                                                      str(f.exception() or f.result()))))
            return
        if cmd.name == "logs":  # the append waits for a commit: off the loop
            send_logs(cmd)
            return
        if cmd.name in FLEET_COMMANDS:
            status, detail = fleet_command(cmd)
        else:
            status, detail = run_command(cmd, simulation)
        runner.feed(CommandResult(cmd.seq, status, detail))

    FLEET_COMMANDS = ("config", "reboot", "ping")

    def updated(seq: int, f: asyncio.Future[str]) -> None:
        if f.exception() is None and f.result().startswith(LATE_INSTALL_REFUSED):  # not begun: held for the next window
            commands.deferred(seq)
            runner.feed(CommandResult(seq, DEFERRED, f.result()[:256]))
            return
        runner.feed(CommandResult(seq, "done" if f.exception() is None else "failed", str(f.exception() or f.result())))

    def fleet_command(cmd: Command) -> tuple[str, str]:
        """Remote diagnostics and config (issue 8): config, logs, reboot, and ping with the device's time."""
        nonlocal reboot_requested
        if cmd.name == "ping":
            return "done", f"pong device_ms={wall_ms()}"
        if cmd.name == "config":
            status, detail = applied_config.apply(dict(cmd.args))
            if status == "done":
                take_inventory(None)  # the applied version reaches the cloud in the inventory
            return status, detail
        # reboot: answer first, then stop; the service manager starts the agent again (exit code 75);
        # a real board also runs its reboot command (off the loop)
        reboot_requested = True
        if cfg.board.real:
            loop.call_later(1.0, lambda: loop.run_in_executor(None, updater.reboot_board))
        else:
            loop.call_later(1.0, stop.set)
        return "done", "rebooting"

    def send_logs(cmd: Command) -> None:
        """The last N log lines as ``log`` records in the bulk stream (store-and-forward at bulk priority)."""
        try:
            n = max(0, min(int(cmd.args.get("lines", "100")), tail.lines.maxlen or 0))
        except ValueError:
            runner.feed(CommandResult(cmd.seq, "failed", f"logs: lines={cmd.args.get('lines')!r} is not a number"))
            return
        now = wall_ms()
        payloads = [encode_sample(now, LOG_KIND, v) for v in tail.tail(n)]

        def appended(fut: asyncio.Future[list[int]]) -> None:
            if fut.exception() is not None:
                runner.feed(CommandResult(cmd.seq, "failed", f"logs: not buffered: {fut.exception()}"))
                return
            seqs = fut.result()
            if seqs:
                core.produced["bulk"] += len(seqs)  # counted like every record the agent produced
                core.last_seq["bulk"] = max(core.last_seq["bulk"], seqs[-1])
                runner.feed(Buffered())
            runner.feed(CommandResult(cmd.seq, "done", f"records={len(seqs)} lines sent at bulk priority"))

        append = lambda: buffer.append_many_sync(payloads, stream="bulk") if payloads else []  # noqa: E731
        loop.run_in_executor(None, append).add_done_callback(appended)

    def take_inventory(_effect: TakeInventory | None) -> None:
        def read() -> dict[str, object]:
            return collect(cfg.data_dir, model=cfg.hw, hw_rev=cfg.hw_rev, location=cfg.location,
                           running=updater.running, slots=board.slot_versions, update_modules=updater.update_modules)

        loop.run_in_executor(None, read).add_done_callback(
            lambda f: runner.feed(InventoryTaken(f.result())) if f.exception() is None else log.warning(
                "inventory not read", extra={"error": str(f.exception())})
        )

    link = UpstreamLink(ctx, cfg.gateway, keys, cfg.gateway_key, lambda e: runner.feed(e))

    def report_download(values: dict[str, object]) -> None:
        buffer.append_many_sync([encode_sample(wall_ms(), "update", values)], stream="critical")
        runner.feed(Buffered())

    fetcher = Fetcher(link.send, is_up=lambda: core.uplink.up, window=1, rate_bytes_per_s=cfg.download_rate,
                      on_failure=lambda artifact, index, cause: report_download(
                          {"outcome": "bad-chunk", "artifact": artifact[:16], "chunk": index, "reason": cause}))
    downloader = FirmwareDownloader(cfg.data_dir, cfg.hw, updater, fetcher, report_download)

    def prepare_rotation(_: PrepareRotation) -> None:
        from device_agent.enroll import next_keypair

        runner.feed(RotationKeyReady(next_keypair(cfg.data_dir).public.decode()))

    def install_rotation(effect: InstallRotation) -> None:
        from device_agent.enroll import install_next

        try:
            new_keys, validity = install_next(cfg.data_dir, effect.reply)
        except (CertificateError, KeyFileError) as exc:
            log.error("rotated certificate not installed", extra={"error": str(exc)})
            refused = EnrollReply(cfg.device_id, effect.reply.curve_key, "refuse", str(exc)[:256], b"")
            runner.feed(Received(UPSTREAM, refused))  # the core gives up this rotation and tries at the next check
            return
        link.keys = new_keys  # the next connection (Reconnect, fed by the core) uses the new key
        runner.feed(RotationInstalled(*validity))

    runner = NodeRunner(
        core,
        queues={BUFFER: buffer},
        upstream=link,
        extra={
            TakeSample: lambda _: runner.feed(Sampled(sample_metrics(str(cfg.data_dir), simulation.overrides))),
            RunCommand: run,
            Firmware: lambda e: fetcher.on_message(e.msg),
            PrepareRotation: prepare_rotation,
            InstallRotation: install_rotation,
            TakeInventory: take_inventory,
        },
        log=log,
    )
    first_seq = {s: buffer.stats(s).next_seq for s in STREAMS}
    checkpoint = Periodic(loop, 5.0, steady.checkpoint)  # so ages survive a power cut
    link.open()
    runner.feed(Start())
    def booted(fut: asyncio.Future[None]) -> None:
        if fut.exception() is not None:  # e.g. the board profile names a slot source the system does not have
            log.error("update state not resumed at start", extra={"error": str(fut.exception())})
        loop.call_soon_threadsafe(downloader.resume)  # then a download a restart interrupted

    # resume an update a reboot or power cut interrupted (and, on a real board, confirm the running slot)
    loop.run_in_executor(None, updater.boot).add_done_callback(booted)
    log.info("agent started", extra={"device": cfg.device_id, "gateway": cfg.gateway, "buffered": sum(buffer.stats(s).count for s in STREAMS)})
    try:
        await stop.wait()
        runner.feed(Stop())
        deadline = loop.time() + cfg.drain_s
        while not core.drained and loop.time() < deadline:
            await asyncio.sleep(0.05)
    finally:
        checkpoint.cancel()
        logging.getLogger().removeHandler(tail)
        await runner.stop()
        fetcher.close()
        await link.close()
        ctx.destroy(linger=0)
        per = {s: buffer.stats(s) for s in STREAMS}
        stats = {
            "device_id": cfg.device_id,
            "first_seq": first_seq,
            "last_seq": core.last_seq,
            "produced": core.produced,
            "acked": {s: snd.acked for s, snd in core.senders.items()},
            "buffered": {s: st.count for s, st in per.items()},
            "evicted": {s: st.evicted for s, st in per.items()},
            "expired": {s: st.expired for s, st in per.items()},
            "reconnects": core.uplink.reconnects,
            "resends": sum(snd.resends for snd in core.senders.values()),
            "download": dict(fetcher.counters),
            "commands_run": core.commands_run,
            "commands_refused": {str(k): v for k, v in core.commands_refused.items()},
            "rotations": core.rotations,
            "reboot_requested": reboot_requested,
        }
        buffer.close()
        steady.checkpoint()
        write_atomic(cfg.data_dir / "stats.json", json.dumps(stats).encode(), 0o644)
        log.info("agent stopped", extra={"produced": core.produced, "buffered": stats["buffered"]})
    return stats


def _command_check(cfg: AgentConfig):
    """The cloud-signature check of commands, if the agent was given the cloud's signing key."""
    if not cfg.cloud_sign_keys:
        return None
    from common.command_auth import CommandVerifier, load_public_key

    verifier = CommandVerifier(cfg.device_id, [load_public_key(p) for p in cfg.cloud_sign_keys])
    return lambda cmd, now_ms: verifier.problem(cmd.seq, cmd.name, cmd.args, cmd.expires_ms, cmd.envelope, now_ms)


def _rotation(cfg: AgentConfig):
    """The rotation schedule of the agent's certificate (DATA/cert.pem), if it has one."""
    path = cfg.data_dir / "cert.pem"
    if not path.exists():
        return None
    from common.rotation import RotationSchedule, certificate_validity

    return RotationSchedule(*certificate_validity(path.read_bytes()), check_every_s=cfg.rotation_check_s)
