"""The trust boundaries of issue 15 tried as an attacker would, against a running ``ProcFleet``; the security drill
(``simulations.security_drill``) counts what got through.

- ``cross_site_reads``: an operator token scoped to one site asks every read route for another site's data;
  an answer that holds any of it counts as a cross-site read allowed.
- ``impersonate_gateway``: an admitted gateway key of one site says Hello as another site's gateway (and as its
  own id at the other site), over a real CurveZMQ socket; a HelloAck counts as an impersonation accepted.
- ``forward_foreign_records``: the same key, honestly at its own site, forwards records (at sequence numbers the
  device has not reached) and a command report for a device of another site; the drill later counts what the
  cloud stored of them.
- ``replace_pending``: a device claims an id on the enrollment socket and waits for approval; an anonymous
  peer then claims the same id with its own key and serial; the identity still holding the first key afterwards
  means the pending identity was not replaced.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
import zmq

from common.keys import Allowlist, KeyPair, load_or_create_keypair, secure_client
from common.protocol import ForwardBatch, ForwardRecord, Hello, HelloAck, decode, encode, encode_record, pack_entries
from common.protocol.messages import EnrollRequest
from simulations.fleet import API_TIMEOUT_S, ProcFleet

__all__ = ["FOREIGN_SEQ", "cross_site_reads", "forward_foreign_records", "impersonate_gateway", "replace_pending"]

FOREIGN_SEQ = 10**12  # a sequence number no real device reaches: a record stored under it is the attacker's
ANSWER_S = 5.0


def cross_site_reads(fleet: ProcFleet, own_site: str, other_site: str,
                     other_ids: list[str]) -> tuple[int, int, list[str]]:
    """(read attempts, answers holding another site's data, reads that got no answer in time) for an operator
    scoped to ``own_site``."""
    user = f"scoped-{secrets.token_hex(3)}"
    fleet.api("/v1/users", {"user_id": user, "role": "operator", "sites": [own_site]})
    token = fleet.api("/v1/tokens", {"user_id": user})["token"]  # type: ignore[index]
    base = fleet.endpoints("cloud")["api"]
    device, gateway = other_ids[0], other_ids[-1]
    paths = [
        ("/v1/devices", {}), ("/v1/devices", {"site": other_site}), ("/v1/sites", {}), (f"/v1/sites/{other_site}", {}),
        ("/v1/telemetry/summary", {}), ("/v1/gaps", {}), ("/v1/gaps", {"site": other_site}), ("/v1/updates", {}),
        ("/v1/updates", {"device": device}), (f"/v1/devices/{device}/commands", {}), ("/v1/alerts", {"state": "all"}),
        ("/v1/silences", {}), ("/v1/fleet/devices", {}), (f"/v1/devices/{device}/history", {}),
        (f"/v1/devices/{device}/logs", {}), ("/v1/ghosts", {"silent_s": 0}), ("/v1/groups", {}),
        ("/v1/config/layers", {}), (f"/v1/config/explain/{device}", {}), ("/v1/config/status", {}),
        ("/v1/metrics", {"site": other_site}), ("/v1/metrics", {"device": device}), ("/v1/fleet/sites", {}),
        ("/v1/identities", {}), ("/v1/identities", {"site": other_site}), ("/v1/revocations", {}),
        ("/v1/audit", {}), ("/v1/ddi-tokens", {"site": other_site}), ("/v1/rollouts", {}), ("/metrics", {}),
    ]
    markers = [other_site, *other_ids, gateway]
    allowed, unanswered = 0, []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=API_TIMEOUT_S / 2) as client:
        for path, params in paths:
            t0 = time.monotonic()
            try:
                r = client.get(path, params=params)
            except httpx.TimeoutException:
                unanswered.append(f"{path} {params} (no answer in {time.monotonic() - t0:.0f} s)")
                continue
            if r.status_code < 300 and any(m in r.text for m in markers):
                allowed += 1
    return len(paths), allowed, unanswered


def _intruder(fleet: ProcFleet, name: str, site: str | None) -> KeyPair:
    """A gateway key admitted at the cloud: named for ``name`` (and ``site``), or with no name at all."""
    keys = load_or_create_keypair(fleet.dir(name))
    Allowlist(fleet.dir("cloud") / "allowed_gateways").add(keys.public, f"{name} {site}" if site else "")
    return keys


def _dealer(ctx: zmq.Context, keys: KeyPair, server_public: bytes, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    secure_client(sock, keys, server_public)
    sock.connect(endpoint)
    return sock


def _answer(sock: zmq.Socket, want: type, timeout_s: float = ANSWER_S) -> Any:
    """The first answer of type ``want`` within the time, else the last answer seen (or None)."""
    deadline, last = time.monotonic() + timeout_s, None
    while (left := deadline - time.monotonic()) > 0:
        if not sock.poll(int(left * 1000)):
            break
        last = decode(sock.recv())
        if isinstance(last, want):
            return last
    return last


def _cloud(fleet: ProcFleet) -> tuple[str, bytes]:
    ep = fleet.endpoints("cloud")
    return ep["gateways"], (fleet.dir("cloud") / "curve.key").read_bytes().strip()


def impersonate_gateway(fleet: ProcFleet, own_site: str, victim: str, victim_site: str) -> tuple[int, int]:
    """(Hello attempts, HelloAcks) for admitted keys saying Hello as ``victim`` or at ``victim_site``."""
    endpoint, public = _cloud(fleet)
    named = _intruder(fleet, "gw-intruder", own_site)
    unnamed = _intruder(fleet, "gw-unnamed", None)
    attempts = [(named, victim, victim_site), (named, victim, own_site), (named, "gw-intruder", victim_site),
                (unnamed, victim, victim_site)]
    ctx = zmq.Context()
    accepted = 0
    try:
        for keys, node_id, site in attempts:
            sock = _dealer(ctx, keys, public, endpoint)
            try:
                sock.send(encode(Hello(node_id, "gateway", site, 1, 1)))
                accepted += isinstance(_answer(sock, HelloAck), HelloAck)
            finally:
                sock.close(linger=0)
    finally:
        ctx.term()
    return len(attempts), accepted


def forward_foreign_records(fleet: ProcFleet, own_site: str, victim_device: str) -> int:
    """Forward records for ``victim_device`` (another site's) as gateway ``gw-intruder`` of ``own_site``; the
    number of records sent (the drill counts later how many the cloud stored)."""
    endpoint, public = _cloud(fleet)
    keys = _intruder(fleet, "gw-intruder", own_site)
    ctx = zmq.Context()
    now_ms = int(time.time() * 1000)
    records = [ForwardRecord(victim_device, "bulk", FOREIGN_SEQ + i, now_ms, "env", {"forged": 1.0}) for i in range(3)]
    try:
        sock = _dealer(ctx, keys, public, endpoint)
        sock.send(encode(Hello("gw-intruder", "gateway", own_site, 1, 1)))
        if not isinstance(_answer(sock, HelloAck), HelloAck):
            raise RuntimeError("security drill: the intruder's honest Hello at its own site was not answered")
        blob = pack_entries([encode_record(r) for r in records])
        sock.send(encode(ForwardBatch("gw-intruder", own_site, "bulk", 0, 1, len(records), blob)))
        _answer(sock, type(None), 3.0)  # the ForwardAck (or an error); what was stored is read from the store
        sock.close(linger=0)
    finally:
        ctx.term()
    return len(records)


def replace_pending(fleet: ProcFleet, gateway: str, site: str) -> tuple[str, str]:
    """Claim a new device id on ``gateway``'s enrollment socket (pending: serial unknown), then claim it again
    from an anonymous key and serial. (the first claim's serial, the serial the identity holds afterwards)."""
    endpoint = fleet.endpoints(gateway)["enroll"]
    server = (fleet.dir(gateway) / "curve.key").read_bytes().strip()
    device = f"dev-pending-{secrets.token_hex(2)}"
    first, anonymous = (KeyPair(*zmq.curve_keypair()) for _ in range(2))
    ctx = zmq.Context()
    try:
        for keys, serial in ((first, "SN-real"), (anonymous, "SN-anon")):
            sock = _dealer(ctx, keys, server, endpoint)
            try:
                sock.send(encode(EnrollRequest(device, keys.public.decode(), "sim-board-1", serial, "")))
                _answer(sock, type(None))
            finally:
                sock.close(linger=0)
    finally:
        ctx.term()
    rows = [i for i in fleet.api(f"/v1/identities?site={site}")["identities"] if i["device_id"] == device]  # type: ignore[index]
    return "SN-real", rows[0]["serial"] if rows else "<no identity>"  # the API shows serials, not keys

