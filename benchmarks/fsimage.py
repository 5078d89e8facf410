"""Build a pair of filesystem-like images from real files, for delta benchmarks.

The layout imitates what a block filesystem does to an image between two
releases, without needing root or loop devices:

- a header and an inode table at the start (one 64-byte entry per file:
  name hash, offset, size, mtime, a checksum), rewritten for every changed file;
- file data at 4 KiB-aligned offsets in a shuffled order, with scattered free
  gaps and free space (zeros) at the end;
- in the new image a fraction of the files is edited (text: lines changed,
  inserted, deleted; binary: bytes patched and a run inserted). An edited file
  that still fits its blocks is rewritten in place (its slack zeroed); one that
  grew past them moves to the first free gap that holds it and its old blocks
  are left as stale data, as filesystems do. A few files are added too.

Everything is derived from ``seed`` and the sorted list of source files, so a
machine with the same Python build makes the same images.
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FsImagePair", "build_fs_pair", "source_files"]

BLOCK = 4096
ENTRY = 64
MAX_FILE = 4 * 1024 * 1024


@dataclass(frozen=True)
class FsImagePair:
    old_path: Path
    new_path: Path
    size: int
    files: int
    changed: int
    moved: int
    added: int


def source_files(dirs: list[Path], limit_bytes: int) -> list[Path]:
    """Regular files under ``dirs`` (sorted, each at most 4 MiB) until ``limit_bytes`` of them."""
    out: list[Path] = []
    total = 0
    for d in dirs:
        for root, subdirs, names in os.walk(d):
            subdirs.sort()
            for name in sorted(names):
                p = Path(root) / name
                try:
                    if p.is_symlink() or not p.is_file():
                        continue
                    n = p.stat().st_size
                except OSError:
                    continue
                if 0 < n <= MAX_FILE:
                    out.append(p)
                    total += n
                    if total >= limit_bytes:
                        return out
    return out


def _edit(data: bytes, rng: random.Random) -> bytes:
    """A plausible edit between releases of a file."""
    if b"\x00" not in data[:4096]:  # text: change, insert and delete a few lines
        lines = data.split(b"\n")
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(lines))
            lines[i] = lines[i].replace(b"=", b"= ", 1) + b"  # fix %d" % rng.randrange(10**6)
        for _ in range(rng.randint(0, 3)):
            i = rng.randrange(len(lines) + 1)
            lines[i:i] = [b"    log.debug('checked %d')" % rng.randrange(10**6)] * rng.randint(1, 5)
        if len(lines) > 10 and rng.random() < 0.5:
            del lines[rng.randrange(len(lines))]
        return b"\n".join(lines)
    buf = bytearray(data)
    for _ in range(rng.randint(2, 12)):  # patched constants and addresses
        i = rng.randrange(len(buf))
        buf[i : i + 4] = rng.randbytes(4)
    i = rng.randrange(len(buf) + 1)
    buf[i:i] = data[: rng.randint(64, 2048)]  # a run of new code
    return bytes(buf)


def _blocks(n: int) -> int:
    return max(1, -(-n // BLOCK))


class _Image:
    def __init__(self, size: int, n_entries: int) -> None:
        self.size = size
        self.table_off = BLOCK
        self.data_start = self.table_off + _blocks(n_entries * ENTRY) * BLOCK
        self.free: list[tuple[int, int]] = []  # (block, count)
        self.entries: list[tuple[bytes, int, int, int] | None] = []  # (name hash, offset, size, mtime)

    def entry_bytes(self, i: int) -> bytes:
        e = self.entries[i]
        if e is None:
            return bytes(ENTRY)
        name, off, size, mtime = e
        head = struct.pack("<16sQQQ", name, off, size, mtime)
        return head + hashlib.sha256(head).digest()[:ENTRY - len(head)]

    def alloc(self, nblocks: int) -> int:
        for k, (b, c) in enumerate(self.free):
            if c >= nblocks:
                self.free[k] = (b + nblocks, c - nblocks)
                return b * BLOCK
        raise RuntimeError("image full")


def build_fs_pair(
    sources: list[Path],
    size: int,
    out_dir: Path,
    *,
    seed: int = 1,
    change_fraction: float = 0.02,
    fill: float = 0.8,
) -> FsImagePair:
    """Write ``old.img`` and ``new.img`` of ``size`` bytes into ``out_dir`` from ``sources``."""
    rng = random.Random(seed)
    files = list(sources)
    rng.shuffle(files)
    chosen: list[tuple[Path, int]] = []
    budget = int(size * fill)
    used = 0
    for p in files:
        n = p.stat().st_size
        if used + _blocks(n) * BLOCK > budget:
            continue
        chosen.append((p, n))
        used += _blocks(n) * BLOCK
    taken = {p for p, _ in chosen}
    spare = [p for p in files if p not in taken][:64]
    img = _Image(size, len(chosen) + len(spare))
    if img.data_start + used > size:
        raise RuntimeError("image too small for its files")

    out_dir.mkdir(parents=True, exist_ok=True)
    old_path, new_path = out_dir / "old.img", out_dir / "new.img"
    # old image: files in order with scattered free gaps
    block = img.data_start // BLOCK
    total_blocks = size // BLOCK
    slack = (total_blocks - block - used // BLOCK) // 2  # half the free space is scattered gaps
    with open(old_path, "wb") as f:
        f.truncate(size)
        f.write(b"EFIMG1\x00\x00" + struct.pack("<QQ", size, len(chosen)))
        for p, n in chosen:
            if slack > 0 and rng.random() < 0.08:
                gap = min(slack, rng.randint(1, 48))
                img.free.append((block, gap))
                block += gap
                slack -= gap
            f.seek(block * BLOCK)
            f.write(p.read_bytes())
            name = hashlib.sha256(str(p).encode()).digest()[:16]
            img.entries.append((name, block * BLOCK, n, 1_700_000_000 + rng.randrange(10**6)))
            block += _blocks(n)
        img.free.append((block, total_blocks - block))
        img.entries.extend([None] * len(spare))
        for i in range(len(img.entries)):
            f.seek(img.table_off + i * ENTRY)
            f.write(img.entry_bytes(i))

    # new image: edit change_fraction of the files, add a few
    with open(old_path, "rb") as src, open(new_path, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    changed = moved = added = 0
    with open(new_path, "r+b") as f:
        picks = rng.sample(range(len(chosen)), max(1, round(len(chosen) * change_fraction)))
        for i in sorted(picks):
            name, off, n, mtime = img.entries[i]  # type: ignore[misc]
            f.seek(off)
            data = _edit(f.read(n), rng)
            if _blocks(len(data)) <= _blocks(n):
                f.seek(off)
                f.write(data + bytes(_blocks(n) * BLOCK - len(data)))
                new_off = off
            else:
                new_off = img.alloc(_blocks(len(data)))
                f.seek(new_off)
                f.write(data)
                moved += 1
            img.entries[i] = (name, new_off, len(data), mtime + 86_400)
            changed += 1
        for k, p in enumerate(spare[: max(1, len(chosen) // 500)]):
            data = p.read_bytes()
            off = img.alloc(_blocks(len(data)))
            f.seek(off)
            f.write(data)
            img.entries[len(chosen) + k] = (hashlib.sha256(str(p).encode()).digest()[:16], off, len(data), 1)
            added += 1
        for i in range(len(img.entries)):
            f.seek(img.table_off + i * ENTRY)
            f.write(img.entry_bytes(i))
    return FsImagePair(old_path, new_path, size, len(chosen), changed, moved, added)
