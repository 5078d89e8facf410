"""Simulated firmware images: a header naming the version and what its self-test will say, then filler.

Used by the agent's simulated board, the demo and the power-cut harness, so a
release that fails its health check ("fail"), hangs or crashes can be built on
purpose. A real board reads its version from the running system instead.
"""

from __future__ import annotations

import json
import random

__all__ = ["MAGIC", "info", "make"]

MAGIC = b"EFIMG1 "


def make(version: str, health: str, size: int, rng: random.Random | None = None) -> bytes:
    """An image of ``size`` bytes whose header says ``version`` and self-test ``health`` ("ok", "fail", ...)."""
    head = MAGIC + json.dumps({"version": version, "health": health}).encode() + b"\n"
    return head + (rng or random.Random(version)).randbytes(max(0, size - len(head)))


def info(data: bytes) -> dict[str, str] | None:
    """The header of an image, or None if the bytes are not one."""
    if not data.startswith(MAGIC) or b"\n" not in data[:256]:
        return None
    try:
        return json.loads(data[len(MAGIC) : data.index(b"\n")])
    except ValueError:
        return None
