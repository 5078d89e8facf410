"""The store's release records (migration 4), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cloud.store import Store
from tests.postgres import fresh_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
        yield s
        s.close()
        return
    with fresh_schema() as url:
        s = Store.open(url)
        try:
            yield s
        finally:
            s.close()


def _release(
    version: str, body: str = "{}", created_ms: int = 1000, hw: tuple[str, ...] = ("gw-x1",)
) -> dict[str, Any]:
    return {
        "version": version,
        "hw": list(hw),
        "image_sha256": "a" * 64,
        "size": 262_144,
        "manifest_body": body,
        "security_version": 2,
        "created_ms": created_ms,
    }


def _delta(from_version: str, status: str = "offered") -> dict[str, Any]:
    offered = status == "offered"
    return {
        "from_version": from_version,
        "method": "zstd-patch-from",
        "size": 1234,
        "sha256": "b" * 64 if offered else None,
        "status": status,
        "detail": {"note": "n", "ratio": 0.01},
    }


def test_a_release_is_saved_unsigned_with_its_deltas_then_published_once(store: Store) -> None:
    assert store.releases.save_release(_release("1.1.0", '{"v":1}'), [_delta("1.0.0"), _delta("0.9.0", "not-worth-it")])
    row = store.releases.get_release("1.1.0")
    assert row is not None
    assert (row["state"], row["signed_manifest"], row["published_ms"], row["hw"]) == ("unsigned", None, None, ["gw-x1"])
    assert [(d["from_version"], d["status"], d["sha256"]) for d in row["deltas"]] == [
        ("0.9.0", "not-worth-it", None),
        ("1.0.0", "offered", "b" * 64),
    ]
    assert store.releases.published_releases() == []
    assert not store.releases.publish_release("1.1.0", '{"v":2}', "signed", 5000)  # not the body it was built with
    assert store.releases.publish_release("1.1.0", '{"v":1}', "signed", 5000)
    assert not store.releases.publish_release("1.1.0", '{"v":1}', "signed again", 6000)  # published is final
    row = store.releases.get_release("1.1.0")
    assert (row["state"], row["signed_manifest"], row["published_ms"]) == ("published", "signed", 5000)
    assert store.releases.published_releases() == [
        {"version": "1.1.0", "hw": ["gw-x1"], "image_sha256": "a" * 64, "size": 262_144, "security_version": 2}
    ]
    assert not store.releases.save_release(_release("1.1.0", '{"v":3}'), [])  # a published version is never replaced
    assert store.releases.get_release("1.1.0")["manifest_body"] == '{"v":1}'


def test_an_unsigned_release_is_replaced_with_its_deltas(store: Store) -> None:
    assert store.releases.save_release(_release("2.0.0", "old"), [_delta("1.0.0"), _delta("1.1.0")])
    assert store.releases.save_release(_release("2.0.0", "new", created_ms=2000), [_delta("1.1.0", "failed")])
    row = store.releases.get_release("2.0.0")
    assert (row["manifest_body"], row["created_ms"]) == ("new", 2000)
    assert [(d["from_version"], d["status"]) for d in row["deltas"]] == [("1.1.0", "failed")]


def test_list_releases_without_the_manifest_texts(store: Store) -> None:
    store.releases.save_release(_release("1.0.0", created_ms=1), [])
    store.releases.save_release(_release("1.1.0", created_ms=2), [_delta("1.0.0")])
    store.releases.publish_release("1.0.0", "{}", "s", 3)
    rows = store.releases.list_releases()
    assert [(r["version"], r["state"], len(r["deltas"])) for r in rows] == [
        ("1.0.0", "published", 0),
        ("1.1.0", "unsigned", 1),
    ]
    assert "manifest_body" not in rows[0] and "signed_manifest" not in rows[0]
    assert [r["version"] for r in store.releases.list_releases("unsigned")] == ["1.1.0"]
    assert store.releases.get_release("9.9.9") is None
    with pytest.raises(ValueError, match="not one of"):
        store.releases.list_releases("draft")
    with pytest.raises(ValueError, match="delta status"):
        store.releases.save_release(_release("3.0.0"), [_delta("1.0.0", "maybe")])
