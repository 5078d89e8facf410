"""``bsdiff4-blocks``: bsdiff4 over the changed, non-zero regions of an image.

Plain bsdiff4 needs ~17-19x the image in RAM and goes quadratic on runs of
zeros, which filesystem images are full of. This method first classifies the
new image in aligned blocks (4 KiB, a filesystem's block):

- a block of one repeated byte (zeros, erased flash's 0xFF) becomes ``FILL``;
- a block found in the old image (continuing the previous copy, at the same
  offset, or anywhere via a hash index of the old image's blocks) becomes
  ``COPY(old offset)``;
- everything else is *changed*. Runs of changed blocks are bsdiff'ed, without
  their zero blocks, against a window of the old image: the whole old image
  when it is small, otherwise the old regions the neighbouring copies point at
  (where a moved file came from) and the same offset (a file edited in place).

Payload, after the container's header (format 2; lengths are unsigned varints)::

    varint block size, u8 section count (4),
    4 x (varint raw length, varint compressed length, u8 log2 LZMA2 dictionary),
    sections: ops, bsdiff control, bsdiff diff, bsdiff extra (each raw LZMA2)

(Format 1 wrote the block size as a u32 and the two lengths as u64s: 68 bytes
of table where format 2 takes 13-30; it is still read.)

The ops section is a sequence of unsigned varints::

    1 COPY  old_offset length
    2 FILL  byte length
    3 GROUP n_ranges (old_offset length)*n out_length control_len diff_len extra_len
    4 DATA  length          (the next bytes of the current group's output)

Applying reads the sections as streams and runs bspatch's instructions as a
stream too, reading the old image where they point: it buffers a few MiB
(pieces and one group's control block), never an image.
"""
# one-piece: one patch format, its writer and its reader side by side, so the two cannot drift apart

from __future__ import annotations

import contextlib
import hashlib
import lzma
import os
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import bsdiff4.core

from common.delta._format import VarintReader, put_varints
from common.errors import DeltaError

__all__ = ["BLOCK", "apply_blocks", "blocks_memory_estimate", "make_blocks"]

BLOCK = 4096
READ = 1 << 20
OP_COPY, OP_FILL, OP_GROUP, OP_DATA = 1, 2, 3, 4
SECTIONS = ("ops", "control", "diff", "extra")
_PARAMS = struct.Struct(">IB")
_SECTION = struct.Struct(">QQB")  # raw length, compressed length, log2 of the LZMA2 dictionary
MAX_DICT_LOG = 24  # 16 MiB: bounds the applier's buffer per section; a patch claiming more is refused
MAX_OPS_RAW = 64 << 20

# bsdiff's suffix sort holds two 8-byte arrays per old byte, plus old and output.
BSDIFF_RAM_FACTOR = 19


@dataclass(frozen=True, slots=True)
class _Run:
    kind: str  # "F" fill, "C" copy, "D" changed
    new_off: int
    length: int
    old_off: int = -1  # for "F": the fill byte


def blocks_memory_estimate(
    old_size: int, new_size: int, *, whole: bool, seg_cap: int = 1 << 20, margin: int = 256 << 10, group_cap: int = 8 << 20
) -> int:
    """Bytes this method needs at most (old-block index and bsdiff's suffix sort of the largest window)."""
    index = (old_size // BLOCK) * 120
    if whole:
        return index + BSDIFF_RAM_FACTOR * max(old_size, new_size)
    window = min(old_size, max(group_cap, 3 * (seg_cap + 2 * max(margin, seg_cap // 2))))
    return index + BSDIFF_RAM_FACTOR * max(window, min(new_size, seg_cap))


def _digest(b: bytes | memoryview) -> bytes:
    return hashlib.blake2b(b, digest_size=16).digest()


_FILLS = [bytes([i]) * BLOCK for i in range(256)]


def _index_old(fd: int, size: int) -> dict[bytes, int]:
    index: dict[bytes, int] = {}
    off = 0
    while off + BLOCK <= size:
        buf = os.pread(fd, READ, off)
        full = len(buf) - len(buf) % BLOCK
        mv = memoryview(buf)
        for i in range(0, full, BLOCK):
            b = mv[i : i + BLOCK]
            if b != _FILLS[b[0]]:
                index.setdefault(_digest(b), off + i)
        off += full
        if full == 0:
            break
    return index


def _classify(old_fd: int, old_size: int, new_fd: int, new_size: int) -> list[_Run]:
    index = _index_old(old_fd, old_size)
    runs: list[_Run] = []

    def add(kind: str, off: int, length: int, src: int = -1) -> None:
        if runs:
            last = runs[-1]
            if last.kind == kind and (kind == "D" or last.old_off + (last.length if kind == "C" else 0) == src):
                runs[-1] = _Run(kind, last.new_off, last.length + length, last.old_off)
                return
        runs.append(_Run(kind, off, length, src))

    prev_src = -1
    off = 0
    while off < new_size:
        buf = os.pread(new_fd, READ, off)
        if not buf:
            raise DeltaError("new image shrank while it was read")
        same = os.pread(old_fd, len(buf), off) if off < old_size else b""
        for i in range(0, len(buf), BLOCK):
            b = buf[i : i + BLOCK]
            pos = off + i
            if len(b) < BLOCK:  # the tail: no block to match
                add("D", pos, len(b))
                prev_src = -1
                continue
            if b == _FILLS[b[0]]:
                add("F", pos, BLOCK, b[0])
                prev_src = -1
                continue
            src = -1
            if 0 <= prev_src and prev_src + 2 * BLOCK <= old_size and os.pread(old_fd, BLOCK, prev_src + BLOCK) == b:
                src = prev_src + BLOCK
            elif same[i : i + BLOCK] == b:
                src = pos
            else:
                src = index.get(_digest(b), -1)
            if src >= 0:
                add("C", pos, BLOCK, src)
            else:
                add("D", pos, BLOCK)
            prev_src = src
        off += len(buf)
    return runs


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b - a) for a, b in out if b > a]


def _joinable(
    group: tuple[list[tuple[int, int]], list[tuple[int, int]]], win: list[tuple[int, int]], length: int, cap: int
) -> bool:
    """Whether a segment can join the group before it: their windows overlap (one suffix sort serves
    both) and the merged window stays under ``cap``, which bounds bsdiff's memory."""
    ranges, pieces = group
    merged = _merge([(o, o + n) for o, n in ranges + win])
    total = sum(n for _, n in merged)
    overlap = total < sum(n for _, n in ranges) + sum(n for _, n in win)
    return overlap and total <= cap and sum(n for _, n in pieces) + length <= cap // 2


def _nearest_copy(runs: list[_Run], k: int, step: int) -> _Run | None:
    """The nearest COPY run from ``k`` in direction ``step``, skipping fill runs only."""
    k += step
    while 0 <= k < len(runs):
        if runs[k].kind == "C":
            return runs[k]
        if runs[k].kind != "F":
            return None
        k += step
    return None


def _windows(runs: list[_Run], k: int, a: int, b: int, old_size: int, margin: int) -> list[tuple[int, int]]:
    """Old regions likely to hold what new ``[a, b)`` (in changed run ``k``) was made from."""
    starts = [a]
    for step in (-1, 1):
        c = _nearest_copy(runs, k, step)
        if c is not None:
            starts.append(a + c.old_off - c.new_off)
    ranges = [(max(0, s - margin), min(old_size, s + (b - a) + margin)) for s in starts]
    return _merge([r for r in ranges if r[0] < r[1]])


class _Spill:
    """A section written to a temporary file first, so making a patch never holds it in memory."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.size = 0

    def write(self, data: bytes) -> None:
        self.f.write(data)
        self.size += len(data)


def _dict_log(raw_len: int) -> int:
    return max(12, min(MAX_DICT_LOG, (max(raw_len, 1) - 1).bit_length()))


def _lzma_filters(dict_log: int, *, preset: int = 6) -> list[dict[str, int]]:
    return [{"id": lzma.FILTER_LZMA2, "preset": preset, "dict_size": 1 << dict_log}]


def _compress_into(src: BinaryIO, raw_len: int, out: BinaryIO) -> int:
    # raw LZMA2 (no xz container: ~60 bytes less per section); the patch's SHA-256 of the output covers integrity
    preset = 9 | lzma.PRESET_EXTREME if raw_len <= (32 << 20) else 9
    c = lzma.LZMACompressor(format=lzma.FORMAT_RAW, filters=_lzma_filters(_dict_log(raw_len), preset=preset))
    src.seek(0)
    n = 0
    while piece := src.read(READ):
        z = c.compress(piece)
        out.write(z)
        n += len(z)
    z = c.flush()
    out.write(z)
    return n + len(z)


def make_blocks(
    old_path: str,
    new_path: str,
    out: BinaryIO,
    *,
    whole_limit: int = 16 << 20,
    seg_cap: int = 1 << 20,
    margin: int = 256 << 10,
    group_cap: int = 8 << 20,
    tmpdir: str | None = None,
    progress: Callable[[], None] | None = None,
) -> None:
    """Write the payload of a ``bsdiff4-blocks`` patch from ``old_path`` to ``new_path`` into ``out``."""
    with contextlib.ExitStack() as files:
        fo, fn = files.enter_context(open(old_path, "rb")), files.enter_context(open(new_path, "rb"))

        def temp() -> BinaryIO:
            return files.enter_context(tempfile.TemporaryFile(dir=tmpdir))

        old_fd, new_fd = fo.fileno(), fn.fileno()
        old_size, new_size = os.fstat(old_fd).st_size, os.fstat(new_fd).st_size
        runs = _classify(old_fd, old_size, new_fd, new_size)
        ops = bytearray()
        spills = {name: _Spill(temp()) for name in SECTIONS[1:]}

        def group(ranges: list[tuple[int, int]], pieces: list[tuple[int, int]]) -> None:
            window = b"".join(os.pread(old_fd, n, off) for off, n in ranges)
            target = b"".join(os.pread(new_fd, n, off) for off, n in pieces)
            ctrl, diff, extra = bsdiff4.core.diff(window, target)
            for name, data in zip(SECTIONS[1:], (ctrl, diff, extra)):
                spills[name].write(data)
            _put(ops, OP_GROUP, len(ranges))
            for off, n in ranges:
                _put(ops, off, n)
            _put(ops, len(target), len(ctrl), len(diff), len(extra))
            if progress:
                progress()

        whole = old_size <= whole_limit
        # plan the groups: (window ranges, new pieces); the DATA ops of a group follow its GROUP op
        segments: list[tuple[int, int]] = []  # (new offset, length) of each changed segment, in order
        groups: list[tuple[list[tuple[int, int]], list[tuple[int, int]]]] = []
        starts: set[int] = set()  # index of the segment that opens each group
        if whole:
            segments = [(r.new_off, r.length) for r in runs if r.kind == "D"]
            if segments:
                groups.append(([(0, old_size)] if old_size else [], segments))
                starts.add(0)
        else:
            for k, r in enumerate(runs):
                if r.kind != "D":
                    continue
                for a in range(r.new_off, r.new_off + r.length, seg_cap):
                    b = min(a + seg_cap, r.new_off + r.length)
                    win = _windows(runs, k, a, b, old_size, max(margin, (b - a) // 2))
                    if groups and _joinable(groups[-1], win, b - a, group_cap):
                        ranges, pieces = groups[-1]
                        groups[-1] = (_merge([(o, o + n) for o, n in ranges + win]), [*pieces, (a, b - a)])
                    else:
                        starts.add(len(segments))
                        groups.append((win, [(a, b - a)]))
                    segments.append((a, b - a))
        pending = iter(groups)
        seg = 0
        for r in runs:
            if r.kind == "F":
                _put(ops, OP_FILL, r.old_off, r.length)
            elif r.kind == "C":
                _put(ops, OP_COPY, r.old_off, r.length)
            else:
                end = r.new_off + r.length
                while seg < len(segments) and segments[seg][0] < end:
                    if seg in starts:
                        group(*next(pending))
                    _put(ops, OP_DATA, segments[seg][1])
                    seg += 1

        ops_spill = _Spill(temp())
        ops_spill.write(bytes(ops))
        # the section table comes first: compress each section to a temp file to learn its length
        packed: list[tuple[int, BinaryIO, int]] = []
        for spill in [ops_spill, *spills.values()]:
            z = temp()
            packed.append((spill.size, z, _compress_into(spill.f, spill.size, z)))
        table = bytearray()
        put_varints(table, BLOCK)
        table.append(len(SECTIONS))
        for raw_len, _, z_len in packed:
            put_varints(table, raw_len, z_len)
            table.append(_dict_log(raw_len))
        out.write(table)
        for _, z, _ in packed:
            z.seek(0)
            while piece := z.read(READ):
                out.write(piece)


_put = put_varints


class _Section:
    """One LZMA2 section of a patch, decompressed as a stream from its byte range."""

    def __init__(self, fd: int, offset: int, z_len: int, raw_len: int, dict_log: int, name: str, where: str) -> None:
        self.fd, self.pos, self.end = fd, offset, offset + z_len
        self.left, self.name, self.where = raw_len, name, where
        if not 12 <= dict_log <= MAX_DICT_LOG:
            raise self._fail(f"dictionary of 2^{dict_log} bytes is outside 2^12..2^{MAX_DICT_LOG}")
        self.d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_lzma_filters(dict_log))

    def _fail(self, why: str) -> DeltaError:
        return DeltaError(f"patch {self.where!r}: {self.name} section {why}")

    def read(self, n: int) -> bytes:
        if n > self.left:
            raise self._fail(f"asked for {n} bytes with {self.left} left (corrupt operations)")
        parts: list[bytes] = []
        need = n
        try:
            while need:
                if self.d.eof:
                    raise self._fail("ends early")
                chunk = b""
                if self.d.needs_input:
                    if self.pos >= self.end:
                        raise self._fail("is truncated")
                    chunk = os.pread(self.fd, min(1 << 16, self.end - self.pos), self.pos)
                    if not chunk:
                        raise self._fail("is truncated")
                    self.pos += len(chunk)
                piece = self.d.decompress(chunk, max_length=need)
                parts.append(piece)
                need -= len(piece)
        except lzma.LZMAError as exc:
            raise self._fail(f"is corrupt ({exc})") from exc
        self.left -= n
        return b"".join(parts)


def _add_bytes(a: bytes, b: bytes) -> bytes:
    """Byte-wise ``(a[i] + b[i]) % 256``, as bspatch does, on whole big integers instead of a Python loop."""
    n = len(a)
    if not n:
        return b""
    x, y = int.from_bytes(a, "little"), int.from_bytes(b, "little")
    m7 = int.from_bytes(b"\x7f" * n, "little")
    m8 = int.from_bytes(b"\x80" * n, "little")
    # the low 7 bits of each byte add without carrying out of the byte; bit 7 is the xor of both bits 7
    return (((x & m7) + (y & m7)) ^ ((x ^ y) & m8)).to_bytes(n, "little")


def _offtin(b: bytes, i: int) -> int:
    v = int.from_bytes(b[i : i + 8], "little")
    return -(v & 0x7FFF_FFFF_FFFF_FFFF) if v >> 63 else v


class _GroupReader:
    """One group's output, produced on demand by a streaming bspatch over its old window."""

    def __init__(
        self,
        old_fd: int,
        ranges: list[tuple[int, int]],
        out_len: int,
        control: bytes,
        diff: _Section,
        extra: _Section,
        d_len: int,
        e_len: int,
        fail: Callable[[str], DeltaError],
    ) -> None:
        self.fd, self.ranges, self.fail = old_fd, ranges, fail
        self.wlen = sum(n for _, n in ranges)
        self.left, self.control, self.ci = out_len, control, 0
        self.diff, self.extra, self.d_left, self.e_left = diff, extra, d_len, e_len
        self.add_left = self.extra_left = self.seek = 0
        self.oldpos = 0

    def _window(self, pos: int, n: int) -> bytes:
        """``n`` bytes of the window from ``pos``; outside it, zeros (bspatch adds nothing there)."""
        out = bytearray(n)
        base = 0
        for off, length in self.ranges:
            lo, hi = max(pos, base), min(pos + n, base + length)
            if lo < hi:
                out[lo - pos : hi - pos] = os.pread(self.fd, hi - lo, off + lo - base)
            base += length
        return bytes(out)

    def _next(self) -> None:
        if self.ci + 24 > len(self.control):
            raise self.fail("a group's instructions end before its output")
        x, y, z = (_offtin(self.control, self.ci + k) for k in (0, 8, 16))
        self.ci += 24
        if x < 0 or y < 0 or x > self.d_left or y > self.e_left or x + y > self.left:
            raise self.fail("a bsdiff instruction runs past its group (corrupt control block)")
        self.oldpos += self.seek
        self.add_left, self.extra_left, self.seek = x, y, z
        self.d_left -= x
        self.e_left -= y

    def read(self, n: int) -> bytes:
        if n > self.left:
            raise self.fail("data op runs past its group's output")
        parts: list[bytes] = []
        while n:
            if self.add_left:
                k = min(n, self.add_left, READ)
                parts.append(_add_bytes(self.diff.read(k), self._window(self.oldpos, k)))
                self.oldpos += k
                self.add_left -= k
            elif self.extra_left:
                k = min(n, self.extra_left, READ)
                parts.append(self.extra.read(k))
                self.extra_left -= k
            else:
                self._next()
                continue
            n -= k
            self.left -= k
        return b"".join(parts)

    def finish(self) -> None:
        """Move past what a group declared but its data ops did not use, keeping the streams in step."""
        while self.left:
            self.read(min(self.left, READ))
        for section, n in ((self.diff, self.d_left), (self.extra, self.e_left)):
            while n:
                k = min(n, READ)
                section.read(k)
                n -= k


def _read_table(patch_fd: int, payload_off: int, version: int, where: str) -> tuple[int, list[tuple[int, int, int]]]:
    """The section table at ``payload_off``: where the first section starts, and (raw length, compressed
    length, dictionary log) of each."""
    if version == 1:
        head = os.pread(patch_fd, _PARAMS.size + _SECTION.size * len(SECTIONS), payload_off)
        if len(head) < _PARAMS.size:
            raise DeltaError(f"patch {where!r}: truncated block parameters")
        n_sections = _PARAMS.unpack_from(head)[1]
        if n_sections != len(SECTIONS):
            raise DeltaError(f"patch {where!r}: expected {len(SECTIONS)} sections, found {n_sections}")
        if len(head) < _PARAMS.size + _SECTION.size * n_sections:
            raise DeltaError(f"patch {where!r}: truncated section table")
        table = [_SECTION.unpack_from(head, _PARAMS.size + i * _SECTION.size) for i in range(n_sections)]
        return payload_off + len(head), table
    head = os.pread(patch_fd, 11 + len(SECTIONS) * 21, payload_off)  # the longest varints
    reader = VarintReader(head, where, what="section table")
    reader.read()  # the block size: the ops carry their own lengths
    n_sections = reader.read()
    if n_sections != len(SECTIONS):
        raise DeltaError(f"patch {where!r}: expected {len(SECTIONS)} sections, found {n_sections}")
    table = []
    for _ in range(n_sections):
        raw_len, z_len, dict_log = reader.read(), reader.read(), reader.read()
        table.append((raw_len, z_len, dict_log))
    return payload_off + reader.pos, table


def apply_blocks(
    old_fd: int,
    old_size: int,
    patch_fd: int,
    payload_off: int,
    patch_size: int,
    write: Callable[[bytes | memoryview], None],
    *,
    where: str,
    max_control: int,
    version: int = 2,
) -> None:
    """Rebuild the new image from a ``bsdiff4-blocks`` payload (of container format ``version``), handing it
    to ``write`` in order.

    Memory is bounded by ``READ``-sized pieces and one group's control block
    (at most ``max_control`` bytes, 24 per bsdiff instruction): the old image is
    read where the instructions point, never loaded whole.
    """
    pos, table = _read_table(patch_fd, payload_off, version, where)
    sections = []
    for name, (raw_len, z_len, dict_log) in zip(SECTIONS, table):
        if pos + z_len > patch_size:
            raise DeltaError(f"patch {where!r}: {name} section runs past the end of the file")
        sections.append(_Section(patch_fd, pos, z_len, raw_len, dict_log, name, where))
        pos += z_len
    if sections[0].left > MAX_OPS_RAW:
        raise DeltaError(f"patch {where!r}: operation stream of {sections[0].left} bytes is too large")
    ops = VarintReader(sections[0].read(sections[0].left), where)
    ctrl, diff, extra = sections[1:]
    group: _GroupReader | None = None

    def fail(why: str) -> DeltaError:
        return DeltaError(f"patch {where!r}: {why}")

    while not ops.at_end():
        op = ops.read()
        if op == OP_COPY:
            off, n = ops.read(), ops.read()
            if off + n > old_size:
                raise fail(f"copy of {n} bytes at {off} runs past the old image ({old_size} bytes)")
            while n:
                piece = os.pread(old_fd, min(n, READ), off)
                if not piece:
                    raise fail("old image shrank while it was read")
                write(piece)
                off += len(piece)
                n -= len(piece)
        elif op == OP_FILL:
            byte, n = ops.read(), ops.read()
            if byte > 255:
                raise fail(f"fill byte {byte} is not a byte")
            fill = bytes([byte]) * min(n, READ)
            while n:
                k = min(n, READ)
                write(fill[:k] if k < len(fill) else fill)
                n -= k
        elif op == OP_GROUP:
            ranges = [(ops.read(), ops.read()) for _ in range(ops.read())]
            out_len, c_len, d_len, e_len = ops.read(), ops.read(), ops.read(), ops.read()
            if any(off + n > old_size for off, n in ranges):
                raise fail("a group window runs past the old image")
            if c_len % 24 or c_len > max_control:
                raise fail(f"a group's control block of {c_len} bytes is malformed or over {max_control}")
            if group is not None:
                group.finish()
            group = _GroupReader(old_fd, ranges, out_len, ctrl.read(c_len), diff, extra, d_len, e_len, fail)
        elif op == OP_DATA:
            n = ops.read()
            if group is None:
                raise fail("data op before any group")
            while n:
                k = min(n, READ)
                write(group.read(k))
                n -= k
        else:
            raise fail(f"unknown operation {op}")
