"""The cloud's rollout service: engines for the active rollouts, ticked by the driver, fed device outcomes.

It lives on the cloud's event loop; every store call runs on the store thread
(``executor``). The engine's effects run in order: a ``Persist`` is committed in
the same store-thread call *before* the commands its ``Install``/``Revert`` effects
create, then ``on_command(device, seq)`` pushes each command to its gateway.

Inputs: ``tick()`` (the driver calls it every ``tick_s``), ``observe_batch(site,
records)`` after each committed batch (an ``update`` record is a device's outcome;
any record is a heartbeat; an unknown device that matches a running rollout joins
it: continuous targeting), and the operator's ``create``/``control`` from the API.

Health signals from telemetry: any record is a heartbeat; numeric values feed the plan's
metric rules; ``uptime_s`` going back is a reboot.

``install_command(effect, install_args)`` is the one place an install becomes a
device command: ``update`` with ``{"version": X}`` (the device fetches the release through its
gateway's site cache), or with the rollout's ``install_args`` when they name a manifest and an image.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.rollouts.conflicts import holders
from cloud.rollouts.dry_run import dry_run_view
from cloud.rollouts.facts import running_versions, update_modules
from cloud.store.commands import CommandRecords
from cloud.store.releases import ReleaseRecords
from cloud.store.rollouts import RolloutRecords
from cloud.store.telemetry import TelemetryRecords
from common.errors import RolloutConflict, RolloutError, RolloutNotFound
from common.fileio import write_atomic
from common.install_deadline import BY_ARG, LATE_INSTALL_REFUSED
from common.protocol import SitePlanEnvelope
from common.rollouts import (
    Approve,
    Control,
    DeviceEvent,
    DeviceHealth,
    DeviceInfo,
    DeviceReport,
    DeviceSeen,
    DeviceState,
    Install,
    Persist,
    Revert,
    RolloutEngine,
    RolloutPlan,
    RolloutState,
    Tick,
)
from common.rollouts.windows import install_deadline_args
from common.rollouts.siteplan import SitePlan, sign_site_plan, site_share
from common.signed import key_id_for

__all__ = ["RolloutService", "install_command", "load_or_create_rollout_key", "rollout_view"]

log = logging.getLogger("edgefleet.cloud.rollouts")

OUTCOMES = {"committed": DeviceEvent.COMMIT, "rolled_back": DeviceEvent.ROLLBACK, "failed": DeviceEvent.FAIL,
            "downloaded": DeviceEvent.DOWNLOADED, LATE_INSTALL_REFUSED: DeviceEvent.LATE}
PLAN_TTL_MS = 30 * 86_400_000
GATED_TTL_MS = 30 * 86_400_000  # a site-gated update command waits at the gateway this long at most


def load_or_create_rollout_key(data_dir: Path) -> Ed25519PrivateKey:
    """The cloud's key for signing site plans: DATA/rollout_signing.key (0600), made on first start, with
    its public half in DATA/rollout_signing.pub for the gateways (``edgefleet gateway --rollout-key``)."""
    path, pub = data_dir / "rollout_signing.key", data_dir / "rollout_signing.pub"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise RolloutError(None, "invalid", f"{path} is not an Ed25519 private key; move it away to make a new one")
    else:
        key = Ed25519PrivateKey.generate()
        write_atomic(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()), 0o600)
    write_atomic(pub, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
    return key


def _wall_ms() -> int:
    return int(time.time() * 1000)


def install_command(effect: Install, install_args: Mapping[str, str], now_ms: int,
                    deadline_args: Mapping[str, str] | None = None) -> tuple[str, dict[str, str], int]:
    """(command name, args, expires_ms) for one install, expiring when the window closes; its signed args carry the
    deadline the device checks before it begins (``common.install_deadline``: ``deadline_args``, else ``install_by_ms``).
    Without ``install_args`` the device fetches the release through its gateway (``device_agent.download``); with a
    manifest and an image on the device they are for drills and tests of the install step alone."""
    args = dict(install_args) if "manifest" in install_args else {**install_args, "version": effect.version}
    deadline = deadline_args if deadline_args is not None else {BY_ARG: str(effect.not_after_ms)}
    return "update", {**args, "rollout_version": effect.version, **deadline}, max(effect.not_after_ms, now_ms + 1000)


def download_command(effect: Install, rollout_id: str, now_ms: int) -> tuple[str, dict[str, str], int]:
    """Download-only, ahead of the window: the agent fetches and checks the release, installs nothing, and
    reports ``downloaded``; the install command later finds it on the device."""
    return "download", {"version": effect.version, "rollout": rollout_id}, max(effect.not_after_ms, now_ms + 60_000)


def revert_command(effect: Revert, rollout_id: str, now_ms: int, ttl_ms: int = 86_400_000) -> tuple[str, dict[str, str], int]:
    """'Return to the previous release': the agent rolls back to its other slot (``rollback`` command)."""
    return "rollback", {"rollout": rollout_id}, now_ms + ttl_ms


class RolloutService:
    """The engines of the active rollouts. It is handed the records it uses: its own (``rollouts``), the
    devices' commands (installs), the releases (what a plan's release is) and telemetry (the devices,
    what each runs)."""

    def __init__(
        self,
        rollouts: RolloutRecords,
        executor: Executor,
        on_command: Callable[[str, int], None],
        *,
        commands: CommandRecords,
        releases: ReleaseRecords,
        telemetry: TelemetryRecords,
        now_ms: Callable[[], int] = _wall_ms,
        signing_key: Ed25519PrivateKey | None = None,
        send_to_gateway: Callable[[str, object], None] | None = None, steps: Executor | None = None,
    ) -> None:
        self.steps = steps or executor  # engine steps: the leader's fenced store thread (cloud.coordination)
        self.rollouts, self.commands, self.releases, self.telemetry = rollouts, commands, releases, telemetry
        self.signing_key = signing_key
        self.send_to_gateway = send_to_gateway
        self._plan_seq = 0
        self._uptime: dict[str, float] = {}  # device -> last uptime_s seen (a decrease is a reboot)
        self._sent_head: dict[str, tuple[int, str]] = {}
        self.executor = executor
        self.on_command = on_command
        self.now_ms = now_ms
        self.engines: dict[str, RolloutEngine] = {}
        self.install_args: dict[str, dict[str, str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _call(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.wrap_future(self.executor.submit(fn))

    async def restore(self) -> int:
        """Load the active rollouts from the store (after a restart); returns how many."""
        self._loop = asyncio.get_running_loop()
        rows = await self._call(lambda: self.rollouts.list_rollouts(("draft", "scheduled", "running", "paused")))
        for row in rows:
            devices = await self._call(lambda r=row: self.rollouts.rollout_devices(r["rollout_id"]))
            plan = RolloutPlan.from_dict(row["plan"])
            self.engines[row["rollout_id"]] = RolloutEngine.restore(plan, row["header"], devices,
                                                                    execute=not plan.site_autonomy)
            self.install_args[row["rollout_id"]] = dict(row["install_args"] or {})
        return len(rows)

    # -- operator ----------------------------------------------------------------------

    async def _targeted(self, body: Mapping[str, Any], only: Collection[str] | None) -> tuple[str, RolloutPlan, RolloutEngine]:
        """The plan of ``body`` and its engine with every matching device targeted (nothing stored).
        ``only``: the devices a target query or group resolved to (None: the plan's selector alone); they become
        the selector's ``devices``, so the rollout keeps to them (continuous targeting adds no one else)."""
        plan_json = dict(body.get("plan") or {})
        if only is not None:  # the devices a query or group named now: the target, kept with the plan (no newcomers)
            selector = dict(plan_json.get("selector") or {})
            named = set(only) & set(selector["devices"]) if selector.get("devices") else set(only)
            plan_json["selector"] = {**selector, "devices": sorted(named) or ["<none>"]}
        release = dict(plan_json.get("release") or {})
        if not release.get("version"):
            raise RolloutError(None, "invalid", "plan.release.version is required (the release to roll out)")
        known = await self._call(lambda: self.releases.get_release(release["version"]))
        if known is not None:  # the store's release record is authoritative
            release |= {"hardware": list(known["hw"]), "security_version": known["security_version"],
                        "module": json.loads(known["manifest_body"]).get("module") or "rootfs-image"}
        plan = RolloutPlan.from_dict({**plan_json, "release": release})
        now = self.now_ms()
        existing = await self._call(lambda: self.rollouts.list_rollouts())
        rid = str(body.get("id") or f"r{len(existing) + 1}")
        inventory = await self._call(self.telemetry.list_devices)
        running = await self._call(lambda: running_versions(self.telemetry))
        modules = await self._call(lambda: update_modules(self.telemetry))
        devices = [DeviceInfo(d["device_id"], d["site_id"], version=running.get(d["device_id"], ""),
                              state=d.get("state") or "active", update_modules=modules.get(d["device_id"]))
                   for d in inventory]
        others = await self._call(self.rollouts.active_rollout_devices)
        if plan.site_autonomy and (self.signing_key is None or self.send_to_gateway is None):
            raise RolloutError(rid, "invalid", "site_autonomy needs the cloud's rollout signing key and a gateway link")
        engine = RolloutEngine(rid, plan, execute=not plan.site_autonomy)
        engine.target(devices)
        held = holders(rid, now, others, [d for d in engine.devices])
        if held:  # re-target with the holders known: those devices are skipped with the reason
            engine = RolloutEngine(rid, plan, execute=not plan.site_autonomy)
            engine.target(devices, held=held)
        return rid, plan, engine

    async def preview(self, body: Mapping[str, Any], only: Collection[str] | None = None) -> dict[str, Any]:
        """A dry run of ``create``: who each stage would take, who is left out and why, and when each site's
        first install could start (its next maintenance window). Nothing is stored or sent."""
        _, plan, engine = await self._targeted(body, only)
        return dry_run_view(plan, engine, max(self.now_ms(), int(body.get("start_at_ms") or 0)))

    async def create(self, body: Mapping[str, Any], only: Collection[str] | None = None) -> dict[str, Any]:
        """A new rollout from the API's JSON: ``plan`` (RolloutPlan.to_dict shape, partial), ``install_args``,
        optional ``id``, ``start_at_ms``, ``draft``; ``only``: the devices a target query or group resolved to."""
        self._loop = asyncio.get_running_loop()
        rid, plan, engine = await self._targeted(body, only)
        now = self.now_ms()
        args = {str(k): str(v) for k, v in (body.get("install_args") or {}).items()}
        row = {"rollout_id": rid, "release_version": plan.release.version, "plan": plan.to_dict(),
               "header": engine.header(), "install_args": args, "created_ms": now}
        if not await asyncio.wrap_future(self.steps.submit(self.rollouts.create_rollout, row)):
            raise RolloutError(rid, "invalid", f"a rollout with the id {rid!r} exists; choose another --id")
        self.engines[rid] = engine
        self.install_args[rid] = args
        effects = engine.handle(Tick(), now)  # the device rows, persisted
        if plan.site_autonomy:  # every install is made now and held at the gateway until its site releases it
            await self._run(rid, [Install(r.device_id, r.site, plan.release.version, False, now + GATED_TTL_MS)
                                  for r in engine.devices.values() if r.state != DeviceState.SKIPPED])
        if not body.get("draft"):
            effects += engine.handle(Control("start", at_ms=int(body.get("start_at_ms") or 0)), now)
        await self._run(rid, effects)
        if plan.site_autonomy:
            await self.send_plans(rid)
        return await self.show(rid)

    async def control(self, rid: str, action: str, revert: bool = False) -> dict[str, Any]:
        engine = self.engines.get(rid)
        if engine is None or engine.state in (RolloutState.COMPLETED, RolloutState.ABORTED):
            row = await self._call(lambda: self.rollouts.get_rollout(rid))
            if row is None:
                raise RolloutNotFound(rid, f"no rollout by the id of {rid!r} (`edgefleet rollout list`)")
            raise RolloutConflict(rid, "state", f"rollout {rid} is {row['state']}: it cannot {action}")
        effects = engine.handle(Control(action, revert=revert, reason=f"{action} by the operator"), self.now_ms())
        await self._run(rid, effects)
        return await self.show(rid)

    async def show(self, rid: str) -> dict[str, Any]:
        row = await self._call(lambda: self.rollouts.get_rollout(rid))
        if row is None:
            raise RolloutNotFound(rid, f"no rollout by the id of {rid!r} (`edgefleet rollout list`)")
        devices = await self._call(lambda: self.rollouts.rollout_devices(rid))
        return rollout_view(row, devices)

    async def list(self) -> list[dict[str, Any]]:
        rows = await self._call(self.rollouts.list_rollouts)
        return [rollout_view(r, None) for r in rows]

    # -- driver inputs -----------------------------------------------------------------

    def tick(self) -> None:
        now = self.now_ms()
        for rid, engine in list(self.engines.items()):
            # a finished engine stays (until restart) so late outcomes of its devices are still recorded
            self._submit(rid, engine.handle(Tick(), now))

    def observe_batch(self, site: str, records: Iterable[Any]) -> None:
        """A committed batch: outcomes, heartbeats and newcomers for every active rollout."""
        if not self.engines:
            return
        now = self.now_ms()
        per_device: dict[str, list[object]] = {}
        site_reports: dict[str, list[object]] = {}
        metrics: dict[str, dict[str, float]] = {}
        reboots: set[str] = set()
        for r in records:
            if r.seq == 0:
                if r.kind == "rollout":  # a site driving its part reports a device's state
                    try:
                        state = DeviceState(str(r.values.get("state")))
                    except ValueError:
                        continue
                    site_reports.setdefault(str(r.values.get("rollout")), []).append(
                        DeviceReport(r.device_id, DeviceEvent.COMMIT, str(r.values.get("reason", "")), state))
                continue  # the gateway's own reports
            events = per_device.setdefault(r.device_id, [])
            numbers = {k: float(v) for k, v in r.values.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            if numbers:
                metrics.setdefault(r.device_id, {}).update(numbers)
                up = numbers.get("uptime_s")
                if up is not None:  # uptime going back: the device rebooted (during its own install it is expected)
                    if up < self._uptime.get(r.device_id, 0.0):
                        reboots.add(r.device_id)
                    self._uptime[r.device_id] = up
            if r.kind == "update" and r.values.get("outcome") in OUTCOMES:
                events.append((str(r.values.get("version", "")), OUTCOMES[str(r.values["outcome"])], str(r.values.get("reason", ""))))
        for rid, engine in list(self.engines.items()):
            batch: list[object] = list(site_reports.get(rid, ())) if not engine.execute else []
            for device, outcomes in per_device.items():
                if device not in engine.devices:
                    batch.append(DeviceSeen(DeviceInfo(device, site)))
                    continue
                batch.append(DeviceHealth(device, "heartbeat"))
                if device in reboots:
                    batch.append(DeviceHealth(device, "reboot"))
                if engine.plan.metric_rules and device in metrics:
                    batch.append(DeviceHealth(device, "metrics", metrics[device]))
                if engine.execute:  # a coordinator takes device states from the sites' reports instead
                    batch += [DeviceReport(device, ev, why) for version, ev, why in outcomes
                              if version == engine.plan.release.version]
            if batch:
                before = len(engine.devices)
                effects = engine.handle_batch(batch, now)
                if not engine.execute and len(engine.devices) > before:
                    # newcomers of a coordinated rollout: their gated commands, and plans that include them
                    effects += [Install(r.device_id, r.site, engine.plan.release.version, False, now + GATED_TTL_MS)
                                for r in list(engine.devices.values())[before:] if r.state != DeviceState.SKIPPED]
                    self._sent_head.pop(rid, None)
                    if self._loop is not None:
                        self._loop.call_soon(self._plans_soon, rid)
                self._submit(rid, effects)

    # -- site plans --------------------------------------------------------------------

    def _plans_soon(self, rid: str) -> None:
        """After a step: new plans only if the stage or the state changed (a plan says nothing else new)."""
        engine = self.engines.get(rid)
        if engine is None:
            return
        head = (engine.stage, engine.state.value)
        if self._sent_head.get(rid) != head:
            self._sent_head[rid] = head
            asyncio.ensure_future(self.send_plans(rid))

    async def send_plans(self, rid: str, only_gateway: str | None = None) -> int:
        """Sign each site's part of coordinated rollout ``rid`` and send it to the site's gateways."""
        engine = self.engines.get(rid)
        if engine is None or engine.execute or self.signing_key is None or self.send_to_gateway is None:
            return 0
        gateway_sites = await self._call(self.rollouts.gateway_sites)
        by_site: dict[str, dict[str, int]] = {}
        for r in engine.devices.values():
            if r.state != DeviceState.SKIPPED:
                by_site.setdefault(r.site, {})[r.device_id] = r.stage
        total = sum(len(v) for v in by_site.values())
        now = self.now_ms()
        key_id = key_id_for(self.signing_key.public_key())
        sent = 0
        from dataclasses import replace

        for gateway_id, site in sorted(gateway_sites.items()):
            if site not in by_site or (only_gateway is not None and gateway_id != only_gateway):
                continue
            plan = replace(engine.plan, max_starts_per_minute=site_share(engine.plan.max_starts_per_minute,
                                                                         len(by_site[site]), total))
            sp = SitePlan(rid, site, plan, by_site[site], engine.stage, engine.state.value)
            self._plan_seq = max(self._plan_seq + 1, now)
            blob = sign_site_plan(sp, seq=self._plan_seq, now_ms=now, ttl_ms=PLAN_TTL_MS, key=self.signing_key,
                                  key_id=key_id)
            self.send_to_gateway(gateway_id, SitePlanEnvelope(rid, blob))
            sent += 1
        return sent

    def gateway_hello(self, gateway_id: str) -> None:
        """A gateway (re)connected: it gets the newest plan of every coordinated rollout again."""
        for rid, engine in self.engines.items():
            if not engine.execute:
                asyncio.ensure_future(self.send_plans(rid, only_gateway=gateway_id))

    # -- effects -----------------------------------------------------------------------

    def _submit(self, rid: str, effects: list[object]) -> None:
        if effects:
            fut = self.steps.submit(self._apply, rid, effects, self.now_ms())
            fut.add_done_callback(lambda f: self._pushed(rid, f))

    async def _run(self, rid: str, effects: list[object]) -> None:
        pushed = await asyncio.wrap_future(self.steps.submit(lambda: self._apply(rid, effects, self.now_ms())))
        for device, seq in pushed:
            self.on_command(device, seq)

    def _pushed(self, rid: str, fut: Any) -> None:
        exc = fut.exception()
        if exc is not None:
            log.error("saving a rollout step failed", extra={"rollout": rid, "error": str(exc)})
            return
        if self._loop is not None:
            for device, seq in fut.result():
                self._loop.call_soon_threadsafe(self.on_command, device, seq)

    def _apply(self, rid: str, effects: list[object], now: int) -> list[tuple[str, int]]:
        """On the store thread, in order: persist, then create the commands the effects after it ask for."""
        pushed: list[tuple[str, int]] = []
        args = self.install_args.get(rid, {})
        downloaded: list[object] = []
        engine = self.engines.get(rid)
        gated = engine is not None and not engine.execute
        for e in effects:
            if isinstance(e, Persist):
                self.rollouts.save_rollout_step(rid, e.rollout, e.devices, now)
                if gated and self._loop is not None:  # the sites hear of every approval, pause, resume or abort
                    self._loop.call_soon_threadsafe(self._plans_soon, rid)
            elif isinstance(e, Approve):
                if self._loop is not None:
                    self._loop.call_soon_threadsafe(self._plans_soon, rid)
            elif isinstance(e, Install) and gated and engine is not None:
                name, cargs, expires = install_command(e, args, now, install_deadline_args(engine.plan.windows, engine.plan.timezones, e.site))
                cargs["gate"], cargs["rollout"] = "site", rid
                pushed.append((e.device_id, self.commands.create_command(e.device_id, name, cargs, e.not_after_ms, now)))
            elif isinstance(e, Install):
                if e.download_only and "manifest" in args:
                    # a drill's install from files on the device: nothing to fetch ahead
                    downloaded.append(DeviceReport(e.device_id, DeviceEvent.DOWNLOADED, "fetched at install time"))
                    continue
                if e.download_only:  # fetched through the gateway now, installed inside the window later
                    name, cargs, expires = download_command(e, rid, now)
                    pushed.append((e.device_id, self.commands.create_command(e.device_id, name, cargs, expires, now)))
                    continue
                name, cargs, expires = install_command(e, args, now)
                pushed.append((e.device_id, self.commands.create_command(e.device_id, name, cargs, expires, now)))
            elif isinstance(e, Revert):
                name, cargs, expires = revert_command(e, rid, now)
                pushed.append((e.device_id, self.commands.create_command(e.device_id, name, cargs, expires, now)))
        if downloaded and self._loop is not None:
            engine = self.engines.get(rid)
            if engine is not None:
                self._loop.call_soon_threadsafe(lambda: self._submit(rid, engine.handle_batch(downloaded, self.now_ms())))
        return pushed


def rollout_view(row: Mapping[str, Any], devices: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A rollout as the API shows it: state, reason, stage, counts; with ``devices``, per-stage per-site progress."""
    plan = row["plan"]
    header = row["header"] or {}
    names = ["canary", *(f"wave {i}" for i in range(1, len(plan.get("waves") or ()) + 1))]
    view: dict[str, Any] = {
        "id": row["rollout_id"], "release": row["release_version"], "state": row["state"], "reason": row["reason"],
        "stage": names[min(int(header.get("stage", 0)), len(names) - 1)], "stage_index": header.get("stage", 0),
        "stages": names, "created_ms": row["created_ms"], "updated_ms": row["updated_ms"],
        "counters": header.get("counters", {}),
    }
    if devices is not None:
        progress: dict[str, dict[str, dict[str, int]]] = {}
        totals: dict[str, int] = {}
        for d in devices:
            site = progress.setdefault(names[d["stage"]], {}).setdefault(d["site"], {})
            site[d["state"]] = site.get(d["state"], 0) + 1
            totals[d["state"]] = totals.get(d["state"], 0) + 1
        view |= {"progress": progress, "totals": totals, "plan": plan,
                 "devices": [{k: d[k] for k in ("device_id", "site", "stage", "state", "reason", "attempts")} for d in devices]}
    return view
