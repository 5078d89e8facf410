"""Events and effects of enrollment and revocation, shared by the cloud and gateway cores and their drivers.

Cloud: a relayed ``EnrollRequest`` becomes ``EnrollDecide``; the driver asks the
security service (on the store thread) and feeds back ``EnrollDecided``. A new
signed revocation list comes in as ``RevocationsChanged`` and goes to every gateway.

Gateway: an enrollment frame arrives as ``EnrollAttempt`` (with the CurveZMQ key
the handshake proved); an accepted certificate becomes ``AdmitDevice`` (the
driver verifies it against the fleet CA and adds the key to the allowlist) and
comes back as ``Admitted``. A revocation list from the cloud becomes
``ApplyRevocations`` (the driver verifies it and makes it durable before it takes
effect) and comes back, as does the cached list at start, as ``RevocationsApplied``.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.protocol.messages import EnrollReply, EnrollRequest, KeyRotation

__all__ = [
    "AdmitDevice",
    "Admitted",
    "ApplyRevocations",
    "EnrollAttempt",
    "EnrollDecide",
    "EnrollDecided",
    "GatewayVerified",
    "InstallGatewayCertificate",
    "InstallRotation",
    "PeerKey",
    "PrepareRotation",
    "RotateNow",
    "RotationInstalled",
    "RotationKeyReady",
    "RefusedHello",
    "RevocationsApplied",
    "RevocationsChanged",
    "VerifyGateway",
]


@dataclass(frozen=True, slots=True)
class EnrollDecide:
    peer: str
    gateway_id: str
    site: str
    request: EnrollRequest | KeyRotation


@dataclass(frozen=True, slots=True)
class EnrollDecided:
    peer: str
    reply: EnrollReply


@dataclass(frozen=True, slots=True)
class RefusedHello:
    """A Hello refused because its key is bound to another node id or site (``common.key_binding``): audited."""

    peer: str
    node_id: str
    site: str
    curve_key: str
    reason: str


@dataclass(frozen=True, slots=True)
class RevocationsChanged:
    envelope: bytes


@dataclass(frozen=True, slots=True)
class EnrollAttempt:
    peer: str
    curve_key: str  # Z85: what the CURVE handshake proved the peer holds
    request: EnrollRequest


@dataclass(frozen=True, slots=True)
class AdmitDevice:
    reply: EnrollReply


@dataclass(frozen=True, slots=True)
class Admitted:
    reply: EnrollReply  # outcome "refuse" if the certificate did not verify here


@dataclass(frozen=True, slots=True)
class ApplyRevocations:
    envelope: bytes


@dataclass(frozen=True, slots=True)
class RevocationsApplied:
    version: int
    revoked: frozenset[str]
    quarantined: frozenset[str]


@dataclass(frozen=True, slots=True)
class PeerKey:
    """Before a device peer's first frame: the CurveZMQ key its handshake proved, and the device id
    ``allowed_devices`` names for that key (the certificate's subject, for enrolled devices; "" if none)."""

    peer: str
    curve_key: str
    name: str


@dataclass(frozen=True, slots=True)
class RotateNow:
    """The device is told to rotate now (the ``rotate`` command, or ``edgefleet devices rotate``)."""


@dataclass(frozen=True, slots=True)
class PrepareRotation:
    """Effect: make the next CurveZMQ key pair (kept beside the current one until it is certified)."""


@dataclass(frozen=True, slots=True)
class RotationKeyReady:
    public_key: str


@dataclass(frozen=True, slots=True)
class InstallRotation:
    """Effect: the cloud certified the new key: keep the certificate, switch to the new key, reconnect."""

    reply: EnrollReply


@dataclass(frozen=True, slots=True)
class RotationInstalled:
    not_before_ms: int
    not_after_ms: int


@dataclass(frozen=True, slots=True)
class VerifyGateway:
    """Effect (cloud): check a gateway's certificate against the fleet CA, its key, id and site."""

    peer: str
    gateway_id: str
    site: str
    curve_key: str
    certificate: bytes


@dataclass(frozen=True, slots=True)
class GatewayVerified:
    peer: str
    problem: str  # "" if the certificate verified
    renewal: bytes = b""  # a fresh certificate for the same key, when the one shown is past 2/3 of its life


@dataclass(frozen=True, slots=True)
class InstallGatewayCertificate:
    """The cloud renewed this gateway's certificate (same key): check it and keep it for the next sessions."""

    pem: bytes
