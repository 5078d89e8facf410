"""The content-addressed artifact store: streamed in, named by SHA-256, one file per content, nothing partial."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloud.releases.artifacts import ArtifactStore, ArtifactTooLarge


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _store(tmp_path: Path) -> ArtifactStore:
    store = ArtifactStore(tmp_path / "artifacts")
    store.prepare()
    return store


def test_ingest_names_the_file_by_its_sha256_and_keeps_one_copy(tmp_path: Path) -> None:
    store = _store(tmp_path)
    data = bytes(range(256)) * 20_000  # ~5 MiB, arriving in 64 KiB pieces
    art = asyncio.run(store.ingest(_pieces(data, 65_536), limit=10 << 20))
    assert (art.sha256, art.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert art.path == tmp_path / "artifacts" / art.sha256
    assert art.path.read_bytes() == data
    again = asyncio.run(store.ingest(_pieces(data, 1000), limit=10 << 20))
    assert again == art
    assert sorted(p.name for p in store.root.iterdir()) == [".tmp", art.sha256]
    assert list((store.root / ".tmp").iterdir()) == []


def test_an_upload_over_the_limit_keeps_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(ArtifactTooLarge, match="limit of 1000 bytes"):
        asyncio.run(store.ingest(_pieces(b"x" * 5000, 300), limit=1000))
    assert [p.name for p in store.root.iterdir()] == [".tmp"]
    assert list((store.root / ".tmp").iterdir()) == []


def test_adopt_moves_a_finished_file_in_and_prepare_clears_leftovers(tmp_path: Path) -> None:
    store = _store(tmp_path)
    patch = store.temp_path("delta")
    patch.write_bytes(b"a patch")
    art = store.adopt(patch)
    assert not patch.exists() and art.path.read_bytes() == b"a patch"
    assert store.has(hashlib.sha256(b"a patch").hexdigest())
    store.temp_path("upload").write_bytes(b"half an upload a crash left")
    store.prepare()
    assert list((store.root / ".tmp").iterdir()) == []
    assert art.path.exists()


def test_path_refuses_anything_but_a_sha256(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    for bad in ("../etc/passwd", "ABC", "0" * 63, "g" * 64):
        with pytest.raises(ValueError, match="not 64 lowercase hex"):
            store.path(bad)
