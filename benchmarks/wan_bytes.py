"""WAN bytes per release: 3 sites x 20 devices on 2 old versions each, one release rolled to all.

Real parts: the cloud and three gateways are ``edgefleet`` processes; each gateway's uplink runs
through a byte-counting TCP proxy (the site's WAN link); 60 devices are in-process clients of the
real transfer protocol on CURVE sockets (``simulations.delivery.SimDevice``), each checking the
signed manifest and the rebuilt image.

History first, not measured: releases 1.0.0 and 1.1.0 are published and each gateway delivers
them once (one device each), so each site cache holds both full images, as after two earlier
rollouts. Then 1.2.0 is published (the cloud computes deltas from 1.0.0 and 1.1.0) and all 60
devices ask for it at once: 10 per site on 1.0.0, 10 on 1.1.0. Measured: ``wan_bytes``, every
byte the proxies passed from the cloud to the gateways in that phase (manifests, protocol,
CURVE framing and heartbeats included), against ``sites * smallest delta``: the target is
``wan_ratio <= 1.05``. The baseline printed beside it is the naive one: every device downloads
the full image from the cloud (``naive_bytes = devices * full image``).

    .venv/bin/python benchmarks/wan_bytes.py [--size-mb 16] [--sites 3] [--devices-per-site 20]

Progress on stdout; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the repository, not benchmarks/ (its queue.py would shadow the stdlib)

import zmq.asyncio  # noqa: E402

from simulations.delivery import SimDevice, make_key, make_versions, publish  # noqa: E402
from simulations.fleet import ProcFleet  # noqa: E402
from simulations.teardown import exit_on_signals  # noqa: E402

HW = "sim-board-1"


async def deliver(fleet, key, images, plan: list[tuple[str, str, str, str]], target: str) -> list[dict]:
    """``plan``: (device, site, gateway, base version); every device fetches ``target`` at once."""
    ctx = zmq.asyncio.Context()
    devs = [SimDevice(fleet, name, site, gw, hw=HW, release_pub=key.public, version=base, image=images[base], window=2)
            for name, site, gw, base in plan]
    try:
        await asyncio.gather(*(d.start(ctx) for d in devs))
        return await asyncio.wait_for(asyncio.gather(*(d.update(target) for d in devs)), 600)
    finally:
        await asyncio.gather(*(d.close() for d in devs))
        ctx.destroy(linger=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=16.0, help="image size")
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--devices-per-site", type=int, default=20)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="4 devices per site (make bench); WAN bytes do not depend on it")
    ap.add_argument("--json-only", action="store_true", help="accepted for make bench; progress still goes to stdout")
    args = ap.parse_args()
    if args.quick:
        args.devices_per_site = min(args.devices_per_site, 4)
    exit_on_signals()  # SIGTERM/SIGINT unwind to the finally below, which stops the fleet
    root = args.workdir or Path(tempfile.mkdtemp(prefix="wan-bytes-"))
    fleet = ProcFleet(root / "fleet", heartbeat_s=1.0)
    t0 = time.monotonic()
    try:
        key = make_key(root / "key")
        size = int(args.size_mb * (1 << 20))
        images = make_versions(root / "images", ["1.0.0", "1.1.0", "1.2.0"], size)
        print(f"images: 3 versions of {size} bytes built from real files", flush=True)
        fleet.start_cloud(["--release-key", str(key.public), "--release-chunk-kb", "256"])
        sites = [(f"site-{i}", f"gw-{i}") for i in range(args.sites)]
        for site, gw in sites:
            fleet.start_gateway(gw, site, proxy=True, extra=["--cache-mb", str(int(args.size_mb * 8))])
        for v in ("1.0.0", "1.1.0"):
            publish(fleet, key, images[v], v, HW)
        print("history: 1.0.0 and 1.1.0 published; each site delivers them once", flush=True)
        asyncio.run(deliver(fleet, key, images, [(f"seed-{gw}", site, gw, "1.0.0") for site, gw in sites], "1.0.0"))
        asyncio.run(deliver(fleet, key, images, [(f"seed-{gw}", site, gw, "1.0.0") for site, gw in sites], "1.1.0"))
        t_pub = time.monotonic()
        release = publish(fleet, key, images["1.2.0"], "1.2.0", HW)
        offered = [d for d in release["deltas"] if d["status"] == "offered"]
        print(f"release 1.2.0 published in {time.monotonic() - t_pub:.1f} s; cloud deltas: "
              + ", ".join(f"from {d['from_version']} {d['size']} B ({d['method']})" for d in offered), flush=True)
        before = {gw: fleet.proxies[gw].stats().bytes_to_client for _, gw in sites}
        plan = [(f"{gw}-dev-{j}", site, gw, "1.0.0" if j % 2 else "1.1.0")
                for site, gw in sites for j in range(args.devices_per_site)]
        t_roll = time.monotonic()
        results = asyncio.run(deliver(fleet, key, images, plan, "1.2.0"))
        roll_s = time.monotonic() - t_roll
        per_site = {gw: fleet.proxies[gw].stats().bytes_to_client - before[gw] for _, gw in sites}
        wan = sum(per_site.values())
        smallest = min(d["size"] for d in offered)
        devices = len(plan)
        kinds = {k: sum(1 for r in results if r["kind"] == k) for k in ("delta", "full")}
        lan = sum(r["bytes"] for r in results)
        out = {
            "benchmark": "wan_bytes",
            "sites": args.sites,
            "devices": devices,
            "image_bytes": size,
            "full_image_bytes": size,
            "delta_bytes": smallest,
            "cloud_deltas": {d["from_version"]: d["size"] for d in offered},
            "wan_bytes": wan,
            "wan_bytes_per_site": per_site,
            "wan_ratio": round(wan / (args.sites * smallest), 4),
            "naive_bytes": devices * size,
            "naive_ratio": round(devices * size / wan, 1),
            "device_downloads": kinds,
            "device_bytes": lan,
            "rollout_s": round(roll_s, 2),
            "total_s": round(time.monotonic() - t0, 1),
        }
        print(f"WAN: {wan} B for {args.sites} sites ({wan / args.sites:.0f} B/site) vs smallest delta {smallest} B: "
              f"ratio {out['wan_ratio']}; naive (every device pulls the full image): {devices * size} B, "
              f"{out['naive_ratio']}x more; devices got {kinds['delta']} deltas and {kinds['full']} full images "
              f"in {roll_s:.1f} s", flush=True)
        print(json.dumps(out))
    finally:
        fleet.kill_all()


if __name__ == "__main__":
    main()
