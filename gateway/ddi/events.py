"""Events and effects between the gateway core's DDI part (``gateway.ddi.core``) and its driver.

Events (driver -> core): ``DdiRequest`` (one HTTP request, its body already read within the limit),
``ArtifactReady`` / ``ArtifactFailed`` (a release prepared in the site cache, with the hashes DDI
clients check), ``DdiTokensApplied`` (a credential table written to disk, now in force).
Effects (core -> driver): ``DdiResponse`` (the answer to one request: JSON, or a byte range of a
cached artifact), ``PrepareArtifact`` (fetch a release into the site cache and hash it),
``SaveDdiState`` (write the DDI devices' state before the effects that follow act on it),
``StoreDdiTokens`` (write a credential table from the cloud, then feed ``DdiTokensApplied``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.protocol import DdiCredentials

__all__ = ["ArtifactFailed", "ArtifactInfo", "ArtifactReady", "DdiRequest", "DdiResponse", "DdiTokensApplied",
           "PrepareArtifact", "SaveDdiState", "StoreDdiTokens"]


@dataclass(frozen=True, slots=True)
class DdiRequest:
    """One request. ``base`` is the URL prefix links are made with (``https://host:port``)."""

    rid: int
    method: str
    path: str  # without the query
    query: str
    authorization: str
    body: bytes
    source: str  # the client's address (rate limits, audit)
    base: str
    range: str = ""  # the Range header of a download, as sent


@dataclass(frozen=True, slots=True)
class DdiResponse:
    """``file``: serve bytes ``start..end`` (inclusive) of cached artifact ``sha256`` instead of ``body``."""

    rid: int
    status: int
    body: bytes = b""
    content_type: str = "application/hal+json;charset=UTF-8"
    headers: tuple[tuple[str, str], ...] = ()
    file: tuple[str, int, int] | None = None


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    """A release's artifact as DDI shows it: held in the site cache under ``sha256``."""

    version: str
    sha256: str
    sha1: str
    md5: str
    size: int
    module: str
    filename: str


@dataclass(frozen=True, slots=True)
class PrepareArtifact:
    version: str
    hw: str


@dataclass(frozen=True, slots=True)
class ArtifactReady:
    hw: str
    info: ArtifactInfo


@dataclass(frozen=True, slots=True)
class ArtifactFailed:
    version: str
    hw: str
    error: str


@dataclass(frozen=True, slots=True)
class SaveDdiState:
    blob: bytes


@dataclass(frozen=True, slots=True)
class StoreDdiTokens:
    msg: DdiCredentials


@dataclass(frozen=True, slots=True)
class DdiTokensApplied:
    msg: DdiCredentials
    extra: dict[str, str] = field(default_factory=dict)
