"""The gateway's part of fleet security, sans-IO: enrollment relay, revocation enforcement, quarantine.

``GatewaySecurity.intercept(view, event, now)`` sees every event before the
gateway core does and either handles it (``Screened(effects, handled=True)``) or
lets it through (None, or ``Screened(effects, handled=False)``: its effects go
first, the core's follow). It sees the core only through ``gateway.ports.CoreView`` (is the
cloud session up, which device a peer speaks for, close a session), and when the
cloud session comes up the core asks it for what to show the cloud
(``cloud_session_up``). It holds no keys and signs nothing:

- **Enrollment.** A device with no certificate talks to the gateway's enrollment
  socket (any CurveZMQ key may connect there, and only ``EnrollRequest`` is
  understood). The request must name the key the handshake proved (else it is
  refused: the certificate would bind a key the device does not hold); it is
  relayed to the cloud, and an accepted certificate is checked against the fleet
  CA and its key admitted to ``allowed_devices`` (``AdmitDevice``) before the
  answer goes back to the device.
- **Revocation.** Lists from the cloud are verified and written to disk by the
  driver before they take effect (``ApplyRevocations`` -> ``RevocationsApplied``;
  the cached list is applied the same way at start, so it holds through a cloud
  outage and a restart). A revoked device's session is dropped at once and any
  frame from it is refused; its CURVE handshake is refused by the ZAP handler.
- **Rotation.** A device asks for its next key to be certified on its authenticated
  session (``KeyRotation``); the answer is checked and the new key admitted like an
  enrollment's, the old key staying admitted beside it (the overlap).
- **Its own certificate.** Given one (``edgefleet ca issue --role gateway``), the
  gateway shows it to the cloud at every session start (``NodeCertificate``); a
  cloud run with ``--require-gateway-certs`` takes enrollments only from gateways
  whose certificate binds their id and site to the key they connected with.
- **Identity.** With ``bind_identity`` (a gateway holding the fleet CA), a device
  must say Hello as the device id its CurveZMQ key was admitted under (the
  subject of the certificate that named that key): a key cannot speak for another device.
- **Quarantine.** A quarantined device stays connected on a remediation channel:
  only ``update`` and ``config`` commands are delivered to it (others are held
  back and reported), and each telemetry batch it sends is accepted but flagged
  with a critical ``security`` report for the cloud.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from common.effects import UPSTREAM, Effect, Log, Received, Send
from common.protocol import Command, ErrorReply, Hello, TelemetryBatch
from common.protocol.codec import TelemetryEntries
from common.protocol.messages import EnrollReply, EnrollRequest, KeyRotation, NodeCertificate, RevocationUpdate
from common.security_events import (
    AdmitDevice,
    Admitted,
    ApplyRevocations,
    EnrollAttempt,
    InstallGatewayCertificate,
    PeerKey,
    RevocationsApplied,
)
from gateway.ports import CoreView, Screened
from gateway.reports import report

__all__ = ["ENROLL_PREFIX", "REMEDIATION_COMMANDS", "GatewaySecurity"]

# local enrollment budgets: the whole socket like the cloud's per-gateway bucket (0.5/s, burst 20), each key
# a burst of 5 then one every 5 s; at most MAX_ENROLLING answers awaited, MAX_ENROLL_KEYS keys remembered
ENROLL_RATE, ENROLL_BURST = 0.5, 20
ENROLL_PER_KEY_RATE, ENROLL_PER_KEY_BURST = 0.2, 5
MAX_ENROLLING, MAX_ENROLL_KEYS = 1000, 10_000
ENROLL_PREFIX = "e:"


class _Budget:
    """Attempts per second with a burst (a token bucket of whole attempts), and ``refund`` for an attempt
    that turned out not to cost anything upstream."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst, self.tokens, self.last = rate, float(burst), float(burst), None

    def take(self, n: int, now: float) -> bool:
        if self.last is not None and now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now if self.last is None else max(self.last, now)
        if self.tokens < n:
            return False
        self.tokens -= n
        return True

    def refund(self, n: int) -> None:
        self.tokens = min(self.burst, self.tokens + n)  # peers of the enrollment socket are named "e:<routing id hex>"
REMEDIATION_COMMANDS = ("update", "config")


class GatewaySecurity:
    """``bind_identity``: a device must say Hello as the id its key was admitted under (its certificate's)."""

    def __init__(self, *, bind_identity: bool = False, certificate: bytes = b"") -> None:
        self.bind_identity = bind_identity
        self.certificate = certificate  # this gateway's own (edgefleet ca issue), shown to the cloud per session
        self.peer_names: dict[str, str] = {}  # device peer -> the id its key was admitted under
        self.version = 0
        self.revoked: frozenset[str] = frozenset()
        self.quarantined: frozenset[str] = frozenset()
        self.enrolling: dict[str, str] = {}  # device id -> enrollment peer waiting for the answer
        self._enroll_all = _Budget(ENROLL_RATE, ENROLL_BURST)  # every enrollment relayed by this gateway
        self._enroll_keys: OrderedDict[str, _Budget] = OrderedDict()  # per handshake key (bounded)
        self.revoked_peers: dict[str, str] = {}  # peer -> the revoked device it spoke for (frames refused)
        self.counters = {
            "enroll_requests": 0, "enroll_accepted": 0, "enroll_refused": 0, "enroll_key_mismatch": 0, "enroll_rate_limited": 0,
            "revoked_refused": 0, "identity_mismatch": 0, "rotations_relayed": 0, "revoked_disconnected": 0, "quarantine_flagged": 0, "quarantine_held_commands": 0,
        }

    def cloud_session_up(self) -> list[Effect]:
        """The cloud session just came up: this gateway's certificate, if it has one, is shown at once."""
        return [Send(UPSTREAM, NodeCertificate(self.certificate))] if self.certificate else []

    def intercept(self, view: CoreView, event: Any, now: float) -> Screened | None:
        match event:
            case PeerKey(peer, _, name):
                if len(self.peer_names) >= 100_000:
                    self.peer_names.clear()
                self.peer_names[peer] = name
                return Screened([], True)
            case EnrollAttempt(peer, key, req):
                return Screened(self._attempt(view, peer, key, req, now), True)
            case Received(peer, EnrollReply() as reply) if peer == UPSTREAM:
                return Screened([AdmitDevice(reply)] if reply.outcome == "accept" else self._answer(reply), True)
            case Admitted(reply):
                return Screened(self._answer(reply), True)
            case Received(peer, NodeCertificate(pem)) if peer == UPSTREAM and self.certificate:
                return Screened([InstallGatewayCertificate(pem)], True)  # renewed by the cloud before it expires
            case Received(peer, RevocationUpdate(envelope)) if peer == UPSTREAM:
                return Screened([ApplyRevocations(envelope)], True)
            case RevocationsApplied(version, revoked, quarantined):
                return Screened(self._applied(view, version, revoked, quarantined), True)
            case Received(peer, Command(device_id=device_id, name=name)) if peer == UPSTREAM and device_id in self.quarantined:
                if name not in REMEDIATION_COMMANDS:
                    self.counters["quarantine_held_commands"] += 1
                    return Screened([Log("warning", "command for a quarantined device not delivered",
                                         {"device": device_id, "command": name})], True)
                return None
            case Received(peer, msg) if peer != UPSTREAM:
                return self._from_device(view, peer, msg, now)
        return None

    def _attempt(self, view: CoreView, peer: str, key: str, req: EnrollRequest, now: float) -> list[Effect]:
        self.counters["enroll_requests"] += 1

        def refuse(why: str) -> list[Effect]:
            self.counters["enroll_refused"] += 1
            return [Send(peer, EnrollReply(req.device_id, key, "refuse", why[:256], b"")),
                    Log("warning", "enrollment refused", {"device": req.device_id, "reason": why})]

        if req.curve_key != key:
            self.counters["enroll_key_mismatch"] += 1
            return refuse(f"device {req.device_id!r}: asks for a certificate for key {req.curve_key[:12]}... "
                          f"but connected with {key[:12]}...: enroll with the key you connect with")
        if req.device_id in self.revoked:
            return refuse(f"device {req.device_id!r} is revoked; an operator must reinstate it")
        if (why := self._over_enroll_limit(key, req.device_id, now)) is not None:
            self.counters["enroll_rate_limited"] += 1
            return [Send(peer, EnrollReply(req.device_id, key, "retry", why, b""))]
        if not view.link_up:
            return [Send(peer, EnrollReply(req.device_id, key, "pending", "the cloud is unreachable; ask again later", b""))]
        self.enrolling[req.device_id] = peer
        return [Send(UPSTREAM, req)]

    def _over_enroll_limit(self, key: str, device_id: str, now: float) -> str | None:
        """Why this attempt is not relayed now (None: it is): the enrollment socket is open to any key, so each
        key and the socket as a whole have a local budget, below the cloud's per-gateway one, and the requests
        waiting for the cloud are bounded (an anonymous flood must not spend real devices' share)."""
        bucket = self._enroll_keys.pop(key, None) or _Budget(ENROLL_PER_KEY_RATE, ENROLL_PER_KEY_BURST)
        self._enroll_keys[key] = bucket
        while len(self._enroll_keys) > MAX_ENROLL_KEYS:
            self._enroll_keys.popitem(last=False)
        if not bucket.take(1, now):
            return f"device {device_id!r}: this key asks too often; ask again later"
        if len(self.enrolling) >= MAX_ENROLLING and device_id not in self.enrolling:
            return "too many enrollments are waiting for the cloud; ask again later"
        if not self._enroll_all.take(1, now):
            return "this gateway's enrollment rate is exceeded; ask again later"
        return None

    def _answer(self, reply: EnrollReply) -> list[Effect]:
        if reply.outcome == "retry":  # the cloud did not decide (its own limit, or no gateway certificate yet):
            self._enroll_all.refund(1)  # the attempt does not count against this gateway's budget either
        peer = self.enrolling.pop(reply.device_id, None)
        if reply.outcome == "accept":
            self.counters["enroll_accepted"] += 1
        elif reply.outcome == "refuse":
            self.counters["enroll_refused"] += 1
        log = Log("info", "enrollment answered", {"device": reply.device_id, "outcome": reply.outcome, "detail": reply.detail})
        return [log] if peer is None else [Send(peer, reply), log]

    def _applied(self, view: CoreView, version: int, revoked: frozenset[str], quarantined: frozenset[str]) -> list[Effect]:
        self.version, self.revoked, self.quarantined = version, revoked, quarantined
        self.revoked_peers = {p: d for p, d in self.revoked_peers.items() if d in revoked}  # reinstated: heard again
        out: list[Effect] = [Log("info", "revocation list in force", {"version": version, "revoked": len(revoked),
                                                                      "quarantined": len(quarantined)})]
        for peer, device in view.open_sessions():
            if device in revoked:
                view.close_session(peer)
                self.revoked_peers[peer] = device
                self.counters["revoked_disconnected"] += 1
                out += [Send(peer, ErrorReply("revoked", f"device {device!r} is revoked")),
                        Log("warning", "revoked device disconnected", {"device": device, "version": version})]
        return out

    def _from_device(self, view: CoreView, peer: str, msg: Any, now: float) -> Screened | None:
        session_device = view.device_of(peer)
        device = msg.node_id if isinstance(msg, Hello) else session_device if session_device is not None else self.revoked_peers.get(peer)
        if device is None:
            return None
        if isinstance(msg, Hello) and self.bind_identity and self.peer_names.get(peer, device) not in (device, ""):
            self.counters["identity_mismatch"] += 1
            return Screened([Send(peer, ErrorReply("identity", f"said Hello as {device!r} but its CurveZMQ key is the one "
                                                               f"certified for {self.peer_names[peer]!r}"))], True)
        if device in self.revoked:
            self.counters["revoked_refused"] += 1
            view.close_session(peer)
            if len(self.revoked_peers) < 10_000:  # bounded: a reconnect needs a new handshake, which ZAP refuses
                self.revoked_peers[peer] = device
            return Screened([Send(peer, ErrorReply("revoked", f"device {device!r} is revoked; frames refused"))], True)
        if isinstance(msg, KeyRotation) and session_device is not None:
            if msg.device_id != device:
                return Screened([Send(peer, ErrorReply("wrong-device", f"session is {device!r}, rotation says {msg.device_id!r}"))], True)
            if not view.link_up:
                return Screened([Send(peer, EnrollReply(device, msg.new_curve_key, "pending", "the cloud is unreachable", b""))], True)
            self.counters["rotations_relayed"] += 1
            self.enrolling[device] = peer  # the answer goes back on this authenticated session
            return Screened([Send(UPSTREAM, msg)], True)
        if device in self.quarantined and isinstance(msg, TelemetryBatch | TelemetryEntries) and session_device is not None:
            self.counters["quarantine_flagged"] += 1
            return Screened([report(device, "security", {"event": "quarantined-telemetry", "stream": msg.stream}, now)], False)
        return None
