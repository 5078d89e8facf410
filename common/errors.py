"""The one exception tree of EdgeFleet.

    EdgeFleetError
    ├── ProtocolError          untrusted bytes that are not a valid message
    │   └── VersionMismatch    no protocol version both peers speak
    ├── QueueError             the durable queue
    │   ├── QueueFullError     an append would exceed the byte bound (backpressure)
    │   └── QueueClosedError   the queue was closed before the request ran
    ├── StoreError             the cloud store (database)
    │   └── FencedOff          a leader-only write refused: the leader lease moved on (names both tokens)
    ├── ConfigError            a config file or flag that cannot be used
    ├── QueryError             a device filter query that does not parse (has .position)
    ├── NotFound               an id that names nothing (also a LookupError); the operator API answers 404
    │   ├── AlertNotFound      an alert id that names no alert (also a KeyError)
    │   ├── FleetNotFound      no such device or group (also a FleetError)
    │   ├── ReleaseNotFound    no such release (also a ReleaseError, reason ``not-found``)
    │   └── RolloutNotFound    no such rollout (also a RolloutError, reason ``not-found``)
    ├── Conflict               the object's present state does not allow the change; the API answers 409
    │   ├── ReleaseConflict    a release that exists, is being created or is published (also a ReleaseError)
    │   └── RolloutConflict    a rollout whose state does not allow it (also a RolloutError)
    ├── AccessError            an operator request refused by access control
    │   ├── Unauthenticated    no valid credentials (the API answers 401)
    │   ├── Forbidden          the principal's role or sites do not allow the action (403)
    │   ├── BodyTooLarge       a request body over its route's limit (413, naming the limit)
    │   └── RateLimited        too many failed attempts from one source (429)
    ├── FleetError             a fleet record that cannot change so (bad group kind, retired device...)
    │   └── TransitionError    a lifecycle transition the table forbids (names the device, from and to)
    ├── KeyFileError           a key file that is missing, unreadable or malformed
    ├── FileWriteError         a file not written durably (names the path and the cause; also an OSError)
    ├── ApiError               the operator API answered with an error
    ├── TrustError             signed input that must not be trusted
    │   ├── SignatureError     malformed, unsigned, badly signed, or signed by an unknown key
    │   ├── MisdirectedError   validly signed, but of another kind or for another audience
    │   ├── ExpiredError       validly signed, but outside its validity window
    │   ├── ReplayError        validly signed, but its sequence (or version) was already seen
    │   └── CertificateError   a node certificate that does not verify (names subject and cause)
    ├── UpdateError            a device update that cannot go on (names the version or file and the cause)
    │   ├── UpdateRefused      a manifest this device must not install (hardware, security floor, downgrade)
    │   └── BootloaderError    the boot environment could not be read or changed (names the slot)
    ├── EnrollmentError        a device's enrollment was refused (names the device and the reason)
    ├── AuditChainError        the audit log's hash chain is broken (a record edited, removed or moved)
    ├── FirmwareError          firmware releases: versions, manifests, chunks, images
    │   ├── VersionError       a firmware version string that does not parse (also a ValueError)
    │   ├── ManifestError      a manifest that must not be used (names the version; ``reason`` is a code)
    │   ├── ChunkError         a chunk whose size or SHA-256 does not match its manifest (names the index)
    │   ├── ImageError         a full image whose size or SHA-256 does not match its manifest
    │   └── ReleaseError       a release the cloud refuses to create or publish (names the version; ``reason``)
    │       └── ReleaseTooLarge  an image or signed manifest over the size limit (the API answers 413)
    ├── DeltaError             a binary delta that cannot be made or applied (corrupt patch, wrong base)
    │   └── DeltaNotWorthIt    the best delta is not clearly smaller than the compressed full image
    └── RolloutError           a rollout the cloud refuses to create or change, or a site plan a gateway refuses

``NotFound`` and ``Conflict`` say what kind of refusal an error is, across features: the
cloud's one HTTP error handler (``cloud.http.errors``) chooses the status from the class,
never from the message.

Every message names the object and the cause. Library errors are translated at
the adapter with ``raise Mapped(...) from exc``.
"""

# one-piece: the one exception tree of the project (house rule), drawn in the docstring and read as one

from __future__ import annotations

__all__ = [
    "AccessError",
    "AlertNotFound",
    "ApiError",
    "AuditChainError",
    "BodyTooLarge",
    "BootloaderError",
    "CertificateError",
    "CacheFull",
    "ChunkError",
    "ConfigError",
    "Conflict",
    "DeltaError",
    "DeltaNotWorthIt",
    "EdgeFleetError",
    "EnrollmentError",
    "ExpiredError",
    "FencedOff",
    "FileWriteError",
    "FirmwareError",
    "FleetError",
    "FleetNotFound",
    "Forbidden",
    "ImageError",
    "KeyFileError",
    "ManifestError",
    "MisdirectedError",
    "NotFound",
    "ProtocolError",
    "QueryError",
    "QueueClosedError",
    "QueueError",
    "QueueFullError",
    "RateLimited",
    "ReleaseConflict",
    "ReleaseError",
    "ReleaseNotFound",
    "ReleaseTooLarge",
    "TransferError",
    "ReplayError",
    "RolloutConflict",
    "RolloutError",
    "RolloutNotFound",
    "SignatureError",
    "StoreError",
    "TransitionError",
    "TrustError",
    "Unauthenticated",
    "UpdateError",
    "UpdateRefused",
    "VersionError",
    "VersionMismatch",
]


class EdgeFleetError(Exception):
    """Base of every error EdgeFleet raises on purpose."""


class ProtocolError(EdgeFleetError, ValueError):
    """Bytes from a peer that do not decode to a valid message."""

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


class VersionMismatch(ProtocolError):
    """The peer offered no protocol version this side speaks."""


class QueueError(EdgeFleetError):
    """A durable queue operation failed."""


class QueueFullError(QueueError):
    """An append would take the queue past its byte bound."""

    def __init__(self, path: str, size: int, limit: int, incoming: int) -> None:
        super().__init__(
            f"queue {path!r} is full: {size} + {incoming} bytes would exceed its bound of {limit} bytes"
        )
        self.path, self.size, self.limit, self.incoming = path, size, limit, incoming


class QueueClosedError(QueueError):
    """The queue was closed before a request could run."""


class StoreError(EdgeFleetError):
    """The cloud store failed."""


class FencedOff(StoreError):
    """A leader-only write by a coordinator whose lease token is no longer the current one."""

    def __init__(self, holder: str, token: int, current: int) -> None:
        held = f"it holds lease token {token}" if token > 0 else "it does not hold the leader lease"
        super().__init__(f"leader-only write by coordinator {holder!r} refused: {held}, the current token is {current} "
                         "(another coordinator leads; leader-only calls go to it)")
        self.holder, self.token, self.current = holder, token, current


class ConfigError(EdgeFleetError, ValueError):
    """A config file or command-line value that cannot be used."""


class QueryError(EdgeFleetError, ValueError):
    """A device filter query that cannot be parsed; ``position`` is the 0-based offset of the mistake."""

    def __init__(self, query: str, position: int, cause: str) -> None:
        shown = query.replace("\n", " ").replace("\t", " ")  # one line, so the caret lines up
        caret = " " * position + "^"
        super().__init__(f"invalid query at position {position}: {cause}\n  {shown}\n  {caret}")
        self.query, self.position, self.cause = query, position, cause


class NotFound(EdgeFleetError, LookupError):
    """An id that names nothing: a device, site, group, alert, release, rollout, token. The message names
    the id and where to see the known ones."""


class Conflict(EdgeFleetError):
    """The object exists, but its present state does not allow the change asked for."""


class AccessError(EdgeFleetError):
    """An operator request refused by access control; the message says what to do next."""


class Unauthenticated(AccessError):
    """No valid credentials: a missing, malformed, unknown, expired or revoked token."""


class Forbidden(AccessError):
    """Authenticated, but the principal's role or sites do not allow the action."""


class BodyTooLarge(AccessError):
    """A request body over the limit of its route; the message names the route and the limit."""


class RateLimited(AccessError):
    """Too many failed attempts from one source in a short time; the message says when to try again."""


class AlertNotFound(NotFound, KeyError):
    """An alert id that names no alert (open or resolved) the engine knows."""

    def __init__(self, alert_id: str) -> None:
        super().__init__(f"No alert by the id of {alert_id!r} was found")
        self.alert_id = alert_id

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.alert_id,))


class FleetError(EdgeFleetError):
    """A fleet record (device, group, tag, config layer) that cannot be changed as asked; says what to do."""


class TransitionError(FleetError):
    """A lifecycle transition the table does not allow: names the device, its state and the state asked for."""


class FleetNotFound(FleetError, NotFound):
    """No device or group by that id (the message says how to list the known ones)."""


class KeyFileError(EdgeFleetError):
    """A key file is missing, unreadable, malformed or too open."""


class FileWriteError(EdgeFleetError, OSError):
    """A file the program writes itself (``common.fileio``) could not be written durably: names the path and
    the cause. An ``OSError`` too, so code that handles I/O errors handles it."""

    def __init__(self, path: str, cause: str) -> None:
        super().__init__(f"cannot write {path!r}: {cause}")
        self.path, self.cause = path, cause

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.path, self.cause))


class ApiError(EdgeFleetError):
    """The operator API refused or failed a request."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TrustError(EdgeFleetError):
    """Signed input (an envelope, a certificate) that must not be trusted.

    Envelope errors name the kind, audience and sequence they concern (``None``
    where the input was too malformed to say) and the cause.
    """

    def __init__(
        self, cause: str, *, kind: str | None = None, audience: str | None = None, seq: int | None = None
    ) -> None:
        who = repr(audience) if audience is not None else "?"
        super().__init__(f"{kind or '?'} envelope for {who} seq {seq if seq is not None else '?'}: {cause}")
        self.cause, self.kind, self.audience, self.seq = cause, kind, audience, seq


class SignatureError(TrustError):
    """Malformed, unsigned, badly signed, or signed by a key that is not trusted."""


class MisdirectedError(TrustError):
    """Validly signed, but of another kind or addressed to another audience."""


class ExpiredError(TrustError):
    """Validly signed, but expired (or not yet valid)."""


class ReplayError(TrustError):
    """Validly signed, but its sequence is not above the highest already accepted."""


class CertificateError(TrustError):
    """A node certificate that does not verify: ``subject`` is who it claims to be."""

    def __init__(self, subject: str, cause: str) -> None:
        EdgeFleetError.__init__(self, f"certificate of {subject!r}: {cause}")
        self.subject, self.cause = subject, cause
        self.kind = self.audience = self.seq = None


class EnrollmentError(EdgeFleetError):
    """A device's enrollment was refused (names the device and the cloud's or gateway's reason)."""

    def __init__(self, device_id: str, cause: str) -> None:
        super().__init__(f"enrollment of device {device_id!r} refused: {cause}")
        self.device_id, self.cause = device_id, cause


class AuditChainError(EdgeFleetError):
    """The audit log's hash chain is broken at record ``seq``."""

    def __init__(self, seq: int, cause: str) -> None:
        super().__init__(f"audit record {seq}: {cause}")
        self.seq, self.cause = seq, cause


class UpdateError(EdgeFleetError):
    """A device update cannot go on: a missing or tampered image, a slot that did not verify."""


class UpdateRefused(UpdateError):
    """A (verified) manifest this device must not install; ``reason`` says why."""

    def __init__(self, version: str, reason: str) -> None:
        super().__init__(f"update to {version!r} refused: {reason}")
        self.version, self.reason = version, reason


class BootloaderError(UpdateError):
    """The boot environment could not be read or changed, e.g. "Failed marking slot B as good: ..."."""


class FirmwareError(EdgeFleetError):
    """A firmware release, manifest, chunk or image that cannot be used."""


class VersionError(FirmwareError, ValueError):
    """A firmware version string that does not parse."""


class ManifestError(FirmwareError):
    """A firmware manifest that must not be used.

    ``reason`` is one of: ``malformed``, ``unsigned``, ``unknown-key``,
    ``bad-signature``, ``expired``, ``wrong-hardware``, ``below-floor``,
    ``below-min-version``, ``downgrade``, ``unsupported-module`` (the device's board does not install
    the release's update module).
    """

    def __init__(self, version: str | None, reason: str, cause: str) -> None:
        super().__init__(f"firmware manifest {version or '?'}: {cause}")
        self.version, self.reason, self.cause = version, reason, cause

    def __reduce__(self) -> tuple[object, ...]:  # survives a process pool
        return (type(self), (self.version, self.reason, self.cause))


class ChunkError(FirmwareError):
    """Chunk ``index`` of firmware ``version`` does not match its manifest."""

    def __init__(self, version: str, index: int, cause: str) -> None:
        super().__init__(f"firmware {version} chunk {index}: {cause}")
        self.version, self.index, self.cause = version, index, cause

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.version, self.index, self.cause))


class TransferError(FirmwareError):
    """A chunked download that cannot go on: the server has no such artifact, a chunk failed its
    hash too often, or its partial file cannot be written. ``artifact`` names it (SHA-256)."""

    def __init__(self, artifact: str, cause: str) -> None:
        super().__init__(f"download of artifact {artifact[:16]}...: {cause}")
        self.artifact, self.cause = artifact, cause

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.artifact, self.cause))


class CacheFull(FirmwareError):
    """The site cache cannot make room for an artifact: everything left is pinned or in use."""


class ImageError(FirmwareError):
    """A full firmware image whose size or SHA-256 does not match its manifest."""


class ReleaseError(FirmwareError):
    """A release the cloud refuses to create, publish or find.

    ``reason`` is one of: ``invalid`` (a parameter), ``empty``, ``too-large``,
    ``exists``, ``busy`` (being created now), ``not-found``, ``published``
    (already, with another signed manifest), ``body-differs`` (signed something
    other than the manifest the cloud built), ``no-trusted-keys``, and the
    ``ManifestError`` reasons of the posted signature (``malformed``,
    ``unsigned``, ``unknown-key``, ``bad-signature``, ``expired``).
    """

    def __init__(self, version: str | None, reason: str, cause: str) -> None:
        super().__init__(f"release {version or '?'}: {cause}")
        self.version, self.reason, self.cause = version, reason, cause

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.version, self.reason, self.cause))


class ReleaseNotFound(ReleaseError, NotFound):
    """No release by that version (reason ``not-found``)."""

    def __init__(self, version: str | None, cause: str) -> None:
        super().__init__(version, "not-found", cause)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.version, self.cause))


class ReleaseConflict(ReleaseError, Conflict):
    """A release whose state refuses the change: reason ``exists``, ``busy`` or ``published``."""


class ReleaseTooLarge(ReleaseError):
    """An image or a signed manifest over its size limit (reason ``too-large``)."""

    def __init__(self, version: str | None, cause: str) -> None:
        super().__init__(version, "too-large", cause)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.version, self.cause))


class DeltaError(EdgeFleetError):
    """A binary delta that cannot be made or applied: a corrupt patch, the wrong old image."""


class DeltaNotWorthIt(DeltaError):
    """The smallest delta is not clearly smaller than the compressed full image; ``result`` has the numbers."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[object, ...]:  # make_delta_in_pool re-raises it in the caller, numbers included
        return (type(self), (str(self), self.result))


class RolloutError(EdgeFleetError):
    """A rollout the cloud refuses to create or change, or a site plan a gateway refuses.

    ``reason`` is one of: ``invalid`` (a plan parameter), ``not-found``, ``state`` (the
    rollout's state does not allow that), ``transition`` (a state table has no such step),
    ``plan`` (a site plan that is not for this site or does not verify).
    """

    def __init__(self, rollout_id: str | None, reason: str, cause: str) -> None:
        super().__init__(f"rollout {rollout_id or '?'}: {cause}")
        self.rollout_id, self.reason, self.cause = rollout_id, reason, cause

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.rollout_id, self.reason, self.cause))


class RolloutNotFound(RolloutError, NotFound):
    """No rollout by that id (reason ``not-found``)."""

    def __init__(self, rollout_id: str | None, cause: str) -> None:
        super().__init__(rollout_id, "not-found", cause)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.rollout_id, self.cause))


class RolloutConflict(RolloutError, Conflict):
    """A rollout whose state does not allow the change: reason ``state`` or ``transition``."""
