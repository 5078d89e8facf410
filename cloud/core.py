"""The cloud's sans-IO core: gateway sessions, committing forwarded records exactly once, and commands.

A ForwardBatch becomes a ``StoreIngest`` effect; only when the store answers
``Stored`` (committed) is the batch acknowledged. Acknowledgements are
cumulative over the gateway's outbox sequence of one stream, so the core only
advances a gateway's watermark over contiguous batches: a batch that arrives
after a lost one is stored (the store deduplicates on (device, stream, seq))
but not acknowledged until the gap before it is filled. The session remembers
the ranges stored past a gap (``ahead``, at most ``MAX_AHEAD`` per stream), so
when the gateway resends the lost batch alone (its fast retransmit on repeated
acknowledgements: ``common.uplink``) the watermark jumps over them: nothing
stored is sent twice.

Commands wait in the store as "queued" until the gateway serving their device
confirms it holds them ("held"); they are (re)sent whenever that gateway's
session comes up and every ``command_retry_s`` while it stays up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.effects import (
    CommandsReady,
    Effect,
    Event,
    Firmware,
    LoadCommands,
    Log,
    Malformed,
    Received,
    Send,
    SetTimer,
    Start,
    StoreCommandStatus,
    StoreIngest,
    StoreTouch,
    Stored,
    TimerFired,
)
from common.errors import ProtocolError
from common.protocol import (
    STREAMS,
    ChunkRequest,
    Command,
    CommandAck,
    ErrorReply,
    ForwardAck,
    ForwardBatch,
    ForwardRecord,
    GatewayStatus,
    Heartbeat,
    Hello,
    HelloAck,
    Message,
    OfferRequest,
    split_records,
    unpack_entries,
)
from common.protocol.messages import (
    DdiCredentials,
    EnrollReply,
    EnrollRequest,
    KeyRotation,
    NodeCertificate,
    RevocationUpdate,
)
from common.key_binding import KeyBindings
from common.security_events import (
    EnrollDecide,
    EnrollDecided,
    GatewayVerified,
    PeerKey,
    RefusedHello,
    RevocationsChanged,
    VerifyGateway,
)
from common.uplink import agreed_version, silent_peers

__all__ = ["CloudCore", "DdiCredentialsChanged"]

MAX_AHEAD = 64  # ranges stored past a gap a session remembers per stream


@dataclass(frozen=True, slots=True)
class DdiCredentialsChanged:
    """A site's DDI token table now (after an issue or revocation, and at start): sent to its gateways, and
    to each of them again at every session start."""

    msg: DdiCredentials


@dataclass(slots=True)
class GatewaySession:
    gateway_id: str
    site: str
    last_rx: float
    contiguous: dict[str, int] = field(default_factory=dict)  # stream -> outbox sequence stored up to
    ahead: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # stream -> ranges stored past a gap
    certified: bool = False  # its NodeCertificate verified (id, site and key bound by the fleet CA)
    sent: dict[tuple[str, int], None] = field(default_factory=dict)  # commands sent on this session (bounded)


class CloudCore:
    """Feed it events with ``handle(event, now)``; run the effects it returns."""

    def __init__(
        self, cloud_id: str = "cloud", *, heartbeat_s: float = 1.0, window: int = 8000, command_retry_s: float = 30.0,
        require_gateway_certs: bool = False,
        verify_gateways: bool = True,
    ) -> None:
        # verify_gateways: the cloud has a CA and learns each peer's key (PeerKey); without, certificates are ignored
        self.verify_gateways = verify_gateways
        # with require_gateway_certs, only a gateway whose certificate verified may relay enrollments and rotations
        self.require_gateway_certs = require_gateway_certs
        self.peer_keys: dict[str, str] = {}  # gateway peer -> the CurveZMQ key its handshake proved
        # each key's gateway id and site (allowlist name, else its first Hello): checked before a Hello is honoured
        self.bindings = KeyBindings()
        self.cloud_id = cloud_id
        self.heartbeat_s = heartbeat_s
        self.window = window
        self.command_retry_s = command_retry_s
        self.sessions: dict[str, GatewaySession] = {}
        self.revocations = b""  # the current signed revocation list, sent to every gateway
        self.ddi: dict[str, DdiCredentials] = {}  # site -> its DDI devices' token hashes, sent to its gateways
        self.counters = {"batches": 0, "records": 0, "stored": 0, "duplicates": 0, "rejected": 0, "malformed": 0, "commands_sent": 0,
                         "hello_refused": 0, "foreign_acks_refused": 0}

    def peer_of(self, gateway_id: str) -> str | None:
        for peer, s in self.sessions.items():
            if s.gateway_id == gateway_id:
                return peer
        return None

    def handle(self, event: Event, now: float) -> list[Effect]:
        match event:
            case Start():
                return [SetTimer("heartbeat", now + self.heartbeat_s), SetTimer("commands", now + self.command_retry_s)]
            case Received(peer, msg):
                return self._received(peer, msg, now)
            case Malformed(peer, error):
                self.counters["malformed"] += 1
                return [Send(peer, ErrorReply("malformed", str(error)))]
            case Stored((peer, stream, first, last), stored, duplicates):
                return self._stored(peer, stream, first, last, stored, duplicates)
            case Stored(_, _, _):
                return []
            case PeerKey(peer, key, name):
                if len(self.peer_keys) >= 100_000:
                    self.peer_keys.clear()
                self.peer_keys[peer] = key
                self.bindings.peer(peer, key, name)
                return []
            case GatewayVerified(peer, problem, renewal):
                session = self.sessions.get(peer)
                if session is None:
                    return []
                if problem:
                    del self.sessions[peer]
                    return [Send(peer, ErrorReply("certificate", problem[:256])),
                            Log("warning", "gateway certificate refused", {"gateway": session.gateway_id, "error": problem})]
                session.certified = True
                out = [Log("info", "gateway certificate verified", {"gateway": session.gateway_id, "site": session.site})]
                if renewal:  # past 2/3 of its life: a fresh one for the same key
                    out += [Send(peer, NodeCertificate(renewal)),
                            Log("info", "gateway certificate renewed", {"gateway": session.gateway_id})]
                return out
            case EnrollDecided(peer, reply):
                return [Send(peer, reply)] if peer in self.sessions else []
            case DdiCredentialsChanged(msg):
                self.ddi[msg.site] = msg
                return [Send(peer, msg) for peer, s in self.sessions.items() if s.site == msg.site]
            case RevocationsChanged(envelope):
                self.revocations = envelope
                return [Send(peer, RevocationUpdate(envelope)) for peer in self.sessions]
            case CommandsReady(commands):
                out: list[Effect] = []
                for gateway_id, cmd in commands:
                    peer = self.peer_of(gateway_id)
                    if peer is not None:
                        self.counters["commands_sent"] += 1
                        if isinstance(cmd, Command):  # only what was sent on a session may be reported held on it
                            sent = self.sessions[peer].sent
                            if len(sent) >= 100_000:
                                del sent[next(iter(sent))]
                            sent[(cmd.device_id, cmd.seq)] = None
                        out.append(Send(peer, cmd))
                return out
            case TimerFired("commands"):
                return [SetTimer("commands", now + self.command_retry_s), *[LoadCommands(s.gateway_id) for s in self.sessions.values()]]
            case TimerFired("heartbeat"):
                out = [SetTimer("heartbeat", now + self.heartbeat_s)]
                for peer in silent_peers(self.sessions, now, self.heartbeat_s):
                    s = self.sessions.pop(peer)
                    out.append(Log("warning", "gateway silent: session closed", {"gateway": s.gateway_id, "site": s.site}))
                return out
        return []

    def _received(self, peer: str, msg: Message, now: float) -> list[Effect]:
        session = self.sessions.get(peer)
        if session is not None:
            session.last_rx = now
        match msg:
            case Hello(node_id, "gateway", site, low, high):
                version = agreed_version(peer, low, high)
                if isinstance(version, Send):
                    return [version]
                if (why := self.bindings.check(peer, node_id, site)) is not None:  # before anything is honoured
                    self.counters["hello_refused"] += 1
                    return [Send(peer, ErrorReply("identity", why[:256])),
                            Log("warning", "gateway Hello refused", {"gateway": node_id, "site": site, "error": why}),
                            RefusedHello(peer, node_id, site, self.bindings.key_of(peer) or "", why)]
                for old in [p for p, s in self.sessions.items() if s.gateway_id == node_id and p != peer]:
                    del self.sessions[old]  # the gateway reconnected on a new socket
                self.sessions[peer] = GatewaySession(node_id, site, now)
                return [
                    StoreTouch(node_id, site),
                    Send(peer, HelloAck(self.cloud_id, version, int(self.heartbeat_s * 1000), self.window)),
                    Log("info", "gateway session up", {"gateway": node_id, "site": site}),
                    LoadCommands(node_id),
                    *([Send(peer, RevocationUpdate(self.revocations))] if self.revocations else []),
                    *([Send(peer, self.ddi[site])] if site in self.ddi else []),
                ]
            case Hello(node_id=node_id, role=role):
                return [Send(peer, ErrorReply("role", f"{node_id!r} said role {role!r}; the cloud serves gateways"))]
            case _ if session is None:
                return [Send(peer, ErrorReply("hello-first", f"send Hello before {type(msg).__name__}"))]
            case ForwardBatch(gateway_id, _, stream, base, first, last, blob):
                if gateway_id != session.gateway_id or stream not in STREAMS or not base < first <= last:
                    return [Send(peer, ErrorReply("bad-batch", f"batch {stream} {first}..{last} from {gateway_id!r} on session {session.gateway_id!r}"))]
                session.contiguous[stream] = max(session.contiguous.get(stream, 0), base)
                return self._ingest(peer, session, stream, first, last, blob)
            case GatewayStatus(gateway_id, ts_ms, values) if gateway_id == session.gateway_id:
                record = ForwardRecord(gateway_id, "state", 0, ts_ms, "gateway.status", values)
                return [StoreIngest(None, gateway_id, session.site, [record])]
            case NodeCertificate() if not self.verify_gateways:
                return [Log("info", "gateway certificate ignored: the cloud has no CA", {"gateway": session.gateway_id})]
            case NodeCertificate(pem):
                key = self.peer_keys.get(peer, "")
                return [VerifyGateway(peer, session.gateway_id, session.site, key, pem)]
            case EnrollRequest() | KeyRotation() if self.require_gateway_certs and not session.certified:
                device = msg.device_id
                # "retry": its certificate may be on its way (it is sent right after HelloAck and checked on the store thread)
                why = f"gateway {session.gateway_id!r} has no verified certificate (yet); it may not relay enrollments"
                key = msg.curve_key if isinstance(msg, EnrollRequest) else msg.new_curve_key
                return [Send(peer, EnrollReply(device, key, "retry", why, b""))]
            case EnrollRequest() | KeyRotation():
                return [EnrollDecide(peer, session.gateway_id, session.site, msg)]
            case CommandAck(device_id, seq, "held", _):
                if (device_id, seq) not in session.sent:  # not sent to this gateway: another's device, or made up
                    self.counters["foreign_acks_refused"] += 1
                    return [Log("warning", "command report refused", {"gateway": session.gateway_id, "device": device_id,
                                                                       "seq": seq, "error": "not sent on this session"})]
                return [StoreCommandStatus(device_id, seq, "held", f"held by {session.gateway_id}")]
            case OfferRequest() | ChunkRequest():
                return [Firmware(peer, session.gateway_id, msg)]
            case Heartbeat():
                return [StoreTouch(session.gateway_id, session.site), Send(peer, Heartbeat(int(now * 1000)))]
        return [Send(peer, ErrorReply("unexpected", f"{type(msg).__name__} is not handled by the cloud"))]

    def _ingest(self, peer: str, session: GatewaySession, stream: str, first: int, last: int, blob: bytes) -> list[Effect]:
        out: list[Effect] = []
        try:
            entries = unpack_entries(blob)
        except ProtocolError as exc:
            self.counters["malformed"] += 1
            return [Send(peer, ErrorReply("malformed", str(exc)))]
        records, errors = split_records(entries)
        for i, error in errors:  # a corrupt outbox entry can never be stored; count it and say so, never loop on it
            self.counters["rejected"] += 1
            out.append(Log("error", "rejected outbox entry", {"gateway": session.gateway_id, "stream": stream, "entry": first + i, "error": str(error)}))
        self.counters["batches"] += 1
        self.counters["records"] += len(records)
        return [*out, StoreIngest((peer, stream, first, last), session.gateway_id, session.site, records)]

    def _stored(self, peer: str, stream: str, first: int, last: int, stored: int, duplicates: int) -> list[Effect]:
        self.counters["stored"] += stored
        self.counters["duplicates"] += duplicates
        session = self.sessions.get(peer)
        if session is None:
            return []  # the session ended meanwhile; the gateway will resend and the store deduplicates
        contiguous = session.contiguous.get(stream, 0)
        ahead = session.ahead.get(stream)
        if first <= contiguous + 1:
            contiguous = max(contiguous, last)
            if ahead:  # the gap is filled: over the ranges stored past it
                ahead.sort()
                while ahead and ahead[0][0] <= contiguous + 1:
                    contiguous = max(contiguous, ahead.pop(0)[1])
            session.contiguous[stream] = contiguous
        elif last > contiguous:
            ranges = session.ahead.setdefault(stream, [])
            if len(ranges) >= MAX_AHEAD:  # forgotten: the gateway sends it again after its ack timeout
                ranges.remove(max(ranges))
            ranges.append((first, last))
        return [Send(peer, ForwardAck(stream, contiguous, stored, duplicates))]
