"""SWUpdate's ``.swu`` files: a cpio archive in the "new ASCII" (newc) format, ``sw-description`` first.

SWUpdate reads an update as a cpio stream: ``sw-description`` (what to install
and how, libconfig syntax), then ``sw-description.sig`` when the build verifies
signatures (a CMS signature over ``sw-description``, which names each image's
SHA-256), then the images. Pure functions, no I/O:

    blob = pack([("sw-description", desc), ("sw-description.sig", sig), ("rootfs.img", image)])
    members = unpack(blob)              # [(name, bytes)], the trailer left out
    image = member(blob, "rootfs.img")  # one member's bytes, or None

``unpack`` refuses what is not a newc archive with ``SwuError`` naming the cause
(a bad magic, a header that is not hex, a member past the end): a release's
artifact is untrusted until its manifest and signature say otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable

from common.errors import ImageError

__all__ = ["MAGIC", "SwuError", "is_swu", "member", "pack", "unpack"]

MAGIC = b"070701"  # newc without checksums (SWUpdate also reads 070702, with them)
_MAGICS = (b"070701", b"070702")
_HEADER = 110  # magic (6) + 13 fields of 8 hex digits
TRAILER = "TRAILER!!!"
MAX_MEMBERS = 1024


class SwuError(ImageError):
    """A .swu that is not a newc cpio archive SWUpdate could read."""


def _pad(n: int) -> int:
    return (4 - n % 4) % 4


def _entry(name: str, data: bytes, ino: int) -> bytes:
    raw = name.encode() + b"\0"
    fields = (ino, 0o100644 if name != TRAILER else 0, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0)
    head = MAGIC + "".join(f"{v:08X}" for v in fields).encode() + raw
    return head + b"\0" * _pad(len(head)) + data + b"\0" * _pad(len(data))


def pack(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A newc archive of ``members`` in order, ending with the trailer (SWUpdate wants sw-description first)."""
    out = [_entry(name, data, i) for i, (name, data) in enumerate(members, 1)]
    out.append(_entry(TRAILER, b"", 0))
    return b"".join(out)


def is_swu(data: bytes) -> bool:
    """Whether ``data`` starts like a newc archive whose first member is ``sw-description``."""
    return data[:6] in _MAGICS and data[_HEADER:_HEADER + 15] == b"sw-description\0"


def unpack(data: bytes) -> list[tuple[str, bytes]]:
    """The members of a newc archive, in order (the trailer left out); ``SwuError`` if it is not one."""
    out: list[tuple[str, bytes]] = []
    pos = 0
    while len(out) <= MAX_MEMBERS:
        head = data[pos:pos + _HEADER]
        if len(head) < _HEADER or head[:6] not in _MAGICS:
            raise SwuError(f"no cpio newc header at byte {pos} (a .swu is a newc archive, sw-description first)")
        try:
            fields = [int(head[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        except ValueError as exc:
            raise SwuError(f"cpio header at byte {pos} is not hexadecimal") from exc
        size, name_size = fields[6], fields[11]
        name_at = pos + _HEADER
        data_at = name_at + name_size + _pad(_HEADER + name_size)
        if name_size < 1 or data_at + size > len(data):
            raise SwuError(f"cpio member at byte {pos} runs past the end of the archive ({len(data)} bytes)")
        name = data[name_at:name_at + name_size - 1].decode(errors="replace")
        if name == TRAILER:
            return out
        out.append((name, data[data_at:data_at + size]))
        pos = data_at + size + _pad(size)
    raise SwuError(f"more than {MAX_MEMBERS} members")


def member(data: bytes, name: str) -> bytes | None:
    """The bytes of member ``name`` of a .swu, or None (also when ``data`` is not a newc archive)."""
    try:
        return next((blob for n, blob in unpack(data) if n == name), None)
    except SwuError:
        return None
