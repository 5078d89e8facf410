"""The delta engine: every method round-trips byte for byte; bad patches and useless deltas are refused."""

import asyncio
import importlib.util
import os
import random
import sysconfig
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from common.delta import (
    BLOCKS,
    BSDIFF4,
    ZSTD,
    Candidate,
    apply_delta,
    make_delta,
    make_delta_in_pool,
    plan_candidates,
    read_patch_header,
)
from common.delta.engine import _run_isolated
from common.errors import DeltaError, DeltaNotWorthIt

MiB = 1 << 20
STDLIB = Path(sysconfig.get_paths()["stdlib"])


def real_so() -> Path:
    """A real shared library of this interpreter: an extension module of 100 KiB - 2 MiB."""
    for name in ("_json", "_ctypes", "_ssl", "_decimal", "_sqlite3", "_asyncio", "_hashlib"):
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin) if spec and spec.origin else None
        if origin and origin.suffix == ".so" and 100_000 <= origin.stat().st_size <= 2 * MiB:
            return origin
    pytest.skip("no extension module of a suitable size in this interpreter")


def rebuilt(data: bytes, seed: int = 1) -> bytes:
    """What a rebuild of a binary looks like: code inserted and removed (shifting what follows), constants patched."""
    rng = random.Random(seed)
    buf = bytearray(data)
    for _ in range(40):
        i = rng.randrange(len(buf) - 4)
        buf[i : i + 4] = rng.randbytes(4)
    i = rng.randrange(len(buf) // 4, len(buf) // 2)
    buf[i:i] = data[: 1500]
    j = rng.randrange(len(buf) // 2, len(buf) - 400)
    del buf[j : j + 300]
    return bytes(buf)


@pytest.fixture(scope="module")
def so_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("so")
    data = real_so().read_bytes()
    (d / "old.so").write_bytes(data)
    (d / "new.so").write_bytes(rebuilt(data))
    return d / "old.so", d / "new.so"


def fs_image(files: list[bytes], size: int, *, moved: dict[int, int] | None = None) -> bytes:
    """A small filesystem-like image: files at 4 KiB boundaries, zero gaps, an erased (0xFF) tail region."""
    img = bytearray(size)
    img[size - 256 * 1024 :] = b"\xff" * (256 * 1024)
    off = 8192
    for k, data in enumerate(files):
        at = (moved or {}).get(k, off)
        img[at : at + len(data)] = data
        off += -(-len(data) // 4096) * 4096 + (3 * 4096 if k % 5 == 0 else 0)
    return bytes(img)


@pytest.fixture(scope="module")
def fs_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("fs")
    sources = sorted(p for p in STDLIB.glob("*.py") if 2000 < p.stat().st_size < 60_000)[:40]
    files = [p.read_bytes() for p in sources]
    old = fs_image(files, 3 * MiB)
    changed = list(files)
    changed[3] = changed[3].replace(b"def ", b"def  ", 3) + b"\n# patched\n"
    changed[17] = changed[17][:500] + b"import logging\n" * 20 + changed[17][500:]
    changed[30] = changed[30] + changed[2][:3000]  # grew: moved to free space below
    new = fs_image(changed, 3 * MiB, moved={30: 2 * MiB})
    (d / "old.img").write_bytes(old)
    (d / "new.img").write_bytes(new)
    return d / "old.img", d / "new.img"


def roundtrip(tmp_path, old, new, **kw):
    patch, out = tmp_path / "p.delta", tmp_path / "out.bin"
    kw.setdefault("isolate", False)
    result = make_delta(old, new, patch, **kw)
    assert patch.stat().st_size == result.patch_size
    applied = apply_delta(old, patch, out)
    assert out.read_bytes() == Path(new).read_bytes()
    assert applied.method == result.method == read_patch_header(patch).method
    assert applied.new_sha256 == result.new_sha256
    return result


def test_real_binary_pair_round_trips_and_is_small(tmp_path, so_pair):
    r = roundtrip(tmp_path, *so_pair)
    assert r.patch_size < r.new_size / 5, r
    assert r.patch_size <= min(a.patch_size for a in r.attempts if a.patch_size), r.attempts
    assert r.ratio < 0.8 and {a.label.split("/")[0] for a in r.attempts} == {BLOCKS, ZSTD, BSDIFF4}


def test_other_build_of_the_same_library_round_trips(tmp_path):
    # the distribution's build of the same extension module, if this machine has one: a real, unrelated-ish pair
    deb = sorted(Path("/usr/lib/python3.11/lib-dynload").glob("_json.*.so"))
    if not deb:
        pytest.skip("no second build of _json on this machine")
    roundtrip(tmp_path, real_so(), deb[0], worth_ratio=100.0)


@pytest.mark.parametrize(
    "methods,window,label",
    [
        ([BLOCKS], "whole", "bsdiff4-blocks/whole"),
        ([BLOCKS], "local", "bsdiff4-blocks/local"),
        ([BSDIFF4], "auto", BSDIFF4),
        ([ZSTD], "auto", f"{ZSTD}/ultra"),
    ],
)
def test_each_method_round_trips_on_fs_image(tmp_path, fs_pair, methods, window, label):
    r = roundtrip(tmp_path, *fs_pair, methods=methods, blocks_window=window)
    assert [a.label for a in r.attempts] == [label]
    assert r.patch_size < 64 * 1024, r


@pytest.mark.parametrize("method", [BLOCKS, BSDIFF4, ZSTD])
def test_corrupted_patch_raises_typed_error_and_writes_nothing(tmp_path, so_pair, method):
    old, new = so_pair
    patch = tmp_path / "p.delta"
    make_delta(old, new, patch, methods=[method], isolate=False)
    data = bytearray(patch.read_bytes())
    for where in (len(data) // 2, len(data) - 20, 100):
        bad = bytearray(data)
        bad[where] ^= 0x55
        (tmp_path / "bad.delta").write_bytes(bad)
        with pytest.raises(DeltaError, match="bad.delta"):
            apply_delta(old, tmp_path / "bad.delta", tmp_path / "out.bin")
        assert not (tmp_path / "out.bin").exists()
        assert not list(tmp_path.glob(".out.bin*"))
    (tmp_path / "short.delta").write_bytes(data[: len(data) // 3])
    with pytest.raises(DeltaError):
        apply_delta(old, tmp_path / "short.delta", tmp_path / "out.bin")


def test_header_errors(tmp_path, so_pair):
    old, new = so_pair
    (tmp_path / "x.delta").write_bytes(b"not a patch at all" * 10)
    with pytest.raises(DeltaError, match="bad magic"):
        apply_delta(old, tmp_path / "x.delta", tmp_path / "o")
    (tmp_path / "y.delta").write_bytes(b"EF")
    with pytest.raises(DeltaError, match="truncated header"):
        apply_delta(old, tmp_path / "y.delta", tmp_path / "o")
    patch = tmp_path / "p.delta"
    make_delta(old, new, patch, methods=[BLOCKS], isolate=False)
    with pytest.raises(DeltaError, match="is not its old image"):
        apply_delta(new, patch, tmp_path / "o")
    apply_delta(old, patch, tmp_path / "o", max_memory_bytes=64 * 1024)  # streams: needs no image in memory
    for method, match in ((BSDIFF4, "over the limit"), (ZSTD, "over this applier's limit")):
        make_delta(old, new, patch, methods=[method], isolate=False)
        with pytest.raises(DeltaError, match=match):
            apply_delta(old, patch, tmp_path / "o", max_memory_bytes=64 * 1024)


def test_unrelated_random_inputs_are_not_worth_a_delta(tmp_path):
    (tmp_path / "a").write_bytes(os.urandom(300_000))
    (tmp_path / "b").write_bytes(os.urandom(300_000))
    with pytest.raises(DeltaNotWorthIt) as e:
        make_delta(tmp_path / "a", tmp_path / "b", tmp_path / "p.delta", isolate=False)
    assert e.value.result.patch_size > 0.8 * e.value.result.full_size
    assert not (tmp_path / "p.delta").exists() and not list(tmp_path.glob(".p.delta*"))


def test_empty_and_identical_images(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "some").write_bytes(b"firmware " * 50_000)
    roundtrip(tmp_path, tmp_path / "empty", tmp_path / "some", worth_ratio=100.0)
    roundtrip(tmp_path, tmp_path / "some", tmp_path / "empty", worth_ratio=100.0)
    r = roundtrip(tmp_path, tmp_path / "some", tmp_path / "some", worth_ratio=100.0)
    assert r.patch_size < 200


def test_plan_is_pure_and_respects_budgets():
    big = plan_candidates(256 * MiB, 256 * MiB, time_budget_s=110, memory_budget_bytes=2 << 30)
    assert [(c.label, c.skip is None) for c in big] == [
        ("bsdiff4-blocks/local", True),
        ("zstd-patch-from/19", False),
        ("bsdiff4", False),
    ]
    assert all(c.est_bytes < 2 << 30 for c in big if c.skip is None)
    small = plan_candidates(MiB, MiB, time_budget_s=110, memory_budget_bytes=2 << 30)
    assert [c.label for c in small if c.skip is None] == ["bsdiff4-blocks/whole", "zstd-patch-from/ultra", "bsdiff4"]
    # the strongest zstd settings that fit a quarter of the time budget, level 19 when none of the ultra ones do
    assert [c.label for c in plan_candidates(8 * MiB, 8 * MiB, time_budget_s=60, memory_budget_bytes=2 << 30,
                                             methods=[ZSTD])] == ["zstd-patch-from/ultra-stream"]
    assert [c.label for c in plan_candidates(8 * MiB, 8 * MiB, time_budget_s=32, memory_budget_bytes=2 << 30,
                                             methods=[ZSTD])] == ["zstd-patch-from/19"]
    tight = plan_candidates(64 * MiB, 64 * MiB, time_budget_s=110, memory_budget_bytes=1 << 30)
    assert tight[0].label == "bsdiff4-blocks/local" and tight[0].skip is None  # whole: 19 x 64 MiB > 1 GiB
    with pytest.raises(ValueError, match="unknown delta method"):
        plan_candidates(1, 1, time_budget_s=1, memory_budget_bytes=1, methods=["xdelta"])


def test_isolated_candidates_measure_memory_and_time_out(tmp_path, so_pair):
    old, new = so_pair
    r = roundtrip(tmp_path, old, new, methods=[BLOCKS], isolate=True)
    assert r.peak_rss_bytes and r.peak_rss_bytes > MiB
    cand = Candidate(BLOCKS, "bsdiff4-blocks/whole", {"whole_limit": 1 << 40}, 0, 0)
    a = _run_isolated(cand, str(old), str(new), str(tmp_path / "t.delta"), b"", timeout=0.01)
    assert a.patch_size is None and a.note.startswith("timeout")
    with pytest.raises(DeltaError, match="no candidate finished"):
        make_delta(old, new, tmp_path / "q.delta", time_budget_s=1e-6)


def test_isolated_candidates_take_paths_relative_to_the_callers_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("old").write_bytes(b"firmware " * 20_000)
    Path("new").write_bytes(b"firmware " * 10_000 + b"patched! " + b"firmware " * 9_999)
    r = make_delta("old", "new", "p.delta", methods=[ZSTD], isolate=True, worth_ratio=100.0)
    apply_delta("old", "p.delta", "out")
    assert Path("out").read_bytes() == Path("new").read_bytes() and r.method == ZSTD


def test_make_delta_in_a_process_pool(tmp_path, so_pair):
    old, new = so_pair

    async def run():
        with ProcessPoolExecutor(max_workers=1) as pool:
            return await make_delta_in_pool(pool, old, new, tmp_path / "p.delta", methods=[BLOCKS], isolate=False)

    r = asyncio.run(run())
    apply_delta(old, tmp_path / "p.delta", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == new.read_bytes() and r.method == BLOCKS


def test_not_worth_it_crosses_a_process_pool_with_its_numbers(tmp_path):
    (tmp_path / "a").write_bytes(os.urandom(50_000))
    (tmp_path / "b").write_bytes(os.urandom(50_000))

    async def run():
        with ProcessPoolExecutor(max_workers=1) as pool:
            return await make_delta_in_pool(pool, tmp_path / "a", tmp_path / "b", tmp_path / "p", isolate=True)

    with pytest.raises(DeltaNotWorthIt) as e:
        asyncio.run(run())
    assert e.value.result.full_size > 0 and e.value.result.attempts  # candidates ran as children of the worker


# -- patch forms: a compact container for our format, the others bare ----------------------------


def test_each_patch_form_and_the_container_overhead(tmp_path, so_pair):
    old, new = so_pair
    r = roundtrip(tmp_path, old, new, methods=[BLOCKS])
    head = (tmp_path / "p.delta").read_bytes()[:8]
    assert head[:4] == b"EFD\x02" and head[4] == 2  # format 2, method code 2
    assert r.container_bytes == 69 + len(_varints(r.old_size, r.new_size)) == read_patch_header(tmp_path / "p.delta").size
    r = roundtrip(tmp_path, old, new, methods=[ZSTD])
    assert (tmp_path / "p.delta").read_bytes()[:4] == b"\x28\xb5\x2f\xfd" and r.container_bytes == 0  # a bare frame
    assert read_patch_header(tmp_path / "p.delta").bare
    r = roundtrip(tmp_path, old, new, methods=[BSDIFF4])
    assert (tmp_path / "p.delta").read_bytes()[:8] == b"BSDIFF40" and r.container_bytes == 0


def _varints(*values: int) -> bytes:
    from common.delta._format import put_varints

    out = bytearray()
    put_varints(out, *values)
    return bytes(out)


def test_a_bare_zstd_patch_is_what_the_zstd_tool_applies(tmp_path, so_pair):
    import shutil
    import subprocess

    if shutil.which("zstd") is None:
        pytest.skip("the zstd command is not installed (apt-get install zstd)")
    old, new = so_pair
    make_delta(old, new, tmp_path / "p.zst", methods=[ZSTD], isolate=False)
    subprocess.run(["zstd", "-q", "-d", "--long=31", f"--patch-from={old}", str(tmp_path / "p.zst"), "-o",
                    str(tmp_path / "out")], check=True)
    assert (tmp_path / "out").read_bytes() == new.read_bytes()


def test_format_1_patches_still_apply(tmp_path, so_pair):
    """Patches made before format 2 (in site caches, in artifacts) apply unchanged."""
    import struct

    from common.delta._format import PatchHeader, VarintReader

    old, new = so_pair
    for method in (BLOCKS, ZSTD, BSDIFF4):
        patch = tmp_path / f"{method}.delta"
        r = make_delta(old, new, patch, methods=[method], isolate=False, worth_ratio=100.0)
        h = PatchHeader(method, r.old_size, r.new_size, r.old_sha256, r.new_sha256)
        v1 = struct.pack(">8sBB2xQQ32s32s", b"EFDELTA\x00", 1, {BLOCKS: 2, ZSTD: 3, BSDIFF4: 1}[method],
                         h.old_size, h.new_size, bytes.fromhex(h.old_sha256), bytes.fromhex(h.new_sha256))
        data = patch.read_bytes()
        if method == BLOCKS:  # format 1's section table: u32 block size, u8 count, 4 x (u64, u64, u8)
            payload = data[len(h.pack()):]
            reader = VarintReader(payload, "t")
            block, count = reader.read(), reader.read()
            rows = [(reader.read(), reader.read(), reader.read()) for _ in range(count)]
            v1 += struct.pack(">IB", block, count) + b"".join(struct.pack(">QQB", *row) for row in rows)
            v1 += payload[reader.pos:]
        elif method == ZSTD:  # format 1: a window-log byte, then the frame
            v1 += bytes([max(r.old_size + r.new_size - 1, 1).bit_length()]) + data
        else:
            v1 += data
        (tmp_path / "v1.delta").write_bytes(v1)
        applied = apply_delta(old, tmp_path / "v1.delta", tmp_path / "out")
        assert (tmp_path / "out").read_bytes() == new.read_bytes() and applied.method == method
        assert read_patch_header(tmp_path / "v1.delta").version == 1
