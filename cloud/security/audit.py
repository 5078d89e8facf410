"""The audit log's record, hash-chained so that editing, removing or reordering shows.

Every mutating operator action, allowed or refused, becomes one ``AuditRecord``
(who, action, target, when, from where, result, detail). Each record carries
the SHA-256 of its predecessor (``prev_hash``) and of its own content
(``hash``, over the canonical JSON of every other field), starting from
``GENESIS``. ``verify_chain`` recomputes both and names the first record that
does not fit.

A chain cannot show that records were cut off its *end*: publish or anchor
``head_hash`` elsewhere (a log line, a signed checkpoint) to cover that.
Appending is a read of the head and an insert of its successor; the store must
serialize appends (a unique ``seq`` makes a racing second insert fail).
This module is pure: no I/O, and the caller gives the time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace

from common.errors import AuditChainError

__all__ = ["GENESIS", "RESULTS", "AuditRecord", "make_record", "verify_chain"]

GENESIS = "0" * 64
RESULTS = ("allowed", "refused")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    who: str
    action: str
    target: str
    when_ms: int
    source: str  # the client's address, e.g. "10.0.0.7:51022"
    result: str  # "allowed" or "refused"
    detail: str
    prev_hash: str
    hash: str

    def content_hash(self) -> str:
        """The SHA-256 this record's ``hash`` must equal."""
        fields = asdict(self)
        del fields["hash"]
        raw = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        return hashlib.sha256(raw).hexdigest()


def make_record(
    prev: AuditRecord | None,
    *,
    who: str,
    action: str,
    target: str,
    when_ms: int,
    source: str,
    result: str | bool,
    detail: str = "",
) -> AuditRecord:
    """The record that follows ``prev`` (None: the first); ``result`` may be a Decision's ``allowed``."""
    if isinstance(result, bool):
        result = RESULTS[0] if result else RESULTS[1]
    if result not in RESULTS:
        raise ValueError(f"audit result must be one of {RESULTS}, not {result!r}")
    draft = AuditRecord(
        seq=0 if prev is None else prev.seq + 1,
        who=who,
        action=action,
        target=target,
        when_ms=when_ms,
        source=source,
        result=result,
        detail=detail,
        prev_hash=GENESIS if prev is None else prev.hash,
        hash="",
    )
    return replace(draft, hash=draft.content_hash())


def verify_chain(records: Iterable[AuditRecord], *, prev: AuditRecord | None = None) -> str:
    """Check ``records`` (in order, following ``prev`` if given) and return the head hash.

    Raises ``AuditChainError`` naming the first record that was edited, or
    whose predecessor was removed, inserted or moved.
    """
    head, seq = (GENESIS, -1) if prev is None else (prev.hash, prev.seq)
    for rec in records:
        if rec.hash != rec.content_hash():
            raise AuditChainError(rec.seq, "its content does not match its hash (edited)")
        if rec.prev_hash != head or rec.seq != seq + 1:
            raise AuditChainError(rec.seq, f"does not follow record {seq} (a record was removed, inserted or moved)")
        head, seq = rec.hash, rec.seq
    return head

