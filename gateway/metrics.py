"""The gateway's Prometheus metrics, opt-in: ``edgefleet gateway --metrics-bind HOST:PORT`` serves ``GET /metrics``.

    exporter = MetricsExporter.start("127.0.0.1:9701")   # a listener thread (prometheus_client's own server)
    exporter.update(values)                              # on the event loop, every second: the newest snapshot
    exporter.stop()

The driver hands over one snapshot of plain numbers each second (the core's status and counters, the site
cache, the firmware responder); a scrape reads the newest one, so the HTTP thread never touches the core, the
queues or the cache. Names follow Prometheus' conventions (``edgefleet_gateway_`` namespace, ``_total`` on
counters, ``_bytes`` and ``_seconds`` in the name). Site cache hits are device offers answered from the cache
without a fetch from the cloud; misses are the fetches.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from common.errors import ConfigError
from common.protocol.messages import STREAMS

__all__ = ["MetricsExporter", "families", "parse_bind"]


def parse_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"metrics bind {bind!r} is not HOST:PORT (e.g. 127.0.0.1:9701; port 0 for any)")
    return host.strip("[]"), int(port)


def families(v: Mapping[str, Any]) -> Iterator[Any]:
    """The metric families of one snapshot of the gateway's numbers."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def num(key: str) -> float:
        value = v.get(key, 0)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0

    yield GaugeMetricFamily("edgefleet_gateway_link_up", "1 if the uplink to the cloud is up",
                            value=1.0 if v.get("link") == "up" else 0.0)
    yield GaugeMetricFamily("edgefleet_gateway_devices_connected", "Device sessions open now", value=num("devices_connected"))
    yield CounterMetricFamily("edgefleet_gateway_records_received", "Records from devices committed to the outbox",
                              value=num("records_in"))
    refused = CounterMetricFamily("edgefleet_gateway_records_refused", "Records not taken from devices, by reason",
                                  labels=["reason"])
    for reason in ("refused", "throttled", "malformed"):
        refused.add_metric([reason], num(reason))
    yield refused
    backlog = GaugeMetricFamily("edgefleet_gateway_backlog_records", "Records waiting in the outbox", labels=["stream"])
    backlog_bytes = GaugeMetricFamily("edgefleet_gateway_backlog_bytes", "Bytes waiting in the outbox", labels=["stream"])
    oldest = GaugeMetricFamily("edgefleet_gateway_oldest_record_age_seconds", "Age of the oldest record waiting",
                               labels=["stream"])
    dropped = CounterMetricFamily("edgefleet_gateway_records_dropped", "Records dropped by rule", labels=["stream", "reason"])
    for s in STREAMS:
        backlog.add_metric([s], num(f"backlog.{s}.records"))
        backlog_bytes.add_metric([s], num(f"backlog.{s}.bytes"))
        oldest.add_metric([s], num(f"oldest_age_s.{s}"))
        for reason in ("evicted", "expired"):
            dropped.add_metric([s, reason], num(f"{reason}.{s}"))
    yield from (backlog, backlog_bytes, oldest, dropped)
    yield GaugeMetricFamily("edgefleet_gateway_disk_bytes", "Bytes the outbox holds on disk", value=num("disk.bytes"))
    yield GaugeMetricFamily("edgefleet_gateway_commands_held", "Commands held for devices", value=num("commands_held"))
    yield CounterMetricFamily("edgefleet_gateway_uplink_bytes", "Bytes sent to the cloud", value=num("uplink_bytes"))
    yield GaugeMetricFamily("edgefleet_gateway_cache_bytes", "Bytes of firmware in the site cache", value=num("cache_bytes"))
    misses = num("firmware_cloud_fetches")
    yield CounterMetricFamily("edgefleet_gateway_cache_hits", "Firmware offers to devices answered from the site cache",
                              value=max(0.0, num("firmware_device_offers") - misses))
    yield CounterMetricFamily("edgefleet_gateway_cache_misses", "Firmware the site cache fetched from the cloud", value=misses)
    yield CounterMetricFamily("edgefleet_gateway_firmware_sent_bytes", "Firmware bytes sent to devices",
                              value=num("firmware_device_bytes"))


class _Snapshot:
    def __init__(self) -> None:
        self.values: Mapping[str, Any] = {}

    def collect(self) -> Iterator[Any]:
        return families(self.values)  # one reference read: the loop swaps in a new mapping, never edits it


class MetricsExporter:
    """prometheus_client's HTTP server on a thread, over the newest snapshot the driver handed over."""

    def __init__(self, server: Any, thread: threading.Thread, snapshot: _Snapshot) -> None:
        self._server, self._thread, self._snapshot = server, thread, snapshot
        self.port: int = server.server_port

    @classmethod
    def start(cls, bind: str) -> MetricsExporter:
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError as exc:  # the lean install: metrics are the cloud extra's
            raise ConfigError("--metrics-bind needs prometheus_client (pip install 'edgefleet[cloud]')") from exc
        host, port = parse_bind(bind)
        snapshot = _Snapshot()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(snapshot)  # type: ignore[arg-type]
        try:
            server, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve gateway metrics on {host}:{port}: {exc}") from exc
        return cls(server, thread, snapshot)

    def update(self, values: Mapping[str, Any]) -> None:
        self._snapshot.values = dict(values)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
