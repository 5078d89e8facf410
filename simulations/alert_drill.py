"""``edgefleet demo --alert-drill``: make the fleet misbehave and check that the cloud says so.

The fleet runs as real processes (``ProcFleet``) with short alert rules and a local
webhook receiver. In turn, each step waiting (with a deadline) until the cloud's
alerts show its effect:

1. one agent is stopped (SIGTERM) and one device is told, through the real command
   path (POST /v1/devices/ID/commands), to ``simulate battery_percent=10``:
   ``device_offline`` and ``battery_low`` fire;
2. the agent is started again and the simulation cleared: both resolve;
3. the last site's uplink is cut at its fault proxy: ``gateway_link_down`` fires
   (and nothing fires for the site's devices: their silence is the gateway's outage);
4. the uplink is restored: it resolves, and the site's backlog drains.

Then telemetry is accounted as in the plain demo (the outage makes data late, not
lost). The result adds ``alerts_fired`` and ``alerts_resolved`` (the rule of each alert
the cloud announced during the drill, and of each that resolved), ``webhook_deliveries``
(POSTs the receiver took by then) and ``alert_drill_ok``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click
import httpx

from simulations.drill_steps import bulk_stored, drain_agents, step_waiter
from simulations.fleet import API_TIMEOUT_S, ProcFleet

__all__ = ["DRILL_RULES", "WebhookReceiver", "run_alert_drill", "write_cloud_config"]

# short enough for a demo; device_offline must outlast the gateway liveness (3 heartbeats of 1 s)
DRILL_RULES: list[dict[str, Any]] = [
    {"type": "offline", "name": "device_offline", "after_s": 5},
    {"type": "threshold", "name": "battery_low", "metric": "battery_percent", "op": "<", "threshold": 15,
     "for_s": 2},
    {"type": "offline", "name": "gateway_link_down", "after_s": 5, "kind": "gateway", "severity": "critical"},
    {"type": "backlog", "name": "backlog_high", "percent": 80},
    {"type": "firmware", "name": "firmware_behind", "behind": 2},
    {"type": "rate", "name": "message_rate", "window_s": 60, "factor": 5},
]
EXPECTED = ("device_offline", "battery_low", "gateway_link_down")


class WebhookReceiver:
    """An HTTP server on 127.0.0.1, in a thread, that answers 200 to every POST and counts them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    event = json.loads(body)
                except ValueError:
                    event = {"event": "unreadable"}
                with receiver.lock:
                    receiver.events.append(event)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.1,), name="webhook", daemon=True)

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.events)

    def by_event(self) -> Counter[str]:
        with self.lock:
            return Counter(str(e.get("event")) for e in self.events)

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_cloud_config(path: Path, rules: list[dict[str, Any]] = DRILL_RULES) -> Path:
    """A cloud TOML config holding ``alert_rules`` (a flat file: one inline table per rule)."""

    def value(v: Any) -> str:
        return json.dumps(v)  # a JSON string or number is a TOML one

    lines = ["alert_rules = ["]
    lines += ["  { " + ", ".join(f"{k} = {value(v)}" for k, v in rule.items()) + " }," for rule in rules]
    lines.append("]")
    path.write_text("\n".join(lines) + "\n")
    return path


def run_alert_drill(
    root: Path, sites: int, devices_per_site: int, duration: float, quiet: bool = False
) -> dict[str, Any]:
    def say(text: str) -> None:
        if not quiet:
            click.echo(f"  t={time.monotonic() - t0:5.1f}s  {text}")

    fleet = ProcFleet(root)
    started = time.monotonic()
    receiver = WebhookReceiver().start()
    carried: dict[str, int] = {}  # bulk samples an agent produced before it was restarted
    missed: list[str] = []
    _wait = step_waiter(missed, lambda text: say(text))
    t0 = time.monotonic()
    outage_s = 0.0
    try:
        config = write_cloud_config(root / "cloud.toml")
        cloud = fleet.start_cloud(extra=["--config", str(config), "--webhook", receiver.url])
        cut_gw = f"gw-{sites}"
        gateways = {}
        for s in range(1, sites + 1):
            name = f"gw-{s}"
            fleet.start_gateway(name, f"site-{s}", proxy=name == cut_gw)
            gateways[name] = f"site-{s}"
        agents = [f"dev-{s}-{d:03d}" for s in range(1, sites + 1) for d in range(1, devices_per_site + 1)]
        stopped, battery = agents[0], agents[1 if len(agents) > 1 else 0]
        for name in agents:
            s = int(name.split("-")[1])
            extra = ["--drain", "45"] + (["--allow-simulation"] if name == battery else [])
            fleet.start_agent(name, f"site-{s}", f"gw-{s}", extra=extra)
        t0 = time.monotonic()
        if not quiet:
            click.echo(f"cloud up ({cloud['api']}), {sites} gateways, {len(agents)} agents; "
                       f"alert webhook at {receiver.url}; uplink of {cut_gw} through a fault proxy")
        _wait(lambda: len({d["device_id"] for d in fleet.api("/v1/telemetry/summary")["devices"]}) == len(agents),
              "every device to reach the cloud")
        say("every device has reached the cloud")

        # 1 and 2: a device that stops, a battery that runs low; then both recover
        codes = fleet.stop([stopped], timeout_s=60)
        carried[stopped] = fleet.agent_stats(stopped)["produced"]["bulk"]
        say(f"DRILL: {stopped} stopped with SIGTERM (exit {codes[stopped]})")
        _command(fleet, battery, {"battery_percent": "10"})
        say(f"DRILL: simulate battery_percent=10 sent to {battery}")
        _wait(lambda: _has(fleet, "open", ("device_offline", stopped), ("battery_low", battery)),
              f"device_offline for {stopped} and battery_low for {battery}")
        say("device_offline and battery_low fired")
        fleet.restart(stopped)
        _command(fleet, battery, {"battery_percent": ""})
        say(f"DRILL: {stopped} started again; simulation cleared on {battery}")
        _wait(lambda: _has(fleet, "resolved", ("device_offline", stopped), ("battery_low", battery)),
              "device_offline and battery_low to resolve")
        say("device_offline and battery_low resolved")

        # 3 and 4: a site's uplink, cut until the cloud says so, then restored
        proxy = fleet.proxies[cut_gw]
        proxy.cut()
        cut_at = time.monotonic()
        say(f"DRILL: uplink of {cut_gw} cut")
        _wait(lambda: _has(fleet, "open", ("gateway_link_down", cut_gw)), f"gateway_link_down for {cut_gw}")
        say("gateway_link_down fired")
        time.sleep(2.0)  # down a little longer than it took to notice
        proxy.restore()
        outage_s = time.monotonic() - cut_at
        say(f"DRILL: uplink of {cut_gw} restored after {outage_s:.1f} s")
        _wait(lambda: _has(fleet, "resolved", ("gateway_link_down", cut_gw)), "gateway_link_down to resolve")
        say("gateway_link_down resolved")

        # every announced event reaches the receiver: fired for each announced alert, resolved for each closed one
        drill_alerts = fleet.api("/v1/alerts?state=all&limit=10000")["alerts"]
        announced = [a for a in drill_alerts if a["last_event"] in ("fired", "resolved")]
        resolved = [a for a in drill_alerts if a["state"] == "resolved"]
        expected_events = len(announced) + len(resolved)
        _wait(lambda: receiver.count >= expected_events, f"{expected_events} webhook deliveries")
        deliveries = receiver.count
        say(f"webhook receiver holds {deliveries} events: {dict(receiver.by_event())}")

        while time.monotonic() - t0 < duration:
            time.sleep(0.2)
        sampled_s = time.monotonic() - t0
        say("stopping agents (each drains its buffer first)")
        stopped, stats, sent, summary, dropped = drain_agents(fleet, agents, sum(carried.values()))
        codes |= stopped
        codes |= fleet.stop(list(gateways))
        codes |= fleet.stop(["cloud"])
    finally:
        fleet.kill_all()
        receiver.close()
    stored = bulk_stored(summary)
    fired_rules = sorted(a["rule"] for a in announced)
    resolved_rules = sorted(a["rule"] for a in resolved)
    result: dict[str, Any] = {
        "devices": len(agents),
        "sites": sites,
        "duration_s": round(sampled_s, 1),
        "telemetry_sent": sent,
        "telemetry_stored": stored,
        "telemetry_duplicates_stored": summary["duplicates_stored"],
        "telemetry_dropped_reported": dropped,
        "telemetry_lost": sent - stored - dropped,
        "telemetry_buffered": sum(s["buffered"]["bulk"] for s in stats.values()),
        "device_reconnects": sum(s["reconnects"] for s in stats.values()),
        "gateway_restarts": 0,
        "agent_restarts": 1,
        "outage_seconds": round(outage_s, 1),
        "clean_exits": sum(1 for c in codes.values() if c == 0),
        "processes": len(codes),
        "wall_seconds": round(time.monotonic() - started, 1),
        "logs": str(root / "logs"),
        "alerts_fired": fired_rules,
        "alerts_resolved": resolved_rules,
        "webhook_deliveries": deliveries,
        "alert_drill_ok": not missed
        and all(r in fired_rules and r in resolved_rules for r in EXPECTED)
        and deliveries >= len(fired_rules) + len(resolved_rules),
    }
    if not quiet:
        click.echo(f"alerts: fired {', '.join(fired_rules) or 'none'}; resolved {', '.join(resolved_rules) or 'none'}; "
                   f"{deliveries} webhook deliveries")
    return result


def _has(fleet: ProcFleet, state: str, *wanted: tuple[str, str]) -> bool:
    """Every (rule, subject) in ``wanted`` has an alert in ``state``."""
    rows = fleet.api(f"/v1/alerts?state={state}&limit=10000")["alerts"]  # type: ignore[index]
    present = {(a["rule"], a["subject"]) for a in rows}
    return all(w in present for w in wanted)


def _command(fleet: ProcFleet, device: str, args: dict[str, str]) -> dict[str, Any]:
    """Queue ``simulate`` for ``device`` through the operator API, as `edgefleet devices command` does."""
    api = fleet.endpoints("cloud")["api"]
    token = (fleet.dir("cloud") / "api_token").read_text().strip()
    response = httpx.post(
        f"{api}/v1/devices/{device}/commands",
        json={"name": "simulate", "args": args, "ttl_s": 120},
        headers={"Authorization": f"Bearer {token}"},
        timeout=API_TIMEOUT_S,
    )
    response.raise_for_status()
    return response.json()
