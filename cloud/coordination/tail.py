"""The leader's tail of stored telemetry, sans-IO: what every coordinator stored, each record once.

With N coordinators a batch is committed by whichever coordinator holds its gateway's session,
but the leader's work (rollout engines, alert evaluation) must hear every record. The leader
reads ``telemetry`` by arrival (``received_ms``) every tail interval. Commits land out of order
(a transaction that began earlier may commit later, with an earlier ``received_ms``), so each
read looks back before the newest arrival seen and drops the keys it already handed out: by
``short_ms`` usually, by ``slack_ms`` every ``sweep_every``-th read (re-reading the whole slack
each time would read every row slack/interval times over); a full page is followed from its last
arrival without looking back.

    tail = TailCursor(start_ms=now_ms)
    rows, newest = read(since=tail.since, limit=tail.page)   # the driver's query (without the leader's own rows)
    fresh = tail.take(rows, newest)                          # each (device, stream, seq) once

A record committed more than ``slack_ms`` after its ``received_ms`` was stamped would be missed;
the store stamps ``received_ms`` inside the ingest transaction, which commits in well under that.
So once a read that began at ``read_at_ms`` returned less than a page, every row stamped at or before
``read_at_ms - slack_ms`` has been handed out: ``handed_out_before(t)`` says so for ``t`` (the leader feeds
a batch of its own, stored after ``t``, only then: a device's earlier records come first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from common.protocol.messages import ForwardRecord

__all__ = ["TailCursor", "batches"]


def batches(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[ForwardRecord]]:
    """Tailed rows as the records of each (site, gateway), in arrival order: what a committed batch feeds."""
    out: dict[tuple[str, str], list[ForwardRecord]] = {}
    for r in rows:
        out.setdefault((str(r["site_id"]), str(r["gateway_id"])), []).append(
            ForwardRecord(r["device_id"], r["stream"], int(r["seq"]), int(r["ts_ms"]), r["kind"], dict(r["values"] or {})))
    return out


class TailCursor:
    def __init__(self, start_ms: int, *, slack_ms: int = 3000, page: int = 20_000, short_ms: int = 250,
                 sweep_every: int = 8) -> None:
        self.slack_ms, self.short_ms, self.sweep_every = slack_ms, short_ms, sweep_every
        self.reads = 0
        self.page = page
        self.newest = start_ms  # the newest received_ms handed out
        self.covered = start_ms  # the start (wall clock ms) of the newest read that returned less than a page
        self.since = start_ms - slack_ms
        self._seen: dict[tuple[str, str, int], int] = {}  # key -> received_ms, kept for the slack window
        self.taken = 0

    def take(self, rows: Sequence[Mapping[str, Any]], newest_ms: int | None = None,
             read_at_ms: int | None = None) -> list[Mapping[str, Any]]:
        """The rows of one read not handed out before, in arrival order; moves the cursor. ``newest_ms``: the newest
        arrival the read saw among rows it left out (the leader's own, which it handed out itself); ``read_at_ms``:
        the wall clock when the read began (before its snapshot)."""
        fresh = []
        for r in rows:
            key = (r["device_id"], r["stream"], int(r["seq"]))
            if key in self._seen:
                continue
            self._seen[key] = int(r["received_ms"])
            fresh.append(r)
        if rows:
            self.newest = max(self.newest, max(int(r["received_ms"]) for r in rows))
        if newest_ms is not None:
            self.newest = max(self.newest, newest_ms)
        full = len(rows) >= self.page
        if not full and read_at_ms is not None:
            self.covered = max(self.covered, read_at_ms)
        last = int(rows[-1]["received_ms"]) if rows else self.newest
        # a full page: go on from its last arrival (rows sharing it are deduplicated); else look back the slack
        self.reads += 1
        back = self.slack_ms if self.reads % self.sweep_every == 0 else self.short_ms
        self.since = max(last, self.since + 1) if full else self.newest - back
        horizon = self.newest - 2 * self.slack_ms
        if len(self._seen) > self.page:
            self._seen = {k: v for k, v in self._seen.items() if v >= horizon}
        self.taken += len(fresh)
        return fresh

    def handed_out_before(self, t_ms: int) -> bool:
        """Has every row stamped at or before ``t_ms`` been handed out (or left out as the leader's own)?"""
        return max(self.newest, self.covered) - self.slack_ms > t_ms
