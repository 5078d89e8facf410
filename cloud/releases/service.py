"""Firmware releases in the cloud: upload an image, compute deltas, build the manifest, publish when signed.

    service = ReleaseService(store.releases, ArtifactStore(data_dir / "artifacts"), trusted_keys, ReleaseSettings())
    service.start()                                   # artifact directories
    made = await service.create(request, body_stream, now_ms)    # -> unsigned manifest and delta outcomes
    await service.publish("1.2.0", signed_manifest_bytes, now_ms)
    await service.stop()

The cloud never holds a release private key. ``create`` stores the image
content-addressed (``cloud.releases.artifacts``), computes deltas from the last K
published releases for the same hardware in a process pool (the event loop
never waits on them), keeps those worth offering, stores each one
content-addressed, and builds the manifest; the release stays ``unsigned``. An
operator signs that exact body with the release key (``edgefleet release
create --key`` does it locally) and posts the signed manifest: ``publish``
checks that its body is byte for byte the manifest the cloud built and that a
trusted release public key (``release_keys`` in the cloud's config) signed it,
then marks the release ``published``. Only published releases are bases for
later deltas.

Plan, then execute: the checks and choices are pure (``cloud.releases.plan``:
``ReleaseRequest.parse``, ``plan_bases``, ``check_signature``); ``ReleaseService``
only moves bytes and calls the store (on the store's executor).

Refusals are ``ReleaseError`` naming the version, with a ``reason`` code.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import AsyncIterable, Callable, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cloud.releases.artifacts import ArtifactStore, ArtifactTooLarge
from cloud.releases.plan import (
    DeltaOutcome,
    ReleaseRequest,
    ReleaseSettings,
    check_signature,
    plan_bases,
    release_view,
    version_or_none,
)
from cloud.store.releases import ReleaseRecords
from common.delta import DeltaResult, make_delta_in_pool
from common.errors import (
    DeltaError,
    DeltaNotWorthIt,
    ImageError,
    ManifestError,
    ReleaseConflict,
    ReleaseError,
    ReleaseNotFound,
    ReleaseTooLarge,
)
from common.firmware.manifest import MAX_NAME, DeltaInfo, SignedManifest, build_manifest
from common.firmware.version import Version

__all__ = ["ReleaseService"]

T = TypeVar("T")


class ReleaseService:
    """The release workflow over the release records, an artifact store and the trusted release public keys.

    Store calls run on ``store_executor`` (the cloud's one store thread) or, without one, in
    ``asyncio.to_thread``; file work on the loop's default executor; deltas in ``pool`` (a
    ``ProcessPoolExecutor``, made on first use with the ``spawn`` start method unless given).
    """

    def __init__(
        self,
        records: ReleaseRecords,
        artifacts: ArtifactStore,
        trusted_keys: Mapping[str, Ed25519PublicKey],
        settings: ReleaseSettings = ReleaseSettings(),
        *,
        store_executor: Executor | None = None,
        pool: Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.records = records
        self.artifacts = artifacts
        self.trusted_keys = dict(trusted_keys)
        self.settings = settings
        self._store_executor = store_executor
        self._pool = pool
        self._own_pool = pool is None
        self._clock = clock
        self._busy: set[Version] = set()  # versions being created now

    def start(self) -> None:
        self.artifacts.prepare()

    async def stop(self) -> None:
        """Shut down the pool this service made. A delta still running finishes in its worker (bounded by
        its time budget); its half-written patch stays under the artifacts' ``.tmp`` until the next start."""
        if self._own_pool and self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # -- create ------------------------------------------------------------------------------

    async def create(self, req: ReleaseRequest, body: AsyncIterable[bytes], now_ms: int) -> dict[str, Any]:
        """Store the image streamed in ``body``, make the deltas, save the unsigned release; return its view
        with ``manifest`` (the JSON), ``manifest_body`` (the exact text to sign) and ``seconds``."""
        key = Version(req.version)
        if key in self._busy:
            raise ReleaseConflict(req.version, "busy", "this version is being created right now; wait for that to finish")
        self._busy.add(key)
        try:
            return await self._create(req, body, now_ms)
        finally:
            self._busy.discard(key)

    async def _create(self, req: ReleaseRequest, body: AsyncIterable[bytes], now_ms: int) -> dict[str, Any]:
        t0 = self._clock()
        for row in await self._call(self.records.list_releases):
            if version_or_none(row["version"]) != Version(req.version):
                continue
            if row["state"] == "published":
                raise ReleaseConflict(req.version, "exists", f"release {row['version']} is already published")
            if row["version"] != req.version:
                raise ReleaseConflict(
                    req.version,
                    "exists",
                    f"the same version exists unsigned as {row['version']!r}; create that to replace it",
                )
        try:
            image = await self.artifacts.ingest(body, limit=self.settings.max_image_bytes)
        except ArtifactTooLarge as exc:
            raise ReleaseTooLarge(req.version, f"the image is over the limit of {exc.limit} bytes") from exc
        if image.size == 0:  # no release can hold the empty artifact: drop it
            await asyncio.get_running_loop().run_in_executor(None, lambda: image.path.unlink(missing_ok=True))
            raise ReleaseError(req.version, "empty", "the image is empty (send it as the request body)")
        published = await self._call(self.records.published_releases)
        bases = plan_bases(req.version, req.hw, published, self.settings.delta_bases)
        outcomes = list(await asyncio.gather(*(self._delta(base, image.path) for base in bases)))
        offered = [
            DeltaInfo(o.from_version, o.method or "", o.size or 0, o.sha256 or "")
            for o in outcomes
            if o.status == "offered"
        ]
        loop = asyncio.get_running_loop()
        manifest = await loop.run_in_executor(
            None,
            lambda: build_manifest(
                str(image.path),
                req.version,
                req.hw,
                security_version=req.security_version,
                expires_ms=now_ms + req.expires_s * 1000,
                issued_ms=now_ms,
                min_version=req.min_version,
                deltas=offered,
                chunk_size=self.settings.chunk_size,
                module=req.module,
            ),
        )
        if (manifest.size, manifest.sha256) != (image.size, image.sha256):
            raise ImageError(
                f"release {req.version}: stored image {image.path} changed on disk "
                f"(SHA-256 {manifest.sha256[:16]}..., uploaded {image.sha256[:16]}...)"
            )
        row = {
            "version": req.version,
            "hw": list(req.hw),
            "image_sha256": image.sha256,
            "size": image.size,
            "manifest_body": manifest.to_bytes().decode("ascii"),
            "security_version": req.security_version,
            "created_ms": now_ms,
        }
        if not await self._call(lambda: self.records.save_release(row, [o.to_row() for o in outcomes])):
            raise ReleaseConflict(req.version, "exists", "it was published while this upload ran")
        saved = await self._call(lambda: self.records.get_release(req.version))
        return {**release_view(saved, full=True), "seconds": round(self._clock() - t0, 3)}

    async def _delta(self, base: Mapping[str, Any], new_path: Any) -> DeltaOutcome:
        from_version = base["version"]
        old_path = self.artifacts.path(base["image_sha256"])
        patch = self.artifacts.temp_path("delta")
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, old_path.is_file):
            return DeltaOutcome(
                from_version,
                "failed",
                detail={"note": f"the image of {from_version} is missing from the artifact store"},
            )
        s = self.settings
        try:
            result = await make_delta_in_pool(
                self._delta_pool(),
                old_path,
                new_path,
                patch,
                time_budget_s=s.delta_time_budget_s,
                memory_budget_bytes=s.delta_memory_budget_bytes,
                isolate=s.delta_isolate,
            )
        except DeltaNotWorthIt as exc:
            return DeltaOutcome.not_worth_it(
                from_version, exc.result if isinstance(exc.result, DeltaResult) else None, str(exc)
            )
        except (DeltaError, OSError, BrokenProcessPool) as exc:
            if isinstance(exc, BrokenProcessPool) and self._own_pool and self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None  # a broken pool stays broken: the next delta gets a fresh one
            patch.unlink(missing_ok=True)
            return DeltaOutcome(from_version, "failed", detail={"note": f"{type(exc).__name__}: {exc}"})
        art = await loop.run_in_executor(None, self.artifacts.adopt, patch)
        return DeltaOutcome.offered(from_version, result, art.sha256, art.size)

    def _delta_pool(self) -> Executor:
        if self._pool is None:
            # spawn: the cloud has threads (store, uvicorn, zmq) that a forked child must not inherit
            self._pool = ProcessPoolExecutor(
                self.settings.delta_workers, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    # -- publish and read ----------------------------------------------------------------------

    async def publish(self, version: str, signed: bytes, now_ms: int) -> dict[str, Any]:
        """Publish the release if ``signed`` is its manifest, unchanged, signed by a trusted key; return
        its full view. Posting the signed manifest a release was published with again is a no-op.
        """
        row = await self._find(version)
        name = row["version"]
        if row["state"] == "published":
            try:
                same = SignedManifest.from_bytes(signed).to_bytes().decode("ascii") == row["signed_manifest"]
            except ManifestError:
                same = False
            if same:
                return release_view(row, full=True)
            raise ReleaseConflict(name, "published", "it is already published with another signed manifest")
        good = check_signature(
            row["manifest_body"].encode("ascii"), signed, self.trusted_keys, now_ms=now_ms, version=name
        )
        text = good.to_bytes().decode("ascii")
        if not await self._call(lambda: self.records.publish_release(name, row["manifest_body"], text, now_ms)):
            raise ReleaseError(
                name, "body-differs", "the release was replaced or published while the signature was checked"
            )
        return release_view(await self._call(lambda: self.records.get_release(name)), full=True)

    async def list(self) -> list[dict[str, Any]]:
        """Every release, by version order (oldest first)."""
        rows = await self._call(self.records.list_releases)
        rows.sort(key=lambda r: (version_or_none(r["version"]) or Version("0"), r["version"]))
        return [release_view(r) for r in rows]

    async def show(self, version: str) -> dict[str, Any]:
        return release_view(await self._find(version), full=True)

    async def _find(self, version: str) -> dict[str, Any]:
        """The release named ``version``, or the one whose version equals it as a version (2.1 = 2.1.0)."""
        row = await self._call(lambda: self.records.get_release(version))
        if row is None and (wanted := version_or_none(version)) is not None:
            same = [
                r["version"]
                for r in await self._call(self.records.list_releases)
                if version_or_none(r["version"]) == wanted
            ]
            if same:
                row = await self._call(lambda: self.records.get_release(same[0]))
        if row is None:
            raise ReleaseNotFound(version[:MAX_NAME], "no such release (`edgefleet release list` shows them)")
        return row

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._store_executor is None:
            return await asyncio.to_thread(fn)
        return await asyncio.wrap_future(self._store_executor.submit(fn))
