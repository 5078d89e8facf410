"""Binary deltas between firmware images: the engine behind ``edgefleet delta`` and release publishing.

    result = make_delta(old, new, patch, time_budget_s=110, memory_budget_bytes=2 << 30)
    apply_delta(old, patch, new)            # streams; checks the old and the new image's SHA-256

Methods: ``bsdiff4-blocks`` (bsdiff4 over changed, non-fill blocks: images of
any size), ``bsdiff4`` (plain, small images) and ``zstd-patch-from``. The
smallest wins; a delta not clearly smaller than the compressed full image is
refused with ``DeltaNotWorthIt``. Errors: ``common.errors.DeltaError``.
"""

from common.delta._format import BLOCKS, BSDIFF4, ZSTD, PatchHeader
from common.delta.apply import ApplyResult, apply_delta, read_patch_header
from common.delta.engine import (
    DEFAULT_METHODS,
    Attempt,
    Candidate,
    DeltaResult,
    make_delta,
    make_delta_in_pool,
    plan_candidates,
)

__all__ = [
    "BLOCKS",
    "BSDIFF4",
    "DEFAULT_METHODS",
    "ZSTD",
    "ApplyResult",
    "Attempt",
    "Candidate",
    "DeltaResult",
    "PatchHeader",
    "apply_delta",
    "make_delta",
    "make_delta_in_pool",
    "plan_candidates",
    "read_patch_header",
]
