"""A site's part of a rollout, signed by the cloud, verified by the gateway before it acts on it.

The body (canonical JSON inside a ``common.signed`` Ed25519 envelope of kind
``rollout-site-plan``, audience the site) carries the rollout id, its plan (the
fleet-wide per-minute start limit replaced by this site's share), the stage of
each of the site's devices as the cloud assigned them, the last stage the cloud
approved, and the rollout's state. A gateway holds no signing key: it can run
only what the cloud approved, and a relayed or replayed plan fails ``verify``
(seq must rise per site). Every new approval, pause or abort is a new envelope
with a higher ``seq``.

``site_engine(plan)`` builds the gateway's engine from a verified plan;
``apply_site_plan(engine, plan, now)`` brings a running one up to date.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.errors import RolloutError, TrustError
from common.rollouts.engine import RolloutEngine
from common.rollouts.events import Approve, Control
from common.rollouts.plan import DeviceInfo, RolloutPlan
from common.rollouts.states import RolloutState
from common.signed import EnvelopeVerifier, sign_envelope

__all__ = ["KIND", "SitePlan", "apply_site_plan", "sign_site_plan", "site_engine", "site_share", "verify_site_plan"]

KIND = "rollout-site-plan"


@dataclass(frozen=True, slots=True)
class SitePlan:
    rollout_id: str
    site: str
    plan: RolloutPlan
    stages: dict[str, int]
    approved_stage: int
    state: str  # the rollout's state at the cloud
    seq: int = 0

    def body(self) -> dict[str, Any]:
        return {"rollout": self.rollout_id, "site": self.site, "plan": self.plan.to_dict(), "stages": dict(self.stages),
                "approved_stage": self.approved_stage, "state": self.state}

    @classmethod
    def from_body(cls, b: Mapping[str, Any], seq: int = 0) -> SitePlan:
        """The plan from a body (a verified envelope's, or one this node saved after verifying it)."""
        try:
            return cls(str(b["rollout"]), str(b["site"]), RolloutPlan.from_dict(b["plan"]),
                       {str(k): int(v) for k, v in b["stages"].items()}, int(b["approved_stage"]), str(b["state"]), seq)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RolloutError(str(b.get("rollout", "?")), "plan", f"site plan body does not parse: {exc!r}") from None


def site_share(per_minute: int, site_devices: int, total_devices: int) -> int:
    """This site's share of the fleet-wide starts per minute (at least 1), in proportion to its devices."""
    return max(1, math.floor(per_minute * site_devices / max(1, total_devices)))


def sign_site_plan(sp: SitePlan, *, seq: int, now_ms: int, ttl_ms: int, key: Ed25519PrivateKey, key_id: str) -> bytes:
    return sign_envelope(KIND, sp.body(), seq=seq, issued_ms=now_ms, expires_ms=now_ms + ttl_ms, audience=sp.site,
                         key=key, key_id=key_id)


def verify_site_plan(verifier: EnvelopeVerifier, blob: bytes, site: str, now_ms: int) -> SitePlan:
    """The plan, if signed by a trusted key for this site, unexpired and newer than the last; else ``RolloutError``."""
    try:
        env = verifier.verify(blob, kind=KIND, audience=site, now_ms=now_ms)
    except TrustError as exc:
        raise RolloutError(None, "plan", f"site plan for {site!r} refused: {exc} (ask the cloud to resend it)") from exc
    return SitePlan.from_body(env.body, env.seq)


def site_engine(sp: SitePlan, devices: list[DeviceInfo], now_ms: int) -> tuple[RolloutEngine, list[object]]:
    """The gateway's engine for its part of the rollout, started; and its first effects."""
    eng = RolloutEngine(sp.rollout_id, sp.plan, site=sp.site, approved_stage=sp.approved_stage)
    eng.target(devices, stages=sp.stages)
    return eng, eng.handle(Control("start"), now_ms) + apply_site_plan(eng, sp, now_ms)


def apply_site_plan(eng: RolloutEngine, sp: SitePlan, now_ms: int) -> list[object]:
    """A newer plan for a running site engine: more stages approved, or the cloud paused, resumed or aborted."""
    events: list[object] = [Approve(sp.approved_stage)]
    cloud, local = RolloutState(sp.state), eng.state
    if cloud == RolloutState.ABORTED and local != RolloutState.ABORTED:
        events.append(Control("abort", reason="aborted at the cloud"))
    elif cloud == RolloutState.PAUSED and local == RolloutState.RUNNING:
        events.append(Control("pause", reason="paused at the cloud"))
    elif cloud == RolloutState.RUNNING and local == RolloutState.PAUSED and not eng.reason.startswith("failure threshold"):
        events.append(Control("resume", reason="resumed at the cloud"))
    return eng.handle_batch(events, now_ms)
