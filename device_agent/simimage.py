"""Simulated firmware images: a header naming the version and what its self-test will say, then filler.

Used by the agent's simulated board, the demo and the power-cut harness, so a
release that fails its health check ("fail"), hangs or crashes can be built on
purpose. A real board reads its version from the running system instead.

The simulated board also runs a ``.swu`` (SWUpdate's cpio archive) whose image
member is a simulated image: ``info`` reads the header of that member. So one
release, a .swu, rolls out to agents on simulated boards and to SWUpdate
devices polling their gateway over DDI alike (``edgefleet demo --ddi-devices``);
its update module is ``swupdate`` and simulated boards list it (``UPDATE_MODULES``).
"""

from __future__ import annotations

import json
import random

__all__ = ["MAGIC", "UPDATE_MODULES", "info", "make"]

MAGIC = b"EFIMG1 "
UPDATE_MODULES = ("rootfs-image", "swupdate")  # what a simulated board installs (the inventory's update_modules)


def make(version: str, health: str, size: int, rng: random.Random | None = None) -> bytes:
    """An image of ``size`` bytes whose header says ``version`` and self-test ``health`` ("ok", "fail", ...)."""
    head = MAGIC + json.dumps({"version": version, "health": health}).encode() + b"\n"
    return head + (rng or random.Random(version)).randbytes(max(0, size - len(head)))


def info(data: bytes) -> dict[str, str] | None:
    """The header of an image (or of the simulated image inside a .swu), or None if the bytes are not one."""
    if data[:6] in (b"070701", b"070702"):
        from common.swu import SwuError, unpack

        try:
            inner = next((blob for _, blob in unpack(data) if blob.startswith(MAGIC)), None)
        except SwuError:
            return None
        return None if inner is None else info(inner)
    if not data.startswith(MAGIC) or b"\n" not in data[:256]:
        return None
    try:
        return json.loads(data[len(MAGIC) : data.index(b"\n")])
    except ValueError:
        return None
