"""Firmware releases in the cloud: upload an image, compute deltas, build the manifest, publish when signed.

    service = ReleaseService(store, ArtifactStore(data_dir / "artifacts"), trusted_keys, ReleaseSettings())
    service.start()                                   # artifact directories
    made = await service.create(request, body_stream, now_ms)    # -> unsigned manifest and delta outcomes
    await service.publish("1.2.0", signed_manifest_bytes, now_ms)
    await service.stop()

The cloud never holds a release private key. ``create`` stores the image
content-addressed (``cloud.artifacts``), computes deltas from the last K
published releases for the same hardware in a process pool (the event loop
never waits on them), keeps those worth offering, stores each one
content-addressed, and builds the manifest; the release stays ``unsigned``. An
operator signs that exact body with the release key (``edgefleet release
create --key`` does it locally) and posts the signed manifest: ``publish``
checks that its body is byte for byte the manifest the cloud built and that a
trusted release public key (``release_keys`` in the cloud's config) signed it,
then marks the release ``published``. Only published releases are bases for
later deltas.

Plan, then execute: ``ReleaseRequest.parse`` checks the parameters before a
byte is uploaded, ``plan_bases`` picks the delta bases and ``check_signature``
judges a posted signature; all three are pure. ``ReleaseService`` only moves
bytes and calls the store (on the store's executor).

Refusals are ``ReleaseError`` naming the version, with a ``reason`` code.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cloud.artifacts import ArtifactStore, ArtifactTooLarge
from cloud.store import Store
from common.delta import DeltaResult, make_delta_in_pool
from common.delta.engine import WORTH_RATIO
from common.errors import (
    ConfigError,
    DeltaError,
    DeltaNotWorthIt,
    ImageError,
    KeyFileError,
    ManifestError,
    ReleaseError,
    VersionError,
)
from common.firmware.chunks import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE
from common.firmware.keys import load_trusted_keys
from common.firmware.manifest import (
    MAX_NAME,
    DeltaInfo,
    SignedManifest,
    build_manifest,
    verify_manifest,
)
from common.firmware.version import Version

__all__ = [
    "DeltaOutcome",
    "ReleaseRequest",
    "ReleaseService",
    "ReleaseSettings",
    "check_signature",
    "load_release_keys",
    "plan_bases",
]

DAY_S = 86_400
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ReleaseSettings:
    """How the cloud makes releases. ``delta_bases`` is K: deltas come from the K newest older releases."""

    delta_bases: int = 3
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_image_bytes: int = 16 << 30
    default_expires_s: int = 90 * DAY_S
    max_expires_s: int = 10 * 366 * DAY_S
    delta_workers: int = 1  # processes computing deltas at once (each may run 2 candidates: see make_delta)
    delta_time_budget_s: float = 110.0  # per delta
    delta_memory_budget_bytes: int = 2 << 30  # per delta
    delta_isolate: bool = True  # each candidate in its own killable child (False: faster, for tests)

    def __post_init__(self) -> None:
        if not 0 <= self.delta_bases <= 16:
            raise ConfigError(f"release_delta_bases {self.delta_bases} is not in 0..16")
        if not 0 < self.chunk_size <= MAX_CHUNK_SIZE:
            raise ConfigError(f"release chunk_size {self.chunk_size} is not in 1..{MAX_CHUNK_SIZE}")
        if self.delta_workers < 1:
            raise ConfigError(f"release delta_workers {self.delta_workers} must be at least 1")


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    """The parameters of a new release, checked."""

    version: str
    hw: tuple[str, ...]
    min_version: str | None
    security_version: int
    expires_s: int

    @classmethod
    def parse(
        cls,
        version: str,
        hw: Iterable[str],
        *,
        min_version: str | None = None,
        security_version: int = 0,
        expires_s: int | None = None,
        settings: ReleaseSettings = ReleaseSettings(),
    ) -> ReleaseRequest:
        """Check everything a manifest will need before any upload; ``ReleaseError`` (``invalid``) names the field.

        ``hw`` items may each hold several comma-separated models.
        """

        def invalid(cause: str) -> ReleaseError:
            return ReleaseError(version[:MAX_NAME] if isinstance(version, str) else None, "invalid", cause)

        for what, text in (("version", version), ("min_version", min_version)):
            if text is not None:
                try:
                    Version(text)
                except VersionError as exc:
                    raise invalid(f"{what}: {exc}") from exc
        models: list[str] = []
        for item in hw:
            for name in (part.strip() for part in item.split(",")):
                if not name:
                    continue
                if len(name) > MAX_NAME or not name.isprintable():
                    raise invalid(f"hardware model {name[:MAX_NAME]!r} must be 1..{MAX_NAME} printable characters")
                if name not in models:
                    models.append(name)
        if not models:
            raise invalid("name at least one hardware model (hw)")
        if type(security_version) is not int or not 0 <= security_version < 2**63:
            raise invalid(f"security_version {security_version!r} must be a non-negative integer")
        expires = settings.default_expires_s if expires_s is None else expires_s
        if type(expires) is not int or not 0 < expires <= settings.max_expires_s:
            raise invalid(f"expires_s {expires!r} must be 1..{settings.max_expires_s} seconds")
        return cls(version, tuple(models), min_version, security_version, expires)


@dataclass(frozen=True, slots=True)
class DeltaOutcome:
    """What came of one delta: ``offered`` (in the manifest), ``not-worth-it`` or ``failed``."""

    from_version: str
    status: str
    method: str | None = None
    size: int | None = None
    sha256: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def offered(cls, from_version: str, result: DeltaResult, sha256: str, size: int) -> DeltaOutcome:
        note = f"{result.method}, {result.ratio:.1%} of the zstd-compressed full image"
        return cls(from_version, "offered", result.method, size, sha256, _numbers(result, note))

    @classmethod
    def not_worth_it(cls, from_version: str, result: DeltaResult | None, cause: str) -> DeltaOutcome:
        if result is None:
            return cls(from_version, "not-worth-it", detail={"note": cause})
        note = f"offered only under {WORTH_RATIO:.0%} of the zstd-compressed full image ({result.full_size} bytes)"
        return cls(from_version, "not-worth-it", result.method, result.patch_size, None, _numbers(result, note))


def _numbers(result: DeltaResult, note: str) -> dict[str, Any]:
    return {
        "note": note,
        "full_size": result.full_size,
        "ratio": round(result.ratio, 4),
        "seconds": round(result.seconds, 3),
    }


def load_release_keys(paths: Iterable[str]) -> dict[str, Ed25519PublicKey]:
    """``{key id: public key}`` of the PEM files trusted to sign manifests; ``ConfigError`` names a bad one."""
    try:
        return load_trusted_keys(list(paths))
    except KeyFileError as exc:
        raise ConfigError(f"release_keys: {exc}") from exc


def plan_bases(
    version: str, hw: Sequence[str], published: Iterable[Mapping[str, Any]], k: int
) -> list[Mapping[str, Any]]:
    """The releases to make deltas from: published, sharing a hardware model with ``hw``, older than
    ``version``; the ``k`` newest of them by version order, newest first. No I/O."""
    new = Version(version)
    models = set(hw)
    older = [r for r in published if models & set(r["hw"]) and _version_or_none(r["version"]) is not None]
    older = [r for r in older if Version(r["version"]) < new]
    older.sort(key=lambda r: Version(r["version"]), reverse=True)
    return older[:k]


def check_signature(
    manifest_body: bytes,
    signed: bytes,
    trusted_keys: Mapping[str, Ed25519PublicKey],
    *,
    now_ms: int,
    version: str,
) -> SignedManifest:
    """The signed manifest, if its body is exactly ``manifest_body`` and a trusted key signed it
    (and it has not expired); ``ReleaseError`` with the reason otherwise. No I/O."""
    if not trusted_keys:
        raise ReleaseError(
            version,
            "no-trusted-keys",
            "the cloud trusts no release keys: list their public key files in the cloud config "
            '(release_keys = ["release.key.pub"]) or pass --release-key, then restart it',
        )
    try:
        parsed = SignedManifest.from_bytes(signed)
    except ManifestError as exc:
        raise ReleaseError(version, exc.reason, exc.cause) from exc
    if parsed.body != manifest_body:
        raise ReleaseError(
            version,
            "body-differs",
            f"the signed body is not the manifest the cloud built for this release "
            f"({_differences(manifest_body, parsed.body)}); sign the manifest the cloud returned, unchanged",
        )
    try:
        hw = json.loads(manifest_body)["hw"][0]
        verify_manifest(parsed, trusted_keys, hw=hw, now_ms=now_ms, security_floor=0)
    except ManifestError as exc:
        raise ReleaseError(version, exc.reason, exc.cause) from exc
    return parsed


def _differences(ours: bytes, theirs: bytes) -> str:
    try:
        a, b = json.loads(ours), json.loads(theirs)
    except ValueError:
        return "the signed body is not JSON"
    if not isinstance(b, dict):
        return "the signed body is not a JSON object"
    fields = sorted(k for k in set(a) | set(b) if a.get(k, ...) != b.get(k, ...))
    return f"fields that differ: {', '.join(fields)}" if fields else "same fields, different bytes (not canonical JSON)"


def _version_or_none(text: Any) -> Version | None:
    try:
        return Version(text)
    except VersionError:
        return None


class ReleaseService:
    """The release workflow over a store, an artifact store and the trusted release public keys.

    Store calls run on ``store_executor`` (the cloud's one store thread) or, without one, in
    ``asyncio.to_thread``; file work on the loop's default executor; deltas in ``pool`` (a
    ``ProcessPoolExecutor``, made on first use with the ``spawn`` start method unless given).
    """

    def __init__(
        self,
        store: Store,
        artifacts: ArtifactStore,
        trusted_keys: Mapping[str, Ed25519PublicKey],
        settings: ReleaseSettings = ReleaseSettings(),
        *,
        store_executor: Executor | None = None,
        pool: Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
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
            raise ReleaseError(req.version, "busy", "this version is being created right now; wait for that to finish")
        self._busy.add(key)
        try:
            return await self._create(req, body, now_ms)
        finally:
            self._busy.discard(key)

    async def _create(self, req: ReleaseRequest, body: AsyncIterable[bytes], now_ms: int) -> dict[str, Any]:
        t0 = self._clock()
        for row in await self._call(self.store.list_releases):
            if _version_or_none(row["version"]) != Version(req.version):
                continue
            if row["state"] == "published":
                raise ReleaseError(req.version, "exists", f"release {row['version']} is already published")
            if row["version"] != req.version:
                raise ReleaseError(
                    req.version,
                    "exists",
                    f"the same version exists unsigned as {row['version']!r}; create that to replace it",
                )
        try:
            image = await self.artifacts.ingest(body, limit=self.settings.max_image_bytes)
        except ArtifactTooLarge as exc:
            raise ReleaseError(req.version, "too-large", f"the image is over the limit of {exc.limit} bytes") from exc
        if image.size == 0:  # no release can hold the empty artifact: drop it
            await asyncio.get_running_loop().run_in_executor(None, lambda: image.path.unlink(missing_ok=True))
            raise ReleaseError(req.version, "empty", "the image is empty (send it as the request body)")
        published = await self._call(self.store.published_releases)
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
        if not await self._call(lambda: self.store.save_release(row, [o.to_row() for o in outcomes])):
            raise ReleaseError(req.version, "exists", "it was published while this upload ran")
        saved = await self._call(lambda: self.store.get_release(req.version))
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
            raise ReleaseError(name, "published", "it is already published with another signed manifest")
        good = check_signature(
            row["manifest_body"].encode("ascii"), signed, self.trusted_keys, now_ms=now_ms, version=name
        )
        text = good.to_bytes().decode("ascii")
        if not await self._call(lambda: self.store.publish_release(name, row["manifest_body"], text, now_ms)):
            raise ReleaseError(
                name, "body-differs", "the release was replaced or published while the signature was checked"
            )
        return release_view(await self._call(lambda: self.store.get_release(name)), full=True)

    async def list(self) -> list[dict[str, Any]]:
        """Every release, by version order (oldest first)."""
        rows = await self._call(self.store.list_releases)
        rows.sort(key=lambda r: (_version_or_none(r["version"]) or Version("0"), r["version"]))
        return [release_view(r) for r in rows]

    async def show(self, version: str) -> dict[str, Any]:
        return release_view(await self._find(version), full=True)

    async def _find(self, version: str) -> dict[str, Any]:
        """The release named ``version``, or the one whose version equals it as a version (2.1 = 2.1.0)."""
        row = await self._call(lambda: self.store.get_release(version))
        if row is None and (wanted := _version_or_none(version)) is not None:
            same = [
                r["version"]
                for r in await self._call(self.store.list_releases)
                if _version_or_none(r["version"]) == wanted
            ]
            if same:
                row = await self._call(lambda: self.store.get_release(same[0]))
        if row is None:
            raise ReleaseError(version[:MAX_NAME], "not-found", "no such release (`edgefleet release list` shows them)")
        return row

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._store_executor is None:
            return await asyncio.to_thread(fn)
        return await asyncio.wrap_future(self._store_executor.submit(fn))


def release_view(row: Mapping[str, Any], *, full: bool = False) -> dict[str, Any]:
    """A release as the API shows it; ``full`` adds the manifest, its exact text and the signed manifest."""
    view: dict[str, Any] = {
        "version": row["version"],
        "hw": list(row["hw"]),
        "state": row["state"],
        "size": row["size"],
        "sha256": row["image_sha256"],
        "security_version": row["security_version"],
        "created_ms": row["created_ms"],
        "published_ms": row["published_ms"],
        "deltas": [
            {k: d[k] for k in ("from_version", "status", "method", "size", "sha256", "detail")} for d in row["deltas"]
        ],
    }
    if full:
        signed = row["signed_manifest"]
        view["signed_by"] = (
            [k for k, _ in SignedManifest.from_bytes(signed.encode("ascii")).signatures] if signed else []
        )
        view["manifest"] = json.loads(row["manifest_body"])
        view["manifest_body"] = row["manifest_body"]
        view["signed_manifest"] = signed
    return view
