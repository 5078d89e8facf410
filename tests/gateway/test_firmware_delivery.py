"""Firmware delivery on real parts: cloud and gateway processes, devices on real CURVE sockets.

One release crosses the site's uplink once however many devices ask; a device download cut ten
times completes re-sending at most one chunk per cut; a tampered chunk is caught, reported and
fetched again; a delta crosses the WAN when the gateway holds the old image.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random

import pytest
import zmq.asyncio

from simulations.delivery import SimDevice, make_key, make_versions, publish
from simulations.faultproxy import FaultProxy
from simulations.fleet import ProcFleet
from tests.waits import HANG_GUARD_S, until_true

pytestmark = pytest.mark.integration

HW = "sim-board-1"
CHUNK_KB = 16
SIZE = 512 * 1024


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("delivery")
    fleet = ProcFleet(root / "fleet", heartbeat_s=0.5)
    key = make_key(root / "key")
    images = make_versions(root / "images", ["1.0.0", "1.1.0", "1.2.0"], SIZE)
    fleet.start_cloud(["--release-key", str(key.public), "--release-chunk-kb", str(CHUNK_KB)])
    fleet.start_gateway("gw-1", "site-1", proxy=True, extra=["--cache-mb", "64"])
    for v in ("1.0.0", "1.1.0"):
        publish(fleet, key, images[v], v, HW)
    yield fleet, key, images
    fleet.kill_all()


def run(coro):
    return asyncio.run(coro)


async def devices_update(fleet, key, images, names, base, target, **kw):
    ctx = zmq.asyncio.Context()
    devs = [SimDevice(fleet, n, "site-1", "gw-1", hw=HW, release_pub=key.public, version=base, image=images[base], **kw)
            for n in names]
    try:
        await asyncio.gather(*(d.start(ctx) for d in devs))
        return await asyncio.wait_for(asyncio.gather(*(d.update(target) for d in devs)), HANG_GUARD_S)
    finally:
        await asyncio.gather(*(d.close() for d in devs))
        ctx.destroy(linger=0)


def test_twenty_devices_asking_at_once_cause_one_transfer_from_the_cloud(site):
    fleet, key, images = site
    proxy = fleet.proxies["gw-1"]
    before = proxy.stats().bytes_to_client
    results = run(devices_update(fleet, key, images, [f"dev-{i}" for i in range(20)], "1.0.0", "1.1.0"))
    crossed = proxy.stats().bytes_to_client - before
    assert {r["sha256"] for r in results} == {hashlib.sha256(images["1.1.0"].read_bytes()).hexdigest()}
    # one full image crossed the uplink (the gateway held no older image), not twenty
    assert SIZE <= crossed < 1.2 * SIZE, crossed
    fleet.stop(["gw-1"])
    stats = json.loads((fleet.dir("gw-1") / "stats.json").read_text())
    fleet.restart("gw-1")
    assert stats["firmware_cloud_fetches"] == 1
    assert stats["fetch_chunks_received"] == SIZE // (CHUNK_KB * 1024)
    assert stats["firmware_device_offers"] == 20


def test_with_the_old_image_cached_only_the_delta_crosses_the_wan_and_devices_get_deltas(site):
    fleet, key, images = site
    publish(fleet, key, images["1.2.0"], "1.2.0", HW)
    proxy = fleet.proxies["gw-1"]
    fleet.endpoints("gw-1")
    before = proxy.stats().bytes_to_client
    results = run(devices_update(fleet, key, images, ["dev-a", "dev-b"], "1.1.0", "1.2.0"))
    crossed = proxy.stats().bytes_to_client - before
    release = fleet.api("/v1/releases/1.2.0")
    delta = min(d["size"] for d in release["deltas"] if d["status"] == "offered")
    assert all(r["kind"] == "delta" for r in results)
    assert crossed < delta * 1.2 + 4096 and crossed < SIZE / 4, (crossed, delta)


def test_a_device_download_cut_ten_times_completes_resending_at_most_one_chunk_per_cut(site):
    fleet, key, images = site
    gw = fleet.endpoints("gw-1")["devices"]
    host, port = gw.removeprefix("tcp://").rsplit(":", 1)
    rng = random.Random(4)

    async def scenario():
        with FaultProxy(target=(host, int(port))) as fp:
            fp.throttle(64 * 1024)  # the device's slow link: ~8 s for the image
            task = asyncio.ensure_future(devices_update(fleet, key, images, ["dev-cut"], "1.0.0", "1.2.0",
                                                        endpoint=fp.endpoint))
            cuts = 0
            await asyncio.sleep(1.0)
            while cuts < 10 and not task.done():
                fp.cut()
                await asyncio.sleep(rng.uniform(0.05, 0.3))
                fp.restore()  # clears the cut and the throttle: the slow link comes back
                fp.throttle(64 * 1024)
                cuts += 1
                await asyncio.sleep(rng.uniform(0.2, 0.6))
            (result,) = await task
            return cuts, result

    cuts, result = run(scenario())
    print("cut test:", cuts, result)
    assert cuts == 10
    assert result["chunks_resent"] <= cuts
    assert result["sha256"] == hashlib.sha256(images["1.2.0"].read_bytes()).hexdigest()


def test_a_tampered_chunk_is_caught_reported_and_fetched_again_and_the_image_installs_intact(site):
    fleet, key, images = site
    good = images["1.1.0"].read_bytes()
    cached = fleet.dir("gw-1") / "cache" / "objects" / hashlib.sha256(good).hexdigest()
    assert cached.exists()  # the first test left 1.1.0's image in the site cache
    at = 3 * CHUNK_KB * 1024 + 100
    tampered = bytearray(good)
    tampered[at] ^= 0xFF
    cached.write_bytes(bytes(tampered))

    async def scenario():
        ctx = zmq.asyncio.Context()
        dev = SimDevice(fleet, "dev-tamper", "site-1", "gw-1", hw=HW, release_pub=key.public, version="1.0.0",
                        image=images["1.0.0"])
        try:
            await dev.start(ctx)
            task = asyncio.ensure_future(dev.update("1.1.0"))
            while not dev.failures and not task.done():
                await asyncio.sleep(0.05)
            assert not task.done(), "the tampered chunk was not caught"
            cached.write_bytes(good)  # the site cache is repaired; the device asks again after its backoff
            return await asyncio.wait_for(task, HANG_GUARD_S), list(dev.failures)
        finally:
            await dev.close()
            ctx.destroy(linger=0)

    result, failures = run(scenario())
    assert failures and failures[0][0] == 3 and "SHA-256" in failures[0][1]
    assert result["sha256"] == hashlib.sha256(good).hexdigest()
    assert result["bad_chunks"] >= 1


def test_an_agent_sigkilled_mid_download_resumes_where_it_stopped_and_installs_the_release(site):
    """The whole device path in a real agent process: the update command names a version, the agent
    downloads it through its gateway at its bandwidth limit, is SIGKILLed halfway, restarts, resumes
    from its persisted chunks, checks and installs the image (A/B, health check) and reports it."""
    from device_agent import simimage

    fleet, key, images = site
    image = images["1.0.0"].parent / "fw-3.0.0-sim.img"
    image.write_bytes(simimage.make("3.0.0", "ok", SIZE))
    publish(fleet, key, image, "3.0.0", HW)
    fleet.start_agent("dev-k", "site-1", "gw-1",
                      extra=["--release-key", str(key.public), "--hw", HW, "--download-rate", str(64 * 1024)])
    until_true(lambda: "dev-k" in {d["device_id"] for d in fleet.api("/v1/devices")["devices"]},
               "the agent to reach the cloud", every_s=0.2)
    fleet.api("/v1/devices/dev-k/commands", {"name": "update", "args": {"version": "3.0.0"}, "ttl_s": 600})
    progress = fleet.dir("dev-k") / "downloads"
    until_true(lambda: any(p.name.endswith(".progress") and p.stat().st_size >= 4 * 8 for p in progress.glob("*")),
               "the download to start (its progress log)", every_s=0.05)
    fleet.kill("dev-k")
    fleet.restart("dev-k")
    outcome = until_true(
        lambda: next((u["values"] for u in fleet.api("/v1/updates")["updates"]
                      if u["device_id"] == "dev-k" and u["values"].get("outcome") == "committed"), None),
        "the committed update reported", every_s=0.3)
    assert outcome["running_version"] == "3.0.0"
    fleet.stop(["dev-k"])
    stats = json.loads((fleet.dir("dev-k") / "stats.json").read_text())
    assert stats["download"]["resumed_chunks"] >= 8  # what was durable before the kill was not fetched again
    assert stats["download"]["chunks_received"] <= SIZE // (CHUNK_KB * 1024) - stats["download"]["resumed_chunks"] + 1


def test_download_ahead_fetches_without_installing_and_the_install_later_fetches_nothing(site):
    """A rollout's download ahead of the window: the agent fetches and checks the release, installs
    nothing and reports "downloaded"; the update command later installs from what is on disk."""
    from device_agent import simimage

    fleet, key, images = site
    image = images["1.0.0"].parent / "fw-4.0.0-sim.img"
    image.write_bytes(simimage.make("4.0.0", "ok", SIZE))
    publish(fleet, key, image, "4.0.0", HW)
    fleet.start_agent("dev-d", "site-1", "gw-1", extra=["--release-key", str(key.public), "--hw", HW])

    def outcomes():
        return [u["values"] for u in fleet.api("/v1/updates")["updates"] if u["device_id"] == "dev-d"]

    def wait(pred, what):
        return until_true(pred, what, every_s=0.3)

    wait(lambda: "dev-d" in {d["device_id"] for d in fleet.api("/v1/devices")["devices"]}, "agent never reached the cloud")
    fleet.api("/v1/devices/dev-d/commands", {"name": "download", "args": {"version": "4.0.0"}, "ttl_s": 600})
    wait(lambda: any(o.get("outcome") == "downloaded" for o in outcomes()), "no downloaded report")
    assert not any(o.get("outcome") == "committed" for o in outcomes())  # nothing installed
    fleet.api("/v1/devices/dev-d/commands", {"name": "update", "args": {"version": "4.0.0"}, "ttl_s": 600})
    done = wait(lambda: [o for o in outcomes() if o.get("outcome") == "committed"], "never installed")
    assert done[0]["running_version"] == "4.0.0"
    fleet.stop(["dev-d"])
    stats = json.loads((fleet.dir("dev-d") / "stats.json").read_text())
    assert stats["download"]["chunks_received"] == SIZE // (CHUNK_KB * 1024)  # fetched once, not twice
