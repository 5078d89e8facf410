"""Fixtures shared by the release tests: a real operator API with releases, served on 127.0.0.1."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.http import ApiContext, create_app, serve_api
from cloud.releases.artifacts import ArtifactStore
from cloud.releases.plan import ReleaseSettings, load_release_keys
from cloud.releases.service import ReleaseService
from cloud.store import Store
from common.firmware import generate_release_key, save_release_key
from device_agent.simimage import make

RELEASE_TOKEN = "release-operator-token"
PASSPHRASE = b"correct horse battery staple"
IMAGE_SIZE = 256 << 10
BLOCK = 4096


def make_sim_image(version: str, *, changed_blocks: tuple[int, ...] = (), base_seed: int = 1) -> bytes:
    """A 256 KiB simulated image: the same filler for every version of one ``base_seed``, with
    ``changed_blocks`` (4 KiB each) rewritten, so nearby versions differ in a few blocks."""
    data = bytearray(make(version, "ok", IMAGE_SIZE, random.Random(base_seed)))
    rng = random.Random(f"{version}/{base_seed}")
    for b in changed_blocks:
        data[b * BLOCK : (b + 1) * BLOCK] = rng.randbytes(BLOCK)
    return bytes(data)


class CountingPool(ProcessPoolExecutor):
    """A real process pool that counts what it was given: proof the deltas ran in it."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers, mp_context=multiprocessing.get_context("spawn"))
        self.submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@dataclass(frozen=True)
class ReleaseCloud:
    url: str
    data_dir: Path
    key_path: Path  # trusted, encrypted under PASSPHRASE
    passphrase_file: Path
    key: Ed25519PrivateKey
    second_key: Ed25519PrivateKey  # trusted too
    pool: CountingPool
    store: Store

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {RELEASE_TOKEN}"}


@pytest.fixture(scope="session")
def sim_image() -> Callable[..., bytes]:
    """``make_sim_image``: 256 KiB images that differ from their neighbours in a few blocks."""
    return make_sim_image


@pytest.fixture(scope="session")
def release_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReleaseCloud]:
    """A store, an artifact store, two trusted release keys, deltas in a 2-process pool; served in an
    event loop on its own thread. Tests keep apart by hardware model (deltas never cross models)."""
    d = tmp_path_factory.mktemp("release-cloud")
    key, second = generate_release_key(), generate_release_key()
    save_release_key(d / "release.key", key, PASSPHRASE)
    save_release_key(d / "second.key", second, b"another passphrase")
    (d / "passphrase").write_bytes(PASSPHRASE + b"\n")
    store = Store.open(f"sqlite:///{d / 'cloud.db'}")
    store_thread = ThreadPoolExecutor(1, thread_name_prefix="store")
    pool = CountingPool(2)
    service = ReleaseService(
        store.releases,
        ArtifactStore(d / "artifacts"),
        load_release_keys([str(d / "release.key.pub"), str(d / "second.key.pub")]),
        ReleaseSettings(delta_isolate=False, delta_workers=2, chunk_size=64 << 10),
        store_executor=store_thread,
        pool=pool,
    )
    service.start()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="release-api-loop", daemon=True)
    thread.start()
    app = create_app(ApiContext(store, RELEASE_TOKEN, executor=store_thread, releases=service))
    api = asyncio.run_coroutine_threadsafe(serve_api(app, "127.0.0.1", 0), loop).result(10)
    try:
        yield ReleaseCloud(
            url=f"http://127.0.0.1:{api.port}",
            data_dir=d,
            key_path=d / "release.key",
            passphrase_file=d / "passphrase",
            key=key,
            second_key=second,
            pool=pool,
            store=store,
        )
    finally:
        asyncio.run_coroutine_threadsafe(api.stop(), loop).result(10)
        asyncio.run_coroutine_threadsafe(service.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        pool.shutdown()
        store_thread.submit(store.close).result()
        store_thread.shutdown()
