"""The answering side's pieces, shared by the cloud and the gateway: read one chunk, check a request.

Reads are positioned (``os.pread``) on a file opened per call, so any number of transfers of the
same artifact share nothing but the page cache.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from common.protocol import MAX_FRAME, ChunkData, ChunkRequest, FirmwareOffer, OfferRequest

__all__ = ["MAX_CHUNK", "check_request", "no_offer", "read_chunk"]

MAX_CHUNK = MAX_FRAME - 4096  # a chunk and its header fit one frame
_HEX64 = re.compile(r"[0-9a-f]{64}")


def check_request(req: ChunkRequest) -> str:
    """"" if the request is well formed, else why not (for ``ChunkData.error``)."""
    if not _HEX64.fullmatch(req.artifact):
        return "artifact is not a SHA-256 in hex"
    if not 0 < req.chunk_size <= MAX_CHUNK:
        return f"chunk size {req.chunk_size} is not in 1..{MAX_CHUNK}"
    if req.index < 0:
        return f"chunk index {req.index} is negative"
    return ""


def no_offer(req: OfferRequest, why: str) -> FirmwareOffer:
    """The answer when there is nothing to offer for ``req``: ``error`` says why."""
    return FirmwareOffer(req.request_id, req.version, b"", "", "", "", "", 0, 1, [], why)


def read_chunk(path: Path, req: ChunkRequest) -> ChunkData:
    """Chunk ``req.index`` of the file at ``path``; an error answer if it lies past the end or the file is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return ChunkData(req.artifact, req.index, b"", "not-held: the artifact is not here (yet)")
    try:
        data = os.pread(fd, req.chunk_size, req.index * req.chunk_size)
    finally:
        os.close(fd)
    if not data:
        return ChunkData(req.artifact, req.index, b"", f"chunk {req.index} lies past the end of the artifact")
    return ChunkData(req.artifact, req.index, data, "")
