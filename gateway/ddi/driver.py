"""The DDI part's effects run in the gateway process: the HTTP server, releases prepared and hashed in the
site cache, the state and credential files.

- ``PrepareArtifact``: the release is fetched into the site cache once (``SiteFirmware.prepare``, the
  same single flight the agents use: the WAN carries it once per site), its signed manifest read for its
  update module and checked (with the gateway's release keys, when it has any: ``--release-key``), and the
  cached file hashed for the SHA-1 and MD5 DDI clients check; then ``ArtifactReady``.
- ``SaveDdiState``: ``DATA/ddi/state.json`` (temp file, fsync, rename) before the effects that follow.
- ``StoreDdiTokens``: ``DATA/ddi_tokens.json`` the same way, then ``DdiTokensApplied``: in force only once on disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.errors import DeltaError, FirmwareError, TransferError
from common.fileio import write_atomic
from common.firmware.manifest import SignedManifest
from gateway.ddi.events import (
    ArtifactFailed,
    ArtifactInfo,
    ArtifactReady,
    DdiResponse,
    DdiTokensApplied,
    PrepareArtifact,
    SaveDdiState,
    StoreDdiTokens,
)
from gateway.ddi.server import DdiServer, tls_context
from gateway.ddi.tokens import DdiTokens
from gateway.firmware import SiteFirmware
from gateway.site_cache import SiteCache

__all__ = ["DdiDriver", "hash_artifact"]

log = logging.getLogger("edgefleet.gateway.ddi")


def hash_artifact(path: Path) -> tuple[str, str]:
    """(SHA-1, MD5) of a cached artifact, in one pass: what hawkBit clients compare a download with."""
    sha1, md5 = hashlib.sha1(usedforsecurity=False), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            sha1.update(block)
            md5.update(block)
    return sha1.hexdigest(), md5.hexdigest()


class DdiDriver:
    def __init__(self, data_dir: Path, bind: str, feed: Callable[[Any], None], firmware: SiteFirmware, cache: SiteCache,
                 *, tls: tuple[str, str] | None = None) -> None:
        self.dir = data_dir / "ddi"
        self.tokens_path = data_dir / "ddi_tokens.json"
        self.feed, self.firmware, self.cache = feed, firmware, cache
        self.server = DdiServer(bind, feed, cache.path, tls=tls_context(*tls) if tls else None)
        self._tasks: set[asyncio.Future[None]] = set()

    @property
    def counters(self) -> dict[str, int]:
        return dict(self.server.counters)

    async def start(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        url = await self.server.start()
        log.info("DDI served", extra={"url": url})
        return url

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await self.server.stop()

    def handlers(self) -> dict[type, Callable[[Any], None]]:
        return {DdiResponse: self.server.respond, PrepareArtifact: self._prepare, SaveDdiState: self._save,
                StoreDdiTokens: self._store_tokens}

    def _save(self, effect: SaveDdiState) -> None:
        write_atomic(self.dir / "state.json", effect.blob, 0o600)

    def _store_tokens(self, effect: StoreDdiTokens) -> None:
        try:
            write_atomic(self.tokens_path, DdiTokens.from_message(effect.msg).to_json(), 0o600)
        except OSError as exc:  # not on disk, so not in force; the cloud sends it again at the next session
            log.error("DDI credentials could not be written", extra={"error": str(exc)})
            return
        self.feed(DdiTokensApplied(effect.msg))

    def _prepare(self, effect: PrepareArtifact) -> None:
        task = asyncio.ensure_future(self._prepared(effect))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prepared(self, effect: PrepareArtifact) -> None:
        loop = asyncio.get_running_loop()
        try:
            sha, manifest = await self.firmware.prepare(effect.version, effect.hw)
            m = SignedManifest.from_bytes(manifest).unverified()  # checked by the firmware service when it has keys
            sha1, md5 = await loop.run_in_executor(None, hash_artifact, self.cache.path(sha))
        except (FirmwareError, DeltaError, TransferError, OSError) as exc:
            self.feed(ArtifactFailed(effect.version, effect.hw, str(exc)))
            return
        self.feed(ArtifactReady(effect.hw, ArtifactInfo(m.version, sha, sha1, md5, m.size, m.module,
                                                        f"release-{m.version}.swu")))
