"""The gateway's part of rollouts: verify the cloud's signed site plans and drive the site with the same engine.

``SiteRollouts`` takes a site plan blob (``common.rollouts.siteplan``), verifies it
against the cloud's rollout key (``--rollout-key``; a forged, misdirected, expired or
replayed plan is refused and logged), and runs ``RolloutEngine(execute=True,
approved_stage=N)`` for the site's devices: inside the site's windows, under its rate
share, with the plan's gates and local failure threshold, never past the approved
stage; whether the uplink is up or not. It answers with core events:

- ``ReleaseCommands``: the engine decided these devices install now; the core delivers
  their held, site-gated ``update`` commands (the cloud created and numbered them);
- ``SiteReport``: a device's state in the rollout, for the cloud via the critical outbox
  (buffered while the uplink is down; the cloud converges when it drains).

State (the verified plan, the engine's header and device records, the verifier's
replay high-water marks) is saved to ``DATA/rollouts.json`` (temp file, fsync, rename)
on every engine ``Persist``, before the events acting on it are returned.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common.errors import RolloutError
from common.fileio import write_atomic
from common.install_deadline import LATE_INSTALL_REFUSED
from common.rollouts import DeviceEvent, DeviceInfo, DeviceReport, DeviceState, Install, Persist, RolloutEngine, Tick
from common.rollouts.siteplan import SitePlan, apply_site_plan, site_engine, verify_site_plan
from common.signed import EnvelopeVerifier, key_id_for
from gateway.rollout_effects import ReleaseCommands, SiteReport

__all__ = ["SiteRollouts"]

log = logging.getLogger("edgefleet.gateway.rollouts")

OUTCOMES = {"committed": DeviceEvent.COMMIT, "rolled_back": DeviceEvent.ROLLBACK, "failed": DeviceEvent.FAIL,
            LATE_INSTALL_REFUSED: DeviceEvent.LATE}  # late: the device did not begin past its window


class SiteRollouts:
    def __init__(self, data_dir: Path, site: str, rollout_key: Ed25519PublicKey) -> None:
        self.path = data_dir / "rollouts.json"
        self.site = site
        self.verifier = EnvelopeVerifier({key_id_for(rollout_key): rollout_key})
        self.engines: dict[str, RolloutEngine] = {}
        self.plans: dict[str, SitePlan] = {}
        self.counters = {"plans_verified": 0, "plans_refused": 0, "released": 0}

    # -- inputs ------------------------------------------------------------------------

    def load(self, now_ms: int) -> list[object]:
        """After a start: the saved engines come back; devices installing are released again."""
        if not self.path.exists():
            return []
        saved = json.loads(self.path.read_text())
        self.verifier.load_state(saved.get("verifier") or {})
        out: list[object] = []
        for rid, r in (saved.get("rollouts") or {}).items():
            sp = SitePlan.from_body(r["plan"], r["seq"])
            self.plans[rid] = sp
            self.engines[rid] = RolloutEngine.restore(sp.plan, r["header"], r["devices"], site=self.site,
                                                      approved_stage=sp.approved_stage)
            eng = self.engines[rid]
            busy = [d for d, rec in eng.devices.items() if rec.state in (DeviceState.INSTALLING, DeviceState.TRIAL)]
            if busy and eng.windows.is_open(self.site, now_ms):  # else: they time out and are retried in a window
                closes = eng.windows.closes_at_ms(self.site, now_ms)
                out.append(ReleaseCommands(tuple(sorted(busy)), closes or now_ms + int(eng.plan.timeout_s * 1000), rid))
        return out

    def plan(self, blob: bytes, now_ms: int) -> list[object]:
        try:
            sp = verify_site_plan(self.verifier, blob, self.site, now_ms)
        except RolloutError as exc:
            self.counters["plans_refused"] += 1
            log.warning("site plan refused", extra={"error": str(exc)})
            return []
        self.counters["plans_verified"] += 1
        self.plans[sp.rollout_id] = sp
        if sp.rollout_id not in self.engines:
            eng, effects = site_engine(sp, [DeviceInfo(d, self.site) for d in sp.stages], now_ms)
            self.engines[sp.rollout_id] = eng
            log.info("site plan accepted", extra={"rollout": sp.rollout_id, "devices": len(sp.stages),
                                                  "approved_stage": sp.approved_stage})
        else:
            effects = apply_site_plan(self.engines[sp.rollout_id], sp, now_ms)
        return self._effects(sp.rollout_id, effects, force_save=True)

    def outcome(self, device_id: str, values: dict[str, Any], now_ms: int) -> list[object]:
        event = OUTCOMES.get(str(values.get("outcome", "")))
        out: list[object] = []
        if event is None:
            return out
        for rid, eng in self.engines.items():
            if device_id in eng.devices and str(values.get("version", "")) == eng.plan.release.version:
                out += self._effects(rid, eng.handle(DeviceReport(device_id, event, str(values.get("reason", ""))), now_ms))
        return out

    def tick(self, now_ms: int) -> list[object]:
        out: list[object] = []
        for rid, eng in self.engines.items():
            out += self._effects(rid, eng.handle(Tick(), now_ms))
        return out

    # -- effects -----------------------------------------------------------------------

    def _effects(self, rid: str, effects: list[object], force_save: bool = False) -> list[object]:
        out: list[object] = []
        release: dict[int, list[str]] = {}
        downloaded: list[object] = []
        saved = False
        for e in effects:
            if isinstance(e, Persist):
                if not saved:
                    self._save()
                    saved = True
                out += [SiteReport(d["device_id"], {"rollout": rid, "state": d["state"], "reason": d["reason"],
                                                    "stage": d["stage"], "attempts": d["attempts"]})
                        for d in e.devices]
            elif isinstance(e, Install):
                if e.download_only:  # the agent fetches at install time (over-the-wire delivery adds download-only)
                    downloaded.append(DeviceReport(e.device_id, DeviceEvent.DOWNLOADED, "fetched at install time"))
                else:
                    release.setdefault(e.not_after_ms, []).append(e.device_id)
        if force_save and not saved:
            self._save()
        for not_after, devices in sorted(release.items()):
            self.counters["released"] += len(devices)
            out.append(ReleaseCommands(tuple(devices), not_after, rid))
        if downloaded:
            eng = self.engines[rid]
            out += self._effects(rid, eng.handle_batch(downloaded, eng.stage_started_ms))
        return out

    def _save(self) -> None:
        state = {
            "verifier": self.verifier.state(),
            "rollouts": {
                rid: {"plan": self.plans[rid].body(), "seq": self.plans[rid].seq, "header": eng.header(),
                      "devices": [r.to_dict() for r in eng.devices.values()]}
                for rid, eng in self.engines.items()
            },
        }
        write_atomic(self.path, json.dumps(state).encode(), 0o600)
