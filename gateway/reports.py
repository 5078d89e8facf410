"""What the gateway's parts tell the cloud through the outbox: reports (sequence 0) and gap reports.

A report is a ``ForwardRecord`` with sequence 0 in the critical stream: the cloud
knows it by its content, so a resend stores nothing twice. Every part of the
gateway core that has something to report (a command's outcome, a rollout state,
an inventory, a security flag, a site alert) makes it with ``report``; the
outbox's drop hook makes ``gap`` reports with ``gap_reports``.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import groupby

from common.effects import Append, Effect
from common.errors import ProtocolError
from common.protocol import ForwardRecord, decode_record, encode_record

__all__ = ["COMMANDS", "OUTBOX", "gap_reports", "report", "report_records"]

OUTBOX = "outbox"  # the durable queue of records for the cloud (one stream per class)
COMMANDS = "commands"  # the durable queue of commands held for devices


def report(device_id: str, kind: str, values: dict[str, float | str], now: float) -> Append:
    """A report about ``device_id`` for the cloud, via the critical outbox."""
    rec = ForwardRecord(device_id, "critical", 0, int(now * 1000), kind, values)
    return Append(OUTBOX, "critical", [encode_record(rec)], ("report", kind))


def report_records(records: list[ForwardRecord], kind: str) -> list[Effect]:
    """Reports already made as records (site alerts), one append each."""
    return [Append(OUTBOX, "critical", [encode_record(r)], ("report", kind)) for r in records]


def gap_reports(reporter: str, clock: Callable[[], int]) -> Callable[[str, str, list[tuple[int, bytes]]], list[tuple[str, bytes]]]:
    """The outbox's drop hook: a ``gap`` report per device, stream and contiguous range dropped.

    Reports carry sequence 0: the cloud knows them by their content, so a resend stores nothing twice.
    """

    def on_drop(stream: str, reason: str, dropped: list[tuple[int, bytes]]) -> list[tuple[str, bytes]]:
        records = []
        for _, raw in dropped:
            try:
                rec = decode_record(raw)
            except ProtocolError:
                continue  # an entry that does not decode was never going to be delivered either
            if rec.seq > 0:
                records.append(rec)
        out = []
        records.sort(key=lambda r: (r.device_id, r.stream, r.seq))
        for (device, rstream), group in groupby(records, key=lambda r: (r.device_id, r.stream)):
            # consecutive sequences share seq - position: one run per contiguous range
            for _, run in groupby(enumerate(sorted({r.seq for r in group})), key=lambda t: t[1] - t[0]):
                seqs = [s for _, s in run]
                values = {"stream": rstream, "reason": reason, "first": seqs[0], "last": seqs[-1], "count": len(seqs), "reporter": reporter}
                out.append(("critical", encode_record(ForwardRecord(device, "critical", 0, clock(), "gap", values))))
        return out

    return on_drop
