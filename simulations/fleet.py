"""A fleet of real EdgeFleet processes on 127.0.0.1: the demo's and the integration tests' harness.

``ProcFleet`` lays out data directories, makes every node's CURVE keys up front
(so each server's allowlist can name its clients before they start), starts
``edgefleet cloud|gateway|agent`` as separate OS processes with ephemeral
ports, and stops them with SIGTERM (clean) or SIGKILL (crash).

Each node runs in a session of its own and carries ``EDGEFLEET_FLEET=<root>`` in
its environment (so a test or an operator can find every process of a fleet).
A script that owns a fleet stops it in a ``finally`` (``kill_all``) and calls
``simulations.teardown.exit_on_signals()`` so that SIGTERM and SIGINT unwind to
it; nodes a ``finally`` missed are killed at interpreter exit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from common.keys import Allowlist, load_or_create_keypair
from simulations.faultproxy import FaultProxy
from simulations.teardown import stop_at_exit

__all__ = ["API_TIMEOUT_S", "SHARED_IDENTITY", "ProcFleet", "Proc"]

SHARED_IDENTITY = ("curve.key", "curve.secret", "api_token", "signing.key", "signing.pub", "rollout_signing.key",
                   "rollout_signing.pub", "allowed_gateways")
"""What N coordinators share: one CURVE server identity, one operator token, one set of signing keys, one allowlist."""

API_TIMEOUT_S = 120.0
"""How long a call to the cloud's operator API (or an operator command) may take before it fails: a hang
guard, not a budget. On a loaded machine the cloud's one store thread may be ingesting a backlog, and a
read queues behind it for many seconds; a cloud that never answers still fails the caller."""


@dataclass
class Proc:
    name: str
    args: list[str]
    data_dir: Path
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class ProcFleet:
    root: Path
    heartbeat_s: float = 1.0
    sample_interval_s: float = 0.2
    procs: dict[str, Proc] = field(default_factory=dict)
    proxies: dict[str, FaultProxy] = field(default_factory=dict)  # gateway -> proxy on its uplink
    coordinators: list[str] = field(default_factory=lambda: ["cloud"])  # the cloud's processes (start_coordinator)
    gateways_started: int = 0  # each gateway's list of coordinators is rotated by one more: sessions spread
    python: str = sys.executable

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)

    # -- layout ----------------------------------------------------------------------

    def dir(self, name: str) -> Path:
        return self.root / name

    def endpoints(self, name: str, timeout_s: float = 30.0) -> dict[str, str]:
        """Wait for a server to write its endpoints.json (it does once bound) and read it."""
        path = self.dir(name) / "endpoints.json"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if path.exists():
                return json.loads(path.read_text())
            proc = self.procs.get(name)
            if proc is not None and proc.popen is not None and proc.popen.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.popen.returncode} before binding; see {proc.log_path}")
            time.sleep(0.05)
        raise TimeoutError(f"{name} did not write {path} within {timeout_s} s; see {self.root / 'logs'}")

    def allow(self, server: str, client: str, site: str = "") -> None:
        """Admit ``client``'s key at ``server`` (allowed_gateways for the cloud, allowed_devices for a gateway),
        named for ``client`` (and ``site``): the key may say Hello only as that node (``common.key_binding``)."""
        keys = load_or_create_keypair(self.dir(client))
        filename = "allowed_gateways" if server == "cloud" else "allowed_devices"
        for s in self.coordinators if server == "cloud" else [server]:  # every coordinator admits the same gateways
            Allowlist(self.dir(s) / filename).add(keys.public, f"{client} {site}".strip())

    # -- processes -------------------------------------------------------------------

    def _start(self, name: str, args: list[str]) -> Proc:
        log_path = self.root / "logs" / f"{name}.log"
        proc = self.procs.get(name) or Proc(name, args, self.dir(name), log_path)
        with open(log_path, "ab") as log:
            proc.popen = subprocess.Popen(
                [self.python, "-m", "common", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "EDGEFLEET_FLEET": str(self.root)},
                start_new_session=True,  # its own process group: a kill takes its delta workers with it
            )
            stop_at_exit(proc.popen)  # the backstop if no ``finally`` stops it
        self.procs[name] = proc
        return proc

    def start_cloud(self, extra: list[str] | None = None) -> dict[str, str]:
        load_or_create_keypair(self.dir("cloud"))
        (self.dir("cloud") / "endpoints.json").unlink(missing_ok=True)
        self._start(
            "cloud",
            ["cloud", "--data-dir", str(self.dir("cloud")), "--bind", "tcp://127.0.0.1:*", "--api-port", "0",
             "--heartbeat", str(self.heartbeat_s), *(extra or [])],
        )
        return self._pin("cloud", {"--bind": "gateways", "--api-port": "api"})

    def start_coordinator(self, name: str, database: str, extra: list[str] | None = None) -> dict[str, str]:
        """One of N coordinators (``edgefleet cloud``) over one PostgreSQL ``database``: its own data directory
        ``name`` holding the fleet's shared identity (the first coordinator's, in ``cloud``: CURVE key pair,
        API token, signing keys, admitted gateways), its own ephemeral ports."""
        shared = self.dir("cloud")
        load_or_create_keypair(shared)
        if name != "cloud":
            self.dir(name).mkdir(parents=True, exist_ok=True)
            for f in SHARED_IDENTITY:
                if (shared / f).exists():
                    shutil.copy2(shared / f, self.dir(name) / f)
            if not (self.dir(name) / "artifacts").exists():  # release files: shared storage (docs/DEPLOY.md)
                (shared / "artifacts").mkdir(exist_ok=True)
                (self.dir(name) / "artifacts").symlink_to(shared / "artifacts", target_is_directory=True)
        if name not in self.coordinators:
            self.coordinators.append(name)
        (self.dir(name) / "endpoints.json").unlink(missing_ok=True)
        self._start(
            name,
            ["cloud", "--data-dir", str(self.dir(name)), "--bind", "tcp://127.0.0.1:*", "--api-port", "0",
             "--heartbeat", str(self.heartbeat_s), "--database", database, "--coordinator-id", name, *(extra or [])],
        )
        return self._pin(name, {"--bind": "gateways", "--api-port": "api"})

    def start_gateway(self, name: str, site: str, *, proxy: bool = False, extra: list[str] | None = None) -> dict[str, str]:
        """Start a gateway; with ``proxy`` its uplink to the cloud runs through a FaultProxy (``self.proxies[name]``)."""
        self.allow("cloud", name, site)
        (self.dir(name) / "endpoints.json").unlink(missing_ok=True)
        turn = self.gateways_started % len(self.coordinators)
        self.gateways_started += 1
        order = self.coordinators[turn:] + self.coordinators[:turn]
        cloud = ",".join(self.endpoints(c)["gateways"] for c in order)  # N coordinators: failed over in turn
        if proxy:
            host, port = cloud.removeprefix("tcp://").rsplit(":", 1)
            fp = FaultProxy(target=(host, int(port)))
            fp.start()
            self.proxies[name] = fp
            cloud = fp.endpoint
        self._start(
            name,
            ["gateway", "--gateway-id", name, "--site", site, "--data-dir", str(self.dir(name)),
             "--bind", "tcp://127.0.0.1:*", "--cloud", cloud,
             "--cloud-key", str(self.dir("cloud") / "curve.key"), "--heartbeat", str(self.heartbeat_s), *(extra or [])],
        )
        flags = {"--bind": "devices"}
        if extra and "--enroll-bind" in extra:
            flags["--enroll-bind"] = "enroll"
        return self._pin(name, flags)

    def start_agent(self, name: str, site: str, gateway: str, extra: list[str] | None = None) -> Proc:
        self.allow(gateway, name)
        gw = self.endpoints(gateway)
        return self._start(
            name,
            ["agent", "--device-id", name, "--site", site, "--data-dir", str(self.dir(name)),
             "--gateway", gw["devices"], "--gateway-key", str(self.dir(gateway) / "curve.key"),
             "--sample-interval", str(self.sample_interval_s), "--heartbeat", str(self.heartbeat_s), *(extra or [])],
        )

    # -- identity and security (zero-touch enrollment) ------------------------------------

    def secure_gateway_flags(self) -> list[str]:
        """A gateway with an enrollment socket, the fleet CA bundle and the cloud's signing key."""
        return ["--enroll-bind", "tcp://127.0.0.1:*", "--ca-chain", str(self.dir("ca") / "chain.pem"),
                "--cloud-sign-key", str(self.dir("cloud") / "signing.pub")]

    def enroll_agent(self, name: str, site: str, gateway: str, claim_token: str, extra: list[str] | None = None) -> Proc:
        """Start an agent that is in no allowlist: it enrolls zero-touch through ``gateway`` with ``claim_token``
        (empty: by its serial, ``SN-<name>``, so an unknown one waits as pending until an operator approves it)."""
        gw = self.endpoints(gateway)
        claim = ["--claim-token", claim_token] if claim_token else []
        return self._start(
            name,
            ["agent", "--device-id", name, "--site", site, "--data-dir", str(self.dir(name)),
             "--gateway", gw["devices"], "--gateway-key", str(self.dir(gateway) / "curve.key"),
             "--enroll-endpoint", gw["enroll"], *claim, "--serial", f"SN-{name}",
             "--cloud-sign-key", str(self.dir("cloud") / "signing.pub"),
             "--sample-interval", str(self.sample_interval_s), "--heartbeat", str(self.heartbeat_s), *(extra or [])],
        )

    def cli(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``edgefleet ARGS`` as an operator would (operator commands get ``--data-dir`` of the cloud)."""
        done = subprocess.run([self.python, "-m", "common", *args], capture_output=True, text=True, timeout=API_TIMEOUT_S,
                              env={**os.environ, **(env or {})})
        if check and done.returncode != 0:
            raise RuntimeError(f"edgefleet {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def _pin(self, name: str, flags: dict[str, str]) -> dict[str, str]:
        """Once a server has bound ephemeral ports, restart it on the same ones (its clients know them)."""
        eps = self.endpoints(name)
        args = self.procs[name].args
        for flag, key in flags.items():
            value = eps[key] if flag in ("--bind", "--enroll-bind") else eps[key].rsplit(":", 1)[1]
            args[args.index(flag) + 1] = value
        return eps

    def restart(self, name: str) -> Proc:
        """Start a stopped or killed node again with the same arguments (and ports)."""
        proc = self.procs[name]
        proc.restarts += 1
        return self._start(name, proc.args)

    def kill(self, name: str) -> None:
        """SIGKILL: a crash or a power cut, as far as the process can tell (its children die with it, as
        on a power cut: a cloud's delta workers are not left behind)."""
        proc = self.procs[name]
        if proc.running:
            assert proc.popen is not None
            _kill_group(proc.popen)

    def signal(self, name: str, sig: int) -> None:
        proc = self.procs[name]
        if proc.running:
            assert proc.popen is not None
            proc.popen.send_signal(sig)

    def wait(self, name: str, timeout_s: float = 30.0) -> int:
        proc = self.procs[name]
        assert proc.popen is not None
        try:
            return proc.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc.popen)
            raise RuntimeError(f"{name} did not exit within {timeout_s} s of being told to; killed it (see {proc.log_path})") from None

    def stop(self, names: list[str], timeout_s: float = 30.0) -> dict[str, int]:
        """SIGTERM each, then wait for all: returns exit codes."""
        for n in names:
            self.signal(n, signal.SIGTERM)
        return {n: self.wait(n, timeout_s) for n in names}

    def kill_all(self) -> None:
        for name in list(self.procs):
            self.kill(name)
        for fp in self.proxies.values():
            fp.stop()

    # -- reading the cloud -----------------------------------------------------------

    def api(self, path: str, body: object | None = None, node: str = "") -> object:
        """GET ``path`` from the cloud's operator API (POST ``body`` when given): on ``node``, else on the first
        coordinator running."""
        live = [c for c in self.coordinators if c not in self.procs or self.procs[c].running]
        token = (self.dir("cloud") / "api_token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        for i, name in enumerate([node] if node else live or ["cloud"]):
            ep = self.endpoints(name)
            try:
                if body is None:
                    r = httpx.get(ep["api"] + path, headers=headers, timeout=API_TIMEOUT_S)
                else:
                    r = httpx.post(ep["api"] + path, headers=headers, json=body, timeout=API_TIMEOUT_S)
            except httpx.ConnectError:  # a coordinator restarting: any other serves the same API
                if node or i == len(live) - 1:
                    raise
                continue
            r.raise_for_status()
            return r.json()
        raise AssertionError("unreachable")

    def agent_stats(self, name: str) -> dict[str, int]:
        return json.loads((self.dir(name) / "stats.json").read_text())


def _kill_group(popen: subprocess.Popen) -> None:
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    popen.wait()
