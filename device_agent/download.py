"""The device's side of firmware delivery: ask the gateway, check the manifest, download, install.

``update_to(version)`` is what the ``update`` command with ``{"version": V}`` does:

1. ask the gateway for release V, saying the version the board runs (``OfferRequest``);
2. check the signed manifest in the offer against the pinned release keys, expiry, hardware,
   security floor and version order, before a byte of the image is fetched;
3. download the offered artifact (the full image, or a delta from the running version) in
   chunks, each checked against its hash as it arrives and made durable, at most
   ``rate_bytes_per_s``; a cut link, a SIGKILL or a reboot resumes at the last good chunk;
4. hand it to the updater, which rebuilds the image from a delta, checks its SHA-256 against the
   manifest, and installs it into the inactive slot (A/B, trial boot, health check, commit or
   roll back).

What is being downloaded is recorded in ``DATA/downloads/pending.json`` first, so an agent that
restarts mid-download carries on (``resume``). Bad chunks are reported upstream as they happen.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from common.errors import FirmwareError
from common.fileio import write_atomic
from common.install_deadline import BY_ARG, LATE_INSTALL_REFUSED, TZ_ARG, WINDOWS_ARG, late
from common.transfer.download import Plan
from common.transfer.fetcher import Fetcher
from device_agent.updater import AgentUpdater

__all__ = ["FirmwareDownloader"]

log = logging.getLogger("edgefleet.download")

DEADLINE_ARGS = (WINDOWS_ARG, TZ_ARG, BY_ARG)


class FirmwareDownloader:
    def __init__(self, data_dir: Path, hw: str, updater: AgentUpdater, fetcher: Fetcher,
                 report: Callable[[dict[str, Any]], None]) -> None:
        self.dir = data_dir / "downloads"
        self.hw, self.updater, self.fetcher, self.report = hw, updater, fetcher, report
        self.pending = self.dir / "pending.json"
        self._task: asyncio.Future[str] | None = None

    def update_to(self, version: str, deadline_args: Mapping[str, str] | None = None) -> asyncio.Future[str]:
        """Start (or join) the update to ``version``; the future's result says what happened.

        ``deadline_args``: the command's signed install deadline (``common.install_deadline``); an install
        not begun by then is refused once the download is complete (the result starts with
        ``late_install_refused``; the release stays on disk for the next window)."""
        if self._task is not None and not self._task.done():
            return self._task
        self._task = asyncio.ensure_future(self._update(version, deadline_args=deadline_args or {}))
        return self._task

    def download_only(self, version: str) -> asyncio.Future[str]:
        """Fetch and check release ``version`` now, install nothing (a rollout's download ahead of its
        maintenance window); reported as ``downloaded``. The later update finds it on disk."""
        if self._task is not None and not self._task.done():
            return self._task
        self._task = asyncio.ensure_future(self._update(version, install=False))
        return self._task

    def resume(self) -> asyncio.Future[str] | None:
        """At start: carry on with a download a restart interrupted."""
        try:
            pending = json.loads(self.pending.read_text())
            version, deadline_args = pending["version"], {str(k): str(v) for k, v in (pending.get("deadline") or {}).items()}
        except (OSError, ValueError, KeyError, AttributeError):
            return None
        log.info("resuming a firmware download", extra={"release": version})
        return self.update_to(version, deadline_args)

    async def _update(self, version: str, install: bool = True, deadline_args: Mapping[str, str] | None = None) -> str:
        loop = asyncio.get_running_loop()
        self.dir.mkdir(parents=True, exist_ok=True)
        deadline = {k: v for k, v in (deadline_args or {}).items() if k in DEADLINE_ARGS}
        write_atomic(self.pending, json.dumps({"version": version, "deadline": deadline}).encode(), 0o644)
        running = (await loop.run_in_executor(None, self.updater.running))["version"]
        offer = await self.fetcher.offer(version, self.hw, [running])
        manifest_path = self.dir / f"{version}.manifest"
        write_atomic(manifest_path, offer.manifest, 0o644)
        try:
            manifest = await loop.run_in_executor(None, self.updater.check, offer.manifest)
        except FirmwareError:
            # the updater refuses it again, the standard way: reported upstream, nothing installed
            self._forget()
            return await loop.run_in_executor(None, self.updater.start, str(manifest_path))
        if offer.kind == "full":
            if offer.artifact != manifest.sha256:
                self._forget()
                return f"refused: the offer's image {offer.artifact[:16]}... is not the manifest's"
            plan = Plan(manifest.sha256, manifest.size, manifest.chunk_size, tuple(manifest.chunks))
        else:
            plan = Plan(offer.artifact, offer.size, offer.chunk_size, tuple(offer.chunks))
        final = self.dir / plan.artifact
        for old in self.dir.iterdir():  # what an earlier update left (kept until now: an install may resume from it)
            if not old.name.startswith(plan.artifact) and old.name not in (self.pending.name, manifest_path.name):
                old.unlink(missing_ok=True)
        try:
            path = await self.fetcher.fetch(plan, self.dir / f"{plan.artifact}.part", final)
        except FirmwareError as exc:
            self.report({"version": version, "outcome": "download-failed", "reason": str(exc), "running_version": running})
            self._forget()
            return f"download failed: {exc}"
        if not install:
            self._forget()
            self.report({"version": version, "outcome": "downloaded", "reason": f"{offer.kind} {plan.size} bytes",
                         "running_version": running})
            return f"release {version} downloaded ({offer.kind}, {plan.size} bytes); not installed"
        why = late(deadline, self.updater.now_ms())
        if why is not None:  # downloaded, but too late to begin: kept on disk, installed in the next window
            self._forget()
            self.report({"version": version, "outcome": LATE_INSTALL_REFUSED, "reason": why, "running_version": running})
            return f"{LATE_INSTALL_REFUSED}: {why}"
        if offer.kind == "full":
            result = await loop.run_in_executor(None, self.updater.start, str(manifest_path), str(path))
        else:
            result = await loop.run_in_executor(
                None, lambda: self.updater.start(str(manifest_path), delta_path=str(path)))
        self._forget()
        return result

    def _forget(self) -> None:
        """The download is over (installed, refused or failed): nothing to resume. The artifact stays
        until the next update, as an install a power cut interrupted resumes from it."""
        self.pending.unlink(missing_ok=True)
