"""The gateway's site cache: firmware images and deltas, content-addressed, within a byte budget.

    cache = SiteCache(data_dir / "cache", budget_bytes=2 << 30)
    path = cache.reserve_path(sha)          # where a download lands (objects/<sha>.part)
    cache.admit(sha, size, kind="image", version="2.1.0", hw=("sim-board-1",), manifest=signed)
    cache.image_for("2.0.0", "sim-board-1") # sha of a held full image, or None
    cache.pin(sha, "rollout-42"); cache.unpin_all("rollout-42")

Files live under ``objects/<sha256>``; the index is LMDB (``index/``): one record per artifact
(size, kind, version, hardware, from/to for deltas, last use, pins) plus a version -> image map
and the signed manifests. Every admit makes room first by evicting least recently used artifacts
that nothing pins and nothing is reading, and raises ``CacheFull`` if that is not enough: the
cache never holds more than its budget, and never evicts a pinned artifact. LRU order is a
counter kept in the index, not a clock. Blocking calls: the gateway runs them on one thread.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lmdb

from common.errors import CacheFull

__all__ = ["SiteCache"]


class SiteCache:
    def __init__(self, root: str | os.PathLike[str], budget_bytes: int) -> None:
        if budget_bytes <= 0:
            raise ValueError(f"cache budget must be positive, got {budget_bytes}")
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.budget = budget_bytes
        self.env = lmdb.open(str(self.root / "index"), max_dbs=4, map_size=256 << 20, subdir=True)
        self._art = self.env.open_db(b"artifacts")
        self._ver = self.env.open_db(b"versions")
        self._man = self.env.open_db(b"manifests")
        self._meta = self.env.open_db(b"meta")
        self.readers: dict[str, int] = {}  # sha -> transfers reading it now (never evicted meanwhile)
        self.reserved: dict[str, int] = {}  # sha -> bytes set aside for a download or a delta being made
        self.evicted = 0
        self._drop_orphans()

    def _drop_orphans(self) -> None:
        """An index entry whose file is gone is forgotten; a file nobody indexed (a crash between the
        rename and the index commit) is removed, unless it is a partial download (kept to resume)."""
        with self.env.begin(write=True) as txn:
            for key, raw in list(txn.cursor(db=self._art)):
                if not (self.objects / key.decode()).is_file():
                    self._forget(txn, key.decode(), json.loads(raw))
            indexed = {k.decode() for k, _ in txn.cursor(db=self._art)}
        for f in self.objects.iterdir():
            if "." not in f.name and f.name not in indexed:
                f.unlink(missing_ok=True)

    # -- reading --------------------------------------------------------------------------

    def path(self, sha: str) -> Path:
        return self.objects / sha

    def part_path(self, sha: str) -> Path:
        return self.objects / f"{sha}.part"

    def get(self, sha: str) -> dict[str, Any] | None:
        with self.env.begin() as txn:
            raw = txn.get(sha.encode(), db=self._art)
        return json.loads(raw) if raw else None

    def has(self, sha: str) -> bool:
        return self.get(sha) is not None

    def image_for(self, version: str, hw: str) -> str | None:
        with self.env.begin() as txn:
            raw = txn.get(f"{hw}\x00{version}".encode(), db=self._ver)
        return raw.decode() if raw else None

    def versions(self, hw: str) -> list[str]:
        """Versions whose full images are held for ``hw``."""
        prefix = f"{hw}\x00".encode()
        with self.env.begin() as txn:
            cur = txn.cursor(db=self._ver)
            out = []
            if cur.set_range(prefix):
                for k, _ in cur:
                    if not k.startswith(prefix):
                        break
                    out.append(k[len(prefix):].decode())
        return out

    def manifest(self, version: str) -> bytes | None:
        with self.env.begin() as txn:
            return txn.get(version.encode(), db=self._man)

    def delta_for(self, from_sha: str, to_sha: str) -> str | None:
        with self.env.begin() as txn:
            raw = txn.get(f"delta\x00{from_sha}\x00{to_sha}".encode(), db=self._meta)
        return raw.decode() if raw else None

    def used_bytes(self) -> int:
        """Bytes held plus bytes set aside: never above the budget."""
        with self.env.begin() as txn:
            return sum(json.loads(v)["size"] for _, v in txn.cursor(db=self._art)) + sum(self.reserved.values())

    def entries(self) -> dict[str, dict[str, Any]]:
        with self.env.begin() as txn:
            return {k.decode(): json.loads(v) for k, v in txn.cursor(db=self._art)}

    # -- writing --------------------------------------------------------------------------

    def make_room(self, size: int, *, reserve_for: str = "", keep: frozenset[str] = frozenset()) -> list[str]:
        """Evict least recently used, unpinned, unread artifacts until ``size`` more bytes fit the budget;
        with ``reserve_for`` the room is set aside for that artifact until ``admit`` or ``release``."""
        if size > self.budget:
            raise CacheFull(f"an artifact of {size} bytes is larger than the whole cache budget ({self.budget} bytes)")
        gone: list[str] = []
        with self.env.begin(write=True) as txn:
            entries = {k.decode(): json.loads(v) for k, v in txn.cursor(db=self._art)}
            used = sum(e["size"] for e in entries.values()) + sum(self.reserved.values())
            for sha, e in sorted(entries.items(), key=lambda kv: kv[1]["used"]):
                if used + size <= self.budget:
                    break
                if e["pins"] or self.readers.get(sha) or sha in keep:
                    continue
                self._forget(txn, sha, e)
                used -= e["size"]
                gone.append(sha)
            if used + size > self.budget:
                raise CacheFull(
                    f"{size} bytes do not fit: {used} of {self.budget} bytes are held by pinned or in-use artifacts; "
                    "raise --cache-mb or finish the rollouts that pin them"
                )
        if reserve_for:
            self.reserved[reserve_for] = size
        for sha in gone:
            self.path(sha).unlink(missing_ok=True)
            self.evicted += 1
        return gone

    def release(self, sha: str) -> None:
        """Give back room set aside for ``sha`` (its download failed)."""
        self.reserved.pop(sha, None)

    def _forget(self, txn: lmdb.Transaction, sha: str, e: dict[str, Any]) -> None:
        txn.delete(sha.encode(), db=self._art)
        if e["kind"] == "image":
            for hw in e["hw"]:
                key = f"{hw}\x00{e['version']}".encode()
                if txn.get(key, db=self._ver) == sha.encode():
                    txn.delete(key, db=self._ver)
        elif e.get("from_sha"):
            txn.delete(f"delta\x00{e['from_sha']}\x00{e['to_sha']}".encode(), db=self._meta)

    def admit(
        self,
        sha: str,
        size: int,
        *,
        kind: str,
        version: str = "",
        hw: tuple[str, ...] = (),
        manifest: bytes | None = None,
        from_sha: str = "",
        to_sha: str = "",
        chunks: list[str] | None = None,
    ) -> None:
        """Index the file at ``path(sha)`` (already written and verified by the caller). The caller made room."""
        entry = {"size": size, "kind": kind, "version": version, "hw": list(hw), "from_sha": from_sha, "to_sha": to_sha,
                 "chunks": chunks or [], "pins": [], "used": 0}
        self.reserved.pop(sha, None)
        with self.env.begin(write=True) as txn:
            old = txn.get(sha.encode(), db=self._art)
            if old:
                entry["pins"] = json.loads(old)["pins"]
            entry["used"] = self._tick(txn)
            txn.put(sha.encode(), json.dumps(entry).encode(), db=self._art)
            if kind == "image":
                for h in hw:
                    txn.put(f"{h}\x00{version}".encode(), sha.encode(), db=self._ver)
            if manifest is not None and version:
                txn.put(version.encode(), manifest, db=self._man)
            if from_sha and to_sha:
                txn.put(f"delta\x00{from_sha}\x00{to_sha}".encode(), sha.encode(), db=self._meta)

    def remember_manifest(self, version: str, manifest: bytes) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(version.encode(), manifest, db=self._man)

    def touch(self, sha: str) -> None:
        """Mark ``sha`` as just used (LRU)."""
        with self.env.begin(write=True) as txn:
            raw = txn.get(sha.encode(), db=self._art)
            if raw:
                e = json.loads(raw)
                e["used"] = self._tick(txn)
                txn.put(sha.encode(), json.dumps(e).encode(), db=self._art)

    def pin(self, sha: str, holder: str) -> bool:
        """Keep ``sha`` until ``holder`` (a rollout) lets go; False if it is not held."""
        with self.env.begin(write=True) as txn:
            raw = txn.get(sha.encode(), db=self._art)
            if not raw:
                return False
            e = json.loads(raw)
            if holder not in e["pins"]:
                e["pins"].append(holder)
                txn.put(sha.encode(), json.dumps(e).encode(), db=self._art)
        return True

    def pin_like(self, src: str, dst: str) -> None:
        """Pin ``dst`` for every holder of ``src`` (a delta made for a pinned release is needed as long)."""
        entry = self.get(src)
        for holder in entry["pins"] if entry else ():
            self.pin(dst, holder)

    def unpin_all(self, holder: str) -> int:
        n = 0
        with self.env.begin(write=True) as txn:
            for k, v in list(txn.cursor(db=self._art)):
                e = json.loads(v)
                if holder in e["pins"]:
                    e["pins"].remove(holder)
                    txn.put(k, json.dumps(e).encode(), db=self._art)
                    n += 1
        return n

    def _tick(self, txn: lmdb.Transaction) -> int:
        n = int(txn.get(b"clock", b"0", db=self._meta)) + 1
        txn.put(b"clock", str(n).encode(), db=self._meta)
        return n

    def close(self) -> None:
        self.env.close()
