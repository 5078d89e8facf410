"""The audit record and its hash chain: every kind of tampering is named."""

from __future__ import annotations

import dataclasses

import pytest

import cloud.security.audit
from cloud.security.audit import GENESIS, AuditRecord, make_record, verify_chain
from cloud.security.rbac import Principal, Role, authorize
from common.errors import AuditChainError

T0 = 1_900_000_000_000


def chain(n: int = 5) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    for i in range(n):
        records.append(
            make_record(
                records[-1] if records else None,
                who=f"user-{i % 2}",
                action="devices.revoke" if i % 2 else "enroll_tokens.create",
                target=f"dev-{i}",
                when_ms=T0 + i,
                source=f"10.0.0.{i}:5100{i}",
                result=i % 3 != 0,
                detail=f"reason {i} ü",
            )
        )
    return records


def test_all() -> None:
    assert sorted(cloud.security.audit.__all__) == ["AuditRecord", "GENESIS", "RESULTS", "make_record", "verify_chain"]


def test_records_link_from_genesis() -> None:
    records = chain(3)
    assert [r.seq for r in records] == [0, 1, 2]
    assert records[0].prev_hash == GENESIS
    assert records[1].prev_hash == records[0].hash and records[2].prev_hash == records[1].hash
    assert [r.result for r in records] == ["refused", "allowed", "allowed"]
    assert all(len(r.hash) == 64 and r.hash == r.content_hash() for r in records)
    assert verify_chain(records) == records[-1].hash
    assert verify_chain([]) == GENESIS


def test_the_hash_is_deterministic() -> None:
    assert chain(4) == chain(4)


def test_a_decision_is_recorded_as_is() -> None:
    decision = authorize(Principal("olga", Role.VIEWER, frozenset({"plant-7"})), "devices.revoke", site="plant-7")
    rec = make_record(
        None,
        who="olga",
        action="devices.revoke",
        target="dev-3",
        when_ms=T0,
        source="10.1.1.1:4000",
        result=decision.allowed,
        detail=decision.reason,
    )
    assert rec.result == "refused" and rec.detail == "olga (viewer): devices.revoke needs operator"
    with pytest.raises(ValueError, match="audit result"):
        make_record(None, who="x", action="a", target="t", when_ms=T0, source="s", result="maybe")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("who", "mallory"),
        ("action", "devices.list"),
        ("target", "dev-99"),
        ("when_ms", T0 - 1),
        ("source", "127.0.0.1:1"),
        ("result", "refused"),  # record 2 was allowed
        ("detail", ""),
        ("prev_hash", GENESIS),
        ("seq", 7),
    ],
)
def test_an_edited_field_is_detected_at_that_record(field: str, value: object) -> None:
    records = chain(5)
    records[2] = dataclasses.replace(records[2], **{field: value})
    with pytest.raises(AuditChainError, match=r"audit record \d+: its content does not match its hash \(edited\)"):
        verify_chain(records)


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link() -> None:
    records = chain(5)
    edited = dataclasses.replace(records[2], result="allowed", detail="nothing to see")
    records[2] = dataclasses.replace(edited, hash=edited.content_hash())
    with pytest.raises(AuditChainError, match=r"audit record 3: does not follow record 2") as err:
        verify_chain(records)
    assert err.value.seq == 3


def test_removal_insertion_and_reordering_are_detected() -> None:
    records = chain(6)
    with pytest.raises(AuditChainError, match="audit record 3: does not follow record 1"):
        verify_chain(records[:2] + records[3:])
    with pytest.raises(AuditChainError, match="does not follow"):
        verify_chain([records[0], records[2], records[1], *records[3:]])
    stranger = make_record(records[1], who="x", action="a", target="t", when_ms=T0, source="s", result=True)
    with pytest.raises(AuditChainError, match="audit record 2: does not follow"):
        verify_chain([*records[:3], stranger, *records[3:]])
    with pytest.raises(AuditChainError, match="audit record 1: does not follow record -1"):
        verify_chain(records[1:])  # the first records cut off: the rest does not start at genesis


def test_a_cut_off_tail_shows_only_against_an_anchored_head() -> None:
    records = chain(5)
    anchored = verify_chain(records)
    assert verify_chain(records[:-1]) != anchored


def test_a_window_verifies_after_its_predecessor() -> None:
    records = chain(8)
    assert verify_chain(records[4:], prev=records[3]) == records[-1].hash
    with pytest.raises(AuditChainError):
        verify_chain(records[5:], prev=records[3])
