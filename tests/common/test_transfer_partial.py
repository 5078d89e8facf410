"""A download's file: durable chunk by chunk, resumable after a kill, checked whole at the end."""

from __future__ import annotations

import hashlib
import os
import random

import pytest

from common.errors import TransferError
from common.transfer.download import Plan
from common.transfer.partial import PartialFile

CHUNK = 4096


def artifact(n: int = 10) -> tuple[bytes, Plan]:
    data = random.Random(n).randbytes(n * CHUNK - 100)
    chunks = tuple(hashlib.sha256(data[i:i + CHUNK]).hexdigest() for i in range(0, len(data), CHUNK))
    return data, Plan(hashlib.sha256(data).hexdigest(), len(data), CHUNK, chunks)


def piece(data: bytes, i: int) -> bytes:
    return data[i * CHUNK:(i + 1) * CHUNK]


def test_chunks_written_in_any_order_assemble_the_artifact(tmp_path):
    data, plan = artifact()
    part = PartialFile(tmp_path / "a.part", plan)
    for i in random.Random(3).sample(range(10), 10):
        part.write(i, piece(data, i))
    out = part.finish(tmp_path / "a")
    assert out.read_bytes() == data
    assert not (tmp_path / "a.part").exists() and not (tmp_path / "a.part.progress").exists()


def test_reopening_resumes_with_exactly_the_chunks_made_durable(tmp_path):
    data, plan = artifact()
    part = PartialFile(tmp_path / "a.part", plan)
    for i in (0, 3, 4):
        part.write(i, piece(data, i))
    part.close()  # the process dies here
    again = PartialFile(tmp_path / "a.part", plan)
    assert again.have == {0, 3, 4}


def test_a_torn_progress_entry_and_a_chunk_that_rotted_on_disk_are_not_trusted(tmp_path):
    data, plan = artifact()
    part = PartialFile(tmp_path / "a.part", plan)
    for i in (1, 2):
        part.write(i, piece(data, i))
    part.close()
    with open(tmp_path / "a.part.progress", "ab") as f:
        f.write(b"\x05\x00")  # died mid-append
    with open(tmp_path / "a.part", "r+b") as f:
        f.seek(2 * CHUNK + 7)
        f.write(b"X")  # the disk lied about chunk 2
    again = PartialFile(tmp_path / "a.part", plan)
    assert again.have == {1}
    assert os.path.getsize(tmp_path / "a.part.progress") == 4


def test_finishing_refuses_an_incomplete_or_wrong_file(tmp_path):
    data, plan = artifact(3)
    part = PartialFile(tmp_path / "a.part", plan)
    part.write(0, piece(data, 0))
    with pytest.raises(TransferError, match="2 chunks still missing"):
        part.finish(tmp_path / "a")
    wrong = Plan("00" * 32, plan.size, plan.chunk_size, plan.chunks)
    p2 = PartialFile(tmp_path / "b.part", wrong)
    for i in range(3):
        p2.write(i, piece(data, i))
    with pytest.raises(TransferError, match="assembled file's SHA-256"):
        p2.finish(tmp_path / "b")
