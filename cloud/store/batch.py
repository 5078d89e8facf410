"""A forwarded batch sorted into what the store writes, with no I/O (plan, then execute).

Each ``ForwardRecord`` of a batch is one of:

    telemetry        seq > 0: one row keyed (device_id, stream, seq); the first of a repeat wins
    gap report       kind "gap": values ``stream``, ``reason``, ``first``, ``last``, ``count``,
                     ``reporter``. A device's own gap report travels with seq > 0 in its
                     critical stream and is telemetry AND a gap; a gateway's has seq 0.
    gateway status   kind "gateway.status", seq 0: values is the sending gateway's status map
    command report   kind "command", seq 0: values ``seq``, ``status``, ``detail``
    node inventory   kind "inventory", seq 0: a gateway's own inventory (a device's travels as telemetry)
    site alert       kind "alert", seq 0: an alert a gateway raised (or resolved) for its own devices
                     while its uplink was down (``gateway.site_alerts``): values ``event``, ``id``,
                     ``rule``, ``type``, ``subject``, ``severity``, ``opened_ms``, ``at_ms``, ``gateway``

A record that is none of these, or whose report values are malformed, is refused
with a message naming it (``BatchPlan.rejected``) and the rest of the batch is
still written: one bad record must never hold back a gateway's whole stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloud.store.schema import COMMAND_STATUSES
from common.protocol.messages import STREAMS, ForwardRecord

__all__ = [
    "ALERT_KIND",
    "COMMAND_KIND",
    "FINAL_STATUSES",
    "GAP_KIND",
    "INVENTORY_KIND",
    "STATUS_KIND",
    "BatchPlan",
    "plan_batch",
    "statuses_before",
    "subtract_ranges",
]

GAP_KIND = "gap"
STATUS_KIND = "gateway.status"
COMMAND_KIND = "command"
ROLLOUT_KIND = "rollout"  # a gateway's report of a device's state in a rollout it drives (gateway.site_rollouts)
ALERT_KIND = "alert"
INVENTORY_KIND = "inventory"
DDI_REFUSED_KIND = "ddi.refused"  # a gateway refused DDI requests (bad or revoked token): for the audit log

FINAL_STATUSES = ("done", "failed", "expired")
# a command only moves forward: a late "held" never undoes "delivered", nothing undoes a final state
_RANK = {"queued": 0, "held": 1, "delivered": 2, "done": 3, "failed": 3, "expired": 3}


def statuses_before(status: str) -> tuple[str, ...]:
    """The statuses a command may move to ``status`` from (those ranked strictly lower)."""
    if status not in _RANK:
        raise ValueError(f"unknown command status {status!r}: expected one of {', '.join(COMMAND_STATUSES)}")
    return tuple(s for s in COMMAND_STATUSES if _RANK[s] < _RANK[status])


@dataclass(slots=True)
class BatchPlan:
    """What one batch writes; keys of ``telemetry`` and ``gaps`` are their unique keys."""

    # (device_id, stream, seq) -> (device_id, stream, seq, ts_ms, kind, values, received_ms): ``cloud.store.bulk.Row``
    telemetry: dict[tuple[str, str, int], tuple[str, str, int, int, str, Any, int]] = field(default_factory=dict)
    telemetry_records: int = 0  # records bound for telemetry, repeats included (stored + duplicates)
    last_seq: dict[str, int] = field(default_factory=dict)  # per device, over every stream
    inventory_keys: list[tuple[str, str, int]] = field(default_factory=list)  # telemetry rows that are device inventory
    gaps: dict[tuple[str, str, int, int, str, str], dict[str, Any]] = field(default_factory=dict)
    status: tuple[int, dict[str, Any]] | None = None  # the newest (ts_ms, status map) of the batch
    commands: list[tuple[str, int, str, str]] = field(default_factory=list)  # device, seq, status, detail
    site_alerts: list[dict[str, Any]] = field(default_factory=list)  # alert rows raised at a site
    inventories: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # node -> newest (ts, attrs)
    reports: int = 0  # seq-0 records (never telemetry), applied or refused
    rejected: list[str] = field(default_factory=list)


def plan_batch(records: Sequence[ForwardRecord], now_ms: int) -> BatchPlan:
    """Sort ``records`` into rows and reports; validate every report's values."""
    plan = BatchPlan()
    telemetry, last_seq, inventory_keys = plan.telemetry, plan.last_seq, plan.inventory_keys
    for r in records:
        seq, kind = r.seq, r.kind
        if seq > 0:  # telemetry (nearly every record): as few steps as it takes, it runs for each one
            device, stream = r.device_id, r.stream
            if stream not in STREAMS:
                plan.rejected.append(_refusal(r, f"stream is not one of {', '.join(STREAMS)}"))
                continue
            plan.telemetry_records += 1
            key = (device, stream, seq)
            if key not in telemetry:
                telemetry[key] = (device, stream, seq, r.ts_ms, kind, r.values, now_ms)
                if kind == INVENTORY_KIND:
                    inventory_keys.append(key)
            if seq > last_seq.get(device, 0):
                last_seq[device] = seq
            if kind != GAP_KIND:
                continue
        elif seq < 0:
            plan.rejected.append(_refusal(r, "a sequence is never negative"))
            continue
        else:
            plan.reports += 1
        try:
            if kind == GAP_KIND:
                gap = _gap_row(r, now_ms)
                plan.gaps.setdefault(tuple(gap[k] for k in _GAP_KEY), gap)  # type: ignore[arg-type]
            elif kind == STATUS_KIND:
                if plan.status is None or r.ts_ms > plan.status[0]:
                    plan.status = (r.ts_ms, dict(r.values))
            elif kind == COMMAND_KIND:
                plan.commands.append(_command_report(r))
            elif kind == ROLLOUT_KIND:
                pass  # a site's rollout report: the rollout service hears it (cloud.rollouts.service), nothing to store
            elif kind == ALERT_KIND:
                plan.site_alerts.append(_site_alert_row(r))
            elif kind == DDI_REFUSED_KIND:
                pass  # nothing stored: the cloud's driver appends it to the audit log
            elif kind == INVENTORY_KIND:
                if r.device_id not in plan.inventories or r.ts_ms >= plan.inventories[r.device_id][0]:
                    plan.inventories[r.device_id] = (r.ts_ms, dict(r.values))
            else:
                raise ValueError(
                    f"seq 0 carries only reports ({GAP_KIND}, {STATUS_KIND}, {COMMAND_KIND}, {ROLLOUT_KIND}, {ALERT_KIND}, "
                    f"{INVENTORY_KIND}, {DDI_REFUSED_KIND})"
                )
        except ValueError as exc:
            plan.rejected.append(_refusal(r, str(exc)))
    return plan


_GAP_KEY = ("device_id", "stream", "first_seq", "last_seq", "reason", "reporter")  # the gaps table's unique key


def _gap_row(r: ForwardRecord, now_ms: int) -> dict[str, Any]:
    v = r.values
    stream = _text(v, "stream")
    if stream not in STREAMS:
        raise ValueError(f"gap stream {stream!r} is not one of {', '.join(STREAMS)}")
    first, last = _count(v, "first", 1), _count(v, "last", 1)
    if first > last:
        raise ValueError(f"gap range {first}..{last} is empty")
    count = _count(v, "count", 0)
    return {
        "reporter": _text(v, "reporter"),
        "device_id": r.device_id,
        "stream": stream,
        "first_seq": first,
        "last_seq": last,
        "reason": _text(v, "reason"),
        "count": count,
        "ts_ms": r.ts_ms,
        "received_ms": now_ms,
    }


def _command_report(r: ForwardRecord) -> tuple[str, int, str, str]:
    status = _text(r.values, "status")
    if status not in COMMAND_STATUSES:
        raise ValueError(f"command status {status!r} is not one of {', '.join(COMMAND_STATUSES)}")
    detail = r.values.get("detail", "")
    if not isinstance(detail, str):
        raise ValueError(f"command detail must be a string, got {type(detail).__name__}")
    return (r.device_id, _count(r.values, "seq", 1), status, detail)


def _site_alert_row(r: ForwardRecord) -> dict[str, Any]:
    """An alerts-table row from a gateway's alert report (``cloud.store.alerts.ALERT_COLUMNS``)."""
    v = r.values
    event = _text(v, "event")
    if event not in ("fired", "resolved"):
        raise ValueError(f"alert event {event!r} is not fired or resolved")
    at_ms, opened_ms = _count(v, "at_ms", 0), _count(v, "opened_ms", 0)
    return {
        "id": _text(v, "id"), "rule": _text(v, "rule"), "type": _text(v, "type"), "subject": _text(v, "subject"),
        "severity": _text(v, "severity"), "state": "open" if event == "fired" else "resolved",
        "opened_ms": opened_ms, "resolved_ms": at_ms if event == "resolved" else None,
        "last_event": event, "last_event_ms": at_ms,
        "detail": {"raised_at": "site", "gateway": _text(v, "gateway")},
    }


def _text(values: dict[str, Any], key: str) -> str:
    value = values.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"values[{key!r}] must be a non-empty string, got {value!r}")
    return value


def _count(values: dict[str, Any], key: str, least: int) -> int:
    """An integer value >= ``least``; a float that is a whole number counts (the wire allows float)."""
    value = values.get(key)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int or value < least:
        raise ValueError(f"values[{key!r}] must be an integer >= {least}, got {value!r}")
    return value


def _refusal(r: ForwardRecord, why: str) -> str:
    return f"record ({r.device_id!r}, {r.stream!r}, seq {r.seq}) of kind {r.kind!r} refused: {why}"


def subtract_ranges(holes: Iterable[tuple[int, int]], covered: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``holes`` (sorted, disjoint, inclusive) that no range of ``covered`` (any order) covers."""
    merged: list[list[int]] = []
    for first, last in sorted(covered):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    out: list[tuple[int, int]] = []
    i = 0
    for first, last in holes:
        while i < len(merged) and merged[i][1] < first:
            i += 1  # holes are sorted: a cover ending before this hole ends before every later one
        j, start = i, first
        while j < len(merged) and merged[j][0] <= last and start <= last:
            if merged[j][0] > start:
                out.append((start, merged[j][0] - 1))
            start = max(start, merged[j][1] + 1)
            j += 1
        if start <= last:
            out.append((start, last))
    return out
