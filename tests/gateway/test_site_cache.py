"""The site cache: a byte budget never exceeded, pinned artifacts never evicted, LRU otherwise."""

from __future__ import annotations

import hashlib
import random

import pytest

from common.errors import CacheFull
from gateway.site_cache import SiteCache


def put(cache: SiteCache, size: int, seed: int, **kw) -> str:
    data = random.Random(seed).randbytes(size)
    sha = hashlib.sha256(data).hexdigest()
    cache.make_room(size, reserve_for=sha)
    cache.path(sha).write_bytes(data)
    cache.admit(sha, size, kind=kw.pop("kind", "delta"), **kw)
    return sha


def test_random_admits_never_exceed_the_budget_and_never_evict_a_pinned_artifact(tmp_path):
    rng = random.Random(7)
    cache = SiteCache(tmp_path / "c", budget_bytes=100_000)
    pinned: set[str] = set()
    for i in range(200):
        try:
            sha = put(cache, rng.randint(1_000, 30_000), i)
        except CacheFull:
            continue
        if rng.random() < 0.1 and len(pinned) < 3:
            cache.pin(sha, f"rollout-{i}")
            pinned.add(sha)
        assert cache.used_bytes() <= 100_000
        on_disk = sum(p.stat().st_size for p in cache.objects.iterdir())
        assert on_disk <= 100_000
        assert pinned <= set(cache.entries())
    assert cache.evicted > 0


def test_least_recently_used_goes_first(tmp_path):
    cache = SiteCache(tmp_path / "c", budget_bytes=3_000)
    a, b, c = (put(cache, 1_000, s) for s in (1, 2, 3))
    cache.touch(a)
    put(cache, 1_000, 4)
    assert set(cache.entries()) >= {a, c} and b not in cache.entries()


def test_when_everything_is_pinned_or_being_read_the_cache_says_so_and_keeps_it(tmp_path):
    cache = SiteCache(tmp_path / "c", budget_bytes=2_000)
    a, b = put(cache, 1_000, 1), put(cache, 1_000, 2)
    cache.pin(a, "r1")
    cache.readers[b] = 1
    with pytest.raises(CacheFull, match="pinned or in-use"):
        put(cache, 1_000, 3)
    assert set(cache.entries()) == {a, b}
    del cache.readers[b]
    assert cache.unpin_all("r1") == 1
    put(cache, 1_000, 3)
    with pytest.raises(CacheFull, match="larger than the whole cache"):
        cache.make_room(5_000)


def test_images_are_found_by_version_and_forgotten_with_their_file(tmp_path):
    cache = SiteCache(tmp_path / "c", budget_bytes=10_000)
    sha = put(cache, 1_000, 1, kind="image", version="2.0.0", hw=("hw-1",), manifest=b"{}")
    assert cache.image_for("2.0.0", "hw-1") == sha and cache.versions("hw-1") == ["2.0.0"]
    assert cache.manifest("2.0.0") == b"{}"
    cache.close()
    cache.path(sha).unlink()  # lost outside the cache's knowledge
    reopened = SiteCache(tmp_path / "c", budget_bytes=10_000)
    assert reopened.image_for("2.0.0", "hw-1") is None and not reopened.has(sha)
