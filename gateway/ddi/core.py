"""The gateway's DDI part, sans-IO: hawkBit's Direct Device Integration API mapped onto the fleet.

Devices whose update client polls a hawkBit server (SWUpdate's suricatta, rauc-hawkbit-updater) poll
their site gateway instead (``docs/DDI.md``). Each is a fleet device: the gateway is the origin of its
records (its own sequences per stream, saved in ``DATA/ddi/state.json`` before a record is appended), so
the cloud stores, forwards and alerts on them exactly as on an agent's:

- a poll (``GET /{tenant}/controller/v1/{controllerId}``) says the device is alive: a ``ddi.poll`` record
  on its state stream at most every ``seen_interval_s`` (offline alerts, last seen);
- ``PUT .../configData`` is its inventory (an ``inventory`` record: the attributes, its hardware model,
  ``update_modules`` = ``swupdate``);
- an ``update`` command held for it (a rollout's install, site-gated or not: ``gateway.command_relay``)
  is its DDI action, ``actionId`` the command's number; offered (``deploymentBase`` link) only while the
  command may be delivered (inside the window the site's rollout opened) and once the release is in the
  site cache, its artifact served from there with ``Range``;
- ``POST .../deploymentBase/{actionId}/feedback``: ``closed`` + ``success`` is our ``committed``, ``closed`` +
  ``failure`` or ``rejected`` is ``failed``; the outcome is an ``update`` record on the critical stream
  (answered 200 only once it is durable in the outbox), the command is finished, and the site's rollout
  runner hears it like an agent's outcome; the other executions are progress, kept as the action's state;
- a command that expires at the gateway while its action is open becomes ``cancelAction``.

Authentication is ``gateway.ddi.tokens``: every refusal is a 401 with one text, counted; at most one
``ddi.refused`` report per source address a minute goes to the cloud's audit log, and a source refused
more than ``refusals_per_minute`` times a minute gets 429 without its token being looked at.

    ddi = DdiDevices("gw-1", "site-1", relay, tokens, tenant="default", poll_s=60.0)
    effects = ddi.request(DdiRequest(...), now)   # DdiResponse (at once, or after Persisted) + effects
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from common.effects import Append, Effect, Log
from common.protocol import Command, ForwardRecord, encode_record
from gateway.command_relay import CommandRelay
from gateway.ddi.api import (
    bad_request,
    deployment,
    error,
    fine,
    parse_config_data,
    parse_feedback,
    parse_range,
    poll_answer,
    unauthorized,
)
from gateway.ddi.events import ArtifactFailed, ArtifactInfo, ArtifactReady, DdiRequest, DdiResponse, PrepareArtifact, SaveDdiState
from gateway.ddi.tokens import DdiTokens
from gateway.reports import OUTBOX, report
from gateway.rollout_effects import DeviceOutcome

__all__ = ["DDI_MODULE", "DdiDevices"]

DDI_MODULE = "swupdate"  # the update module of DDI devices: the release's artifact is the .swu
_ROUTE = re.compile(r"^/(?P<tenant>[^/]{1,64})/controller/v1/(?P<cid>[^/]{1,128})(?P<rest>(/[^/]{1,200}){0,5})$")
OUTCOME = {("closed", "success"): "committed", ("closed", "failure"): "failed", ("rejected", "failure"): "failed",
           ("rejected", "none"): "failed", ("rejected", "success"): "failed"}


class DdiDevices:
    def __init__(self, gateway_id: str, site: str, relay: CommandRelay, tokens: DdiTokens, *, tenant: str = "default",
                 poll_s: float = 60.0, seen_interval_s: float = 60.0, refusals_per_minute: int = 30,
                 revoked: Callable[[], frozenset[str]] = frozenset, site_rollouts: bool = False,
                 seen: Callable[[str, int], None] | None = None) -> None:
        self.gateway_id, self.site, self.relay, self.tokens, self.tenant = gateway_id, site, relay, tokens, tenant
        self.poll_s, self.seen_interval_s, self.refusals_per_minute = poll_s, seen_interval_s, refusals_per_minute
        self.revoked, self.site_rollouts, self.seen = revoked, site_rollouts, seen  # seen: the site's alerts hear polls
        self.devices: dict[str, dict[str, Any]] = {}  # the saved state: device -> seqs, actions, installed, ...
        self.artifacts: dict[tuple[str, str], ArtifactInfo | str] = {}  # (version, hw) -> info, or why it cannot be
        self.preparing: set[tuple[str, str]] = set()
        # record token -> (request waiting for it or -1, what follows once it is durable, the action it closes or None)
        self.waiting: dict[tuple[str, str, str, int], tuple[int, Callable[[], list[Effect]], int | None]] = {}
        self._refusals: dict[str, list[float]] = {}  # source -> [minute start, count, last report at, count reported]
        self.counters = {"ddi_polls": 0, "ddi_refused": 0, "ddi_throttled": 0, "ddi_feedback": 0, "ddi_downloads": 0,
                         "ddi_updated": 0, "ddi_failed": 0}

    # -- state ---------------------------------------------------------------------------

    def load(self, blob: bytes) -> None:
        """The state saved before a restart (``DATA/ddi/state.json``)."""
        self.devices = json.loads(blob).get("devices", {}) if blob else {}

    def _save(self) -> SaveDdiState:
        return SaveDdiState(json.dumps({"devices": self.devices}, sort_keys=True).encode())

    def _device(self, device_id: str) -> dict[str, Any]:
        return self.devices.setdefault(device_id, {"seq": {}, "actions": {}, "installed": None, "seen_ms": 0, "polls": 0,
                                                   "inventory": False, "cancel": []})

    def _record(self, device_id: str, stream: str, kind: str, values: dict[str, Any], now: float) -> tuple[Append, tuple]:
        """The next record of ``device_id`` (the gateway is its origin): its sequence is saved before it is appended."""
        dev = self._device(device_id)
        seq = dev["seq"][stream] = dev["seq"].get(stream, 0) + 1
        rec = ForwardRecord(device_id, stream, seq, int(now * 1000), kind, values)
        token = ("ddi", device_id, stream, seq)
        return Append(OUTBOX, stream, [encode_record(rec)], token), token

    # -- requests ------------------------------------------------------------------------

    def request(self, req: DdiRequest, now: float) -> list[Effect]:
        m = _ROUTE.match(req.path)
        if m is None or m["tenant"] != self.tenant:
            return [DdiResponse(req.rid, 404, error(404, f"no DDI resource at {req.path[:120]!r} (tenant {self.tenant!r})"))]
        cid, rest = m["cid"], m["rest"]
        if self._throttled(req.source, now):
            self.counters["ddi_throttled"] += 1
            return [DdiResponse(req.rid, 429, error(429, "too many refused requests from this address; wait a minute"))]
        device, why = self.tokens.authenticate(req.authorization, cid, revoked=self.revoked())
        if device is None:
            return self._refuse(req, cid, why, now)
        parts = rest.strip("/").split("/") if rest else []
        try:
            match (req.method, parts):
                case ("GET", []):
                    return self._poll(device, req, now)
                case ("GET", ["deploymentBase" | "installedBase" as which, action]):
                    return self._deployment(device, req, which, _int(action))
                case ("POST", ["deploymentBase", action, "feedback"]):
                    return self._feedback(device, req, _int(action), now)
                case ("PUT", ["configData"]):
                    return self._config_data(device, req, now)
                case ("GET", ["cancelAction", action]):
                    return self._cancel(device, req, _int(action))
                case ("POST", ["cancelAction", action, "feedback"]):
                    return self._cancel_feedback(device, req, _int(action))
                case ("GET", ["softwaremodules", action, "artifacts", filename]):
                    return self._download(device, req, _int(action), filename)
        except ValueError as exc:
            return [DdiResponse(req.rid, 400, bad_request(str(exc)))]
        return [DdiResponse(req.rid, 405 if parts else 404, error(404, f"{req.method} {rest[:120]!r} is not part of the "
                                                                       "DDI this gateway serves (docs/DDI.md)"))]

    def _throttled(self, source: str, now: float) -> bool:
        entry = self._refusals.get(source)
        return entry is not None and now - entry[0] < 60 and entry[1] >= self.refusals_per_minute

    def _refuse(self, req: DdiRequest, cid: str, why: str, now: float) -> list[Effect]:
        """401, counted; the cloud's audit log hears of it at most once a minute per source."""
        self.counters["ddi_refused"] += 1
        if len(self._refusals) > 10_000:
            self._refusals.clear()  # bounded: forgetting only makes the next report come sooner
        entry = self._refusals.setdefault(req.source, [now, 0, -1e18, 0])
        if now - entry[0] >= 60:
            entry[0], entry[1] = now, 0
        entry[1] += 1
        out: list[Effect] = [DdiResponse(req.rid, 401, unauthorized(), headers=(("WWW-Authenticate", "TargetToken"),))]
        if now - entry[2] >= 60:
            count, entry[2], entry[3] = entry[1], now, 0
            out.append(report(cid[:128], "ddi.refused", {"source": req.source[:64], "reason": why[:200], "count": count,
                                                          "gateway": self.gateway_id}, now))
            out.append(Log("warning", "DDI request refused", {"source": req.source, "controller": cid[:64], "reason": why}))
        return out

    # -- poll ----------------------------------------------------------------------------

    def _poll(self, device: str, req: DdiRequest, now: float) -> list[Effect]:
        self.counters["ddi_polls"] += 1
        if self.seen is not None:
            self.seen(device, int(now * 1000))
        dev = self._device(device)
        dev["polls"] += 1
        out: list[Effect] = []
        save = False
        if now * 1000 - dev["seen_ms"] >= self.seen_interval_s * 1000:
            dev["seen_ms"] = int(now * 1000)
            append, _ = self._record(device, "state", "ddi.poll", {"polls": dev["polls"], "source": req.source[:64]}, now)
            dev["polls"] = 0
            out += [self._save(), append]
            save = True
        links: dict[str, str] = {}
        prefix = f"{req.base}/{self.tenant}/controller/v1/{device}"
        sleep = self.poll_s
        if dev["cancel"]:
            links["cancelAction"] = f"{prefix}/cancelAction/{dev['cancel'][0]}"
        else:
            action, effects = self._current(device, now, save)
            out += effects
            if action is not None:
                links["deploymentBase"] = f"{prefix}/deploymentBase/{action}?c={action}"
            elif self.preparing:
                sleep = min(sleep, 2.0)  # a release is being fetched into the site cache: look again soon
        if not dev["inventory"]:
            links["configData"] = f"{prefix}/configData"
        return [DdiResponse(req.rid, 200, poll_answer(sleep, links)), *out]

    def _current(self, device: str, now: float, saved: bool) -> tuple[int | None, list[Effect]]:
        """The action to offer ``device`` now (the number of its first deliverable update command), if its release
        is ready in the site cache; the effects of getting there (preparing it, finishing what cannot be done)."""
        dev = self._device(device)
        out: list[Effect] = []
        for cmd in self.relay.ready(device, now):
            key = str(cmd.seq)
            if key in dev["actions"] and dev["actions"][key]["state"] == "closed":
                out += self.relay.done(device, cmd.seq, dev["actions"][key]["status"], "ddi: finished before a restart", now)
                continue
            version = cmd.args.get("version", "")
            if cmd.name not in ("update", "download") or not version:
                out += self.relay.done(device, cmd.seq, "failed", f"ddi: {cmd.name!r} is not an install by version; a DDI "
                                                                  "device only installs releases", now)
                continue
            art = self.artifacts.get((version, self.tokens.hw_of(device)))
            if art is None:
                if (version, self.tokens.hw_of(device)) not in self.preparing:
                    self.preparing.add((version, self.tokens.hw_of(device)))
                    out.append(PrepareArtifact(version, self.tokens.hw_of(device)))
                return None, out
            if isinstance(art, str):
                return None, out + self._finish(device, cmd, version, "failed", art, now, None)
            if cmd.name == "download":  # the site cache holds it: the device downloads it at install time
                return None, out + self._finish(device, cmd, version, "downloaded", "held in the site cache", now, None)
            if key not in dev["actions"]:
                dev["actions"][key] = {"version": version, "state": "offered", "status": "", "execution": ""}
                if not saved:
                    out.append(self._save())
            return cmd.seq, out
        return None, out

    def artifact_ready(self, ev: ArtifactReady) -> list[Effect]:
        key = (ev.info.version, ev.hw)
        self.preparing.discard(key)
        if ev.info.module != DDI_MODULE:
            self.artifacts[key] = (f"release {ev.info.version} is a {ev.info.module!r} release; DDI devices install "
                                   f"{DDI_MODULE!r} releases (a .swu: edgefleet release create --module {DDI_MODULE})")
        else:
            self.artifacts[key] = ev.info
        return [Log("info", "DDI release ready in the site cache", {"release": ev.info.version, "hw": ev.hw,
                                                                    "module": ev.info.module})]

    def artifact_failed(self, ev: ArtifactFailed) -> list[Effect]:
        self.preparing.discard((ev.version, ev.hw))  # the next poll asks again
        return [Log("warning", "DDI release not prepared", {"release": ev.version, "hw": ev.hw, "error": ev.error})]

    # -- deployment, download --------------------------------------------------------------------

    def _info(self, device: str, action: int) -> tuple[dict[str, Any] | None, ArtifactInfo | None]:
        dev = self._device(device)
        act = dev["actions"].get(str(action))
        if act is None:
            return None, None
        art = self.artifacts.get((act["version"], self.tokens.hw_of(device)))
        if not isinstance(art, ArtifactInfo) and dev["installed"] and dev["installed"]["action"] == action:
            art = ArtifactInfo(**dev["installed"]["artifact"])
        return act, art if isinstance(art, ArtifactInfo) else None

    def _deployment(self, device: str, req: DdiRequest, which: str, action: int) -> list[Effect]:
        installed = self._device(device)["installed"]
        if which == "installedBase" and (installed is None or installed["action"] != action):
            return [DdiResponse(req.rid, 404, error(404, f"action {action} is not the installed one of {device!r}"))]
        act, art = self._info(device, action)
        if act is None or art is None or which == "deploymentBase" and act["state"] == "closed":
            return [DdiResponse(req.rid, 404, error(404, f"no open action {action} for {device!r}"))]
        href = f"{req.base}/{self.tenant}/controller/v1/{device}/softwaremodules/{action}/artifacts/{art.filename}"
        return [DdiResponse(req.rid, 200, deployment(action, art, href, installed=which == "installedBase"))]

    def _download(self, device: str, req: DdiRequest, action: int, filename: str) -> list[Effect]:
        act, art = self._info(device, action)
        if act is None or art is None or filename not in (art.filename, f"{art.filename}.MD5SUM"):
            return [DdiResponse(req.rid, 404, error(404, f"no artifact {filename[:80]!r} in action {action} of {device!r}"))]
        if filename.endswith(".MD5SUM"):
            return [DdiResponse(req.rid, 200, f"{art.md5}  {art.filename}\n".encode(), "text/plain")]
        span = parse_range(req.range, art.size)
        if span is None:
            return [DdiResponse(req.rid, 416, b"", "text/plain", (("Content-Range", f"bytes */{art.size}"),))]
        self.counters["ddi_downloads"] += 1
        if act["state"] == "offered":
            act["state"] = "downloading"
        start, end, partial = span
        headers = [("Accept-Ranges", "bytes"), ("Content-Disposition", f"attachment;filename={art.filename}"),
                   ("ETag", f'"{art.sha1}"')]
        if partial:
            headers.append(("Content-Range", f"bytes {start}-{end}/{art.size}"))
        return [DdiResponse(req.rid, 206 if partial else 200, b"", "application/octet-stream", tuple(headers),
                            file=(art.sha256, start, end))]

    # -- feedback ----------------------------------------------------------------------------

    def _feedback(self, device: str, req: DdiRequest, action: int, now: float) -> list[Effect]:
        execution, finished, details = parse_feedback(req.body)
        self.counters["ddi_feedback"] += 1
        dev = self._device(device)
        act = dev["actions"].get(str(action))
        if act is None:
            return [DdiResponse(req.rid, 404, error(404, f"no action {action} for {device!r}"))]
        if act["state"] == "closed":
            return [DdiResponse(req.rid, 200, fine())]  # a repeat: already recorded
        outcome = OUTCOME.get((execution, finished))
        if outcome is None:  # progress: proceeding, scheduled, resumed, download, downloaded, canceled
            act["state"], act["execution"] = "installing", execution
            return [DdiResponse(req.rid, 200, fine())]
        cmd = next((c for c in self.relay.held.for_device(device) if c.seq == action), None)
        reason = "; ".join(details)[:240] or f"{execution}/{finished}"
        return self._finish(device, cmd, act["version"], outcome, reason, now, req.rid, action=action)

    def _finish(self, device: str, cmd: Command | None, version: str, outcome: str, reason: str, now: float,
                rid: int | None, action: int | None = None) -> list[Effect]:
        """An action's end: the ``update`` record (durable first), then the command finished and the site told."""
        dev = self._device(device)
        action = cmd.seq if cmd is not None else action
        status = "done" if outcome in ("committed", "downloaded") else "failed"
        dev["actions"][str(action)] = {**dev["actions"].get(str(action), {"version": version}), "state": "closed",
                                       "status": status, "outcome": outcome}
        prev = dev["installed"]["version"] if dev["installed"] else ""
        if outcome == "committed":
            art = self.artifacts.get((version, self.tokens.hw_of(device)))
            dev["installed"] = {"action": action, "version": version,
                                "artifact": {k: getattr(art, k) for k in ArtifactInfo.__slots__} if isinstance(art, ArtifactInfo) else None}
            self.counters["ddi_updated"] += 1
        elif outcome == "failed":
            self.counters["ddi_failed"] += 1
        values = {"version": version, "outcome": outcome, "reason": f"ddi: {reason}"[:256], "module": DDI_MODULE,
                  "running_version": version if outcome == "committed" else prev or "?", "action": action}
        append, token = self._record(device, "critical", "update", values, now)

        def after() -> list[Effect]:  # once the record is durable: the command finished, the site's runner told
            out: list[Effect] = []
            if cmd is not None:
                out += self.relay.done(device, cmd.seq, status, f"ddi {outcome}: {reason}"[:256], now)
            if self.site_rollouts:
                out.append(DeviceOutcome(device, values))
            return out

        self.waiting[token] = (rid if rid is not None else -1, after, action)
        return [self._save(), append]

    def persisted(self, token: tuple) -> list[Effect]:
        """A record is durable in the outbox: the request waiting for it is answered, the command finished."""
        rid, after, _ = self.waiting.pop(tuple(token), (-1, list, None))
        return ([DdiResponse(rid, 200, fine())] if rid >= 0 else []) + after()

    def persist_failed(self, token: tuple, error_text: str) -> list[Effect]:
        """The outbox refused the record: the action it closed is open again and the device is told to send its
        feedback again (503); nothing was acknowledged that is not stored."""
        rid, _, action = self.waiting.pop(tuple(token), (-1, list, None))
        device = token[1]
        act = self._device(device)["actions"].get(str(action)) if action is not None else None
        if act is not None:
            act["state"] = "installing"
        out: list[Effect] = [self._save(), Log("warning", "DDI record not stored", {"device": device, "error": error_text})]
        return out + ([DdiResponse(rid, 503, error(503, "the gateway could not store this yet; send it again"))]
                      if rid >= 0 else [])

    # -- configData, cancel -----------------------------------------------------------------

    def _config_data(self, device: str, req: DdiRequest, now: float) -> list[Effect]:
        attrs = parse_config_data(req.body)
        dev = self._device(device)
        dev["inventory"] = True
        values: dict[str, Any] = {**attrs, "model": self.tokens.hw_of(device) or "ddi", "update_modules": DDI_MODULE,
                                  "agent": "ddi"}
        if dev["installed"]:
            values["firmware_version"] = dev["installed"]["version"]
        append, token = self._record(device, "state", "inventory", values, now)
        self.waiting[token] = (req.rid, list, None)
        return [self._save(), append]

    def expired(self, now: float) -> list[Effect]:
        """Open actions whose command the gateway no longer holds (expired): cancelled on the device."""
        out: list[Effect] = []
        for device, dev in self.devices.items():
            held = {c.seq for c in self.relay.held.for_device(device)}
            for key, act in dev["actions"].items():
                if act["state"] != "closed" and int(key) not in held and int(key) not in dev["cancel"]:
                    dev["cancel"].append(int(key))
                    act["state"] = "closed"
                    act["status"] = "expired"
                    out.append(Log("info", "DDI action cancelled: its command expired", {"device": device, "action": key}))
        return [self._save(), *out] if out else []

    def _cancel(self, device: str, req: DdiRequest, action: int) -> list[Effect]:
        if action not in self._device(device)["cancel"]:
            return [DdiResponse(req.rid, 404, error(404, f"no cancellation {action} for {device!r}"))]
        return [DdiResponse(req.rid, 200, json.dumps({"id": str(action), "cancelAction": {"stopId": str(action)}}).encode())]

    def _cancel_feedback(self, device: str, req: DdiRequest, action: int) -> list[Effect]:
        execution, _, _ = parse_feedback(req.body)
        dev = self._device(device)
        if action not in dev["cancel"]:
            return [DdiResponse(req.rid, 404, error(404, f"no cancellation {action} for {device!r}"))]
        if execution in ("closed", "canceled", "rejected"):
            dev["cancel"].remove(action)
            return [self._save(), DdiResponse(req.rid, 200, fine())]
        return [DdiResponse(req.rid, 200, fine())]


def _int(text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise ValueError(f"{text[:20]!r} is not an action id")
    return int(text)
