"""The cloud's alert service: what the cloud hears about its fleet in; alert rows and events out.

Sans-IO around ``common.alerting.AlertEngine``; the cloud driver feeds it and runs
what it returns (persist the rows, then deliver the events)::

    service = AlertService(settings, liveness_ms=3000)
    service.restore(store.list_alerts("open"), store.active_silences(now_ms), now_ms)   # at start
    service.observe_batch(gateway_id, records, now_ms)    # every committed batch
    service.observe_gateway(gateway_id, now_ms)           # gateway session up, heartbeat
    out = service.tick(now_ms)                            # every second
    store.save_alerts(out.rows); then webhooks.submit(event) for each of out.events
    service.persist_failed(out.rows)                      # the store refused: rows come again next tick

What feeds which rule (times are the cloud's clock when it heard, never a device's):

    every record a device made (seq > 0)   the device is seen (offline rules of kind "device")
                                           and sent a message (rate rules)
    kind "metrics", numeric values         threshold rules; a watched metric missing from a
                                           metrics record no longer breaches (a series that
                                           disappeared, as Prometheus treats it)
    a "firmware_version" value             firmware rules, against ``firmware_releases``
    kind "gateway.status"                  backlog rules: the fullest stream's backlog.S.bytes
                                           over quota.S.bytes
    gateway session up, heartbeat, batch   the gateway is seen (offline rules of kind "gateway")

Devices behind a gateway that is down: while their gateway has been silent longer
than the session liveness, no new alert opens for the devices last heard through it
(their silence is its outage, which has its own alert), and when it comes back their
silence clock restarts: a device is offline only after ``after_s`` of silence while its
gateway is up. Devices in lifecycle state maintenance (``set_maintenance``) open nothing.

A cloud restart: alerts the store holds open are adopted. If the engine opens the same
(rule, subject) again the alert keeps its stored id, and one already announced is not
announced twice; if it does not within that rule's duration plus the liveness, the
stored alert resolves (and its ``resolved`` goes out if its ``fired`` did).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.alerting import (
    Alert,
    AlertEngine,
    AlertEvent,
    BacklogRule,
    FirmwareRule,
    OfflineRule,
    RateRule,
    Rule,
    ThresholdRule,
    parse_rules,
)
from common.errors import ConfigError, VersionError
from common.firmware.version import Version
from common.protocol.messages import STREAMS, ForwardRecord

__all__ = ["DEFAULT_RULES", "AlertService", "AlertSettings", "TickResult", "site_alert_event"]

DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {"type": "offline", "name": "device_offline", "after_s": 600, "kind": "device"},
    {"type": "threshold", "name": "battery_low", "metric": "battery_percent", "op": "<", "threshold": 15,
     "for_s": 600},
    {"type": "offline", "name": "gateway_link_down", "after_s": 300, "kind": "gateway", "severity": "critical"},
    {"type": "backlog", "name": "backlog_high", "percent": 80},
    {"type": "firmware", "name": "firmware_behind", "behind": 2},
    {"type": "rate", "name": "message_rate", "window_s": 300, "factor": 5},
    {"type": "threshold", "name": "ghost_device", "metric": "ghost.silent_s", "op": ">", "threshold": 7 * 86400,
     "for_s": 0},
)
"""The rules when the cloud's config names none, as the config writes them (``alert_rules = [...]``)."""

FIRMWARE_KEY = "firmware_version"
GHOST_METRIC = "ghost.silent_s"
METRICS_KIND = "metrics"
STATUS_KIND = "gateway.status"


@dataclass(frozen=True)
class AlertSettings:
    rules: tuple[Rule, ...] = field(default_factory=lambda: tuple(parse_rules(DEFAULT_RULES)))
    firmware_releases: tuple[str, ...] = ()  # oldest first

    @classmethod
    def from_config(
        cls, rules: Iterable[Mapping[str, Any]] | None = None, firmware_releases: Iterable[str] = ()
    ) -> AlertSettings:
        """Rules from config tables (None: ``DEFAULT_RULES``); releases sorted by version (ConfigError if one
        does not parse)."""
        parsed = tuple(parse_rules(DEFAULT_RULES if rules is None else rules))
        try:
            releases = sorted(dict.fromkeys(firmware_releases), key=Version)
        except VersionError as exc:
            raise ConfigError(f"firmware_releases: {exc}") from exc
        AlertEngine(parsed)  # refuses duplicate names now rather than at the cloud's start
        return cls(parsed, tuple(releases))


@dataclass(frozen=True)
class TickResult:
    rows: list[dict[str, Any]]  # alert rows to save (``Store.save_alerts``), before...
    events: list[AlertEvent]  # ...these are delivered


@dataclass
class _Adopted:
    """An alert the store held open when this cloud started."""

    row: dict[str, Any]
    deadline_ms: int


class _Engine(AlertEngine):
    def metric_absent(self, device: str, metric: str, now_ms: int) -> None:
        """A metrics record of ``device`` without ``metric``: its threshold rules no longer breach.

        (A candidate for ``common.alerting``; it is here until that module takes it.)
        """
        self._latest.pop((device, metric), None)
        for rule in self.rules:
            if isinstance(rule, ThresholdRule) and rule.metric == metric:
                self._breach(rule.name, device, False, now_ms)


class AlertService:
    """Observations in; ``tick`` gives the alert rows to persist and the events to deliver."""

    def __init__(self, settings: AlertSettings, *, liveness_ms: int) -> None:
        self.settings = settings
        self.liveness_ms = liveness_ms
        self.engine = _Engine(settings.rules, suppressed=self._suppressed)
        self._watched = {r.metric for r in settings.rules if isinstance(r, ThresholdRule)}
        self._releases = {Version(v): v for v in settings.firmware_releases}
        self._release_list: tuple[str, ...] = tuple(settings.firmware_releases)
        self._firmware_of: dict[str, str] = {}  # device -> the firmware version it reported last
        self._now_ms = 0
        self._maintenance: frozenset[str] = frozenset()
        self._gateway_seen: dict[str, int] = {}
        self._device_seen: dict[str, int] = {}
        self._gateway_of: dict[str, str] = {}  # device -> the gateway it was last heard through
        self._devices_of: dict[str, set[str]] = {}  # gateway -> its devices
        self._reported: dict[str, set[str]] = {}  # device -> the watched metrics it reported last
        self._ids: dict[str, str] = {}  # engine id -> stored id (the same but for adopted alerts)
        self._live: dict[str, Alert] = {}  # stored id -> the engine's open alert
        self._persisted: dict[str, str] = {}  # stored id of an open alert -> last_event saved
        self._announced: set[str] = set()  # stored ids whose fired went out and resolved has not
        self._adopted: dict[tuple[str, str], _Adopted] = {}
        self.counters = {"fired": 0, "resolved": 0, "records": 0}

    # --- observations ---------------------------------------------------------------------------

    def observe_gateway(self, gateway: str, now_ms: int) -> None:
        """The gateway's session is up and it spoke.

        After an outage, the silence of each device that went quiet with the link restarts now;
        a device that was silent well before the outage began stays as silent as it was.
        """
        last = self._gateway_seen.get(gateway)
        if last is not None and now_ms - last > self.liveness_ms:
            for device in self._devices_of.get(gateway, ()):
                if self._device_seen.get(device, 0) >= last - self.liveness_ms:
                    self.engine.observe_seen(device, now_ms)
        self._gateway_seen[gateway] = max(now_ms, last if last is not None else now_ms)
        self.engine.observe_seen(gateway, now_ms, kind="gateway")

    def observe_batch(self, gateway: str, records: Iterable[ForwardRecord], now_ms: int) -> None:
        """A batch from ``gateway``, committed. Each device's messages are counted once per batch, and only
        the metrics some rule names are looked at (``AlertEngine.metrics``: any other changes no alert)."""
        self.observe_gateway(gateway, now_ms)
        per_device: dict[str, int] = {}
        watched, named = self._watched, self.engine.metrics
        interesting = watched | named | {FIRMWARE_KEY}
        reported = self._reported
        n = 0
        for r in records:
            n += 1
            if r.seq == 0:  # a report made by the gateway: its status, or about a device, not by it
                if r.kind == STATUS_KIND and r.device_id == gateway:
                    self._observe_status(gateway, r.values, now_ms)
                continue
            device, values = r.device_id, r.values
            per_device[device] = per_device.get(device, 0) + 1
            if interesting.isdisjoint(values):  # most records: no metric a rule names, no firmware version (in C)
                if device in reported and r.kind == METRICS_KIND:
                    for metric in sorted(reported[device]):
                        self._absent(device, metric, now_ms)
                continue
            if r.kind == METRICS_KIND:
                for metric in watched:
                    if _number(values.get(metric)):
                        reported.setdefault(device, set()).add(metric)
                    else:
                        self._absent(device, metric, now_ms)
                for metric in named:
                    value = values.get(metric)
                    if value is not None and _number(value):
                        self.engine.observe_metric(device, metric, value, now_ms)
            version = values.get(FIRMWARE_KEY)
            if isinstance(version, str):
                self._firmware_of[device] = version
                self._judge_firmware(device, version)
        self.counters["records"] += n
        for device, count in per_device.items():
            self._observe_device(gateway, device, count, now_ms)

    def _absent(self, device: str, metric: str, now_ms: int) -> None:
        """A metrics record of ``device`` without ``metric``: if it reported the metric before, the engine hears so."""
        had = self._reported.get(device)
        if had is not None and metric in had:
            had.discard(metric)
            if not had:
                del self._reported[device]
            self.engine.metric_absent(device, metric, now_ms)

    def _observe_device(self, gateway: str, device: str, messages: int, now_ms: int) -> None:
        if self._gateway_of.get(device) != gateway:
            if (old := self._gateway_of.get(device)) is not None:
                self._devices_of[old].discard(device)
            self._gateway_of[device] = gateway
            self._devices_of.setdefault(gateway, set()).add(device)
        self._device_seen[device] = now_ms
        self.engine.observe_seen(device, now_ms)
        self.engine.observe_messages(device, messages, now_ms)

    def _judge_firmware(self, device: str, version: str) -> None:
        if not self._releases:
            return
        try:
            version = self._releases.get(Version(version), version)  # "2.1" is release "2.1.0"
        except VersionError:
            pass  # not judged: the engine only judges versions in the release list
        self.engine.observe_firmware(device, version, self._release_list)

    def set_releases(self, versions: Iterable[str]) -> None:
        """The firmware releases now (the config's and the published ones); every device's reported
        version is judged again against them."""
        known = dict(self._releases)
        for v in versions:
            try:
                known.setdefault(Version(v), v)
            except VersionError:
                continue
        if known.keys() == self._releases.keys():
            return
        self._releases = known
        self._release_list = tuple(known[k] for k in sorted(known))
        for device, version in self._firmware_of.items():
            self._judge_firmware(device, version)


    def _observe_status(self, gateway: str, values: Mapping[str, Any], now_ms: int) -> None:
        fullest: tuple[float, int, int] | None = None
        for s in STREAMS:
            used, quota = values.get(f"backlog.{s}.bytes"), values.get(f"quota.{s}.bytes")
            if _number(used) and _number(quota) and quota > 0:
                ratio = used / quota
                if fullest is None or ratio > fullest[0]:
                    fullest = (ratio, int(used), int(quota))
        if fullest is not None:
            self.engine.observe_backlog(gateway, fullest[1], fullest[2], now_ms)

    def observe_silences(self, silent_s: Mapping[str, float], now_ms: int) -> None:
        """How long each known, not retired device has been silent (from the store, so it holds across
        cloud restarts): the ``ghost.silent_s`` metric the ghost_device rule watches."""
        for device, seconds in silent_s.items():
            self.engine.observe_metric(device, GHOST_METRIC, float(seconds), now_ms)

    def set_maintenance(self, devices: Collection[str]) -> None:
        """The devices in lifecycle state maintenance now: no new alert opens for them."""
        self._maintenance = frozenset(devices)

    def silence(self, target: str, until_ms: int) -> None:
        """Hold back new alerts' events for ``target`` (a rule name or a subject); the longer silence wins."""
        self.engine.silence(target, max(until_ms, self.engine.silences.get(target, 0)))

    def restore(
        self, open_rows: Iterable[Mapping[str, Any]], silences: Iterable[Mapping[str, Any]], now_ms: int
    ) -> None:
        """At start: the alerts the store holds open and the silences still running."""
        for s in silences:
            self.silence(s["target"], s["until_ms"])
        durations = {r.name: _duration_ms(r) for r in self.settings.rules}
        for row in open_rows:
            key = (row["rule"], row["subject"])
            wait = durations.get(row["rule"], 0) + self.liveness_ms  # a rule no longer configured: resolves soon
            self._adopted[key] = _Adopted(dict(row), now_ms + wait)
            self._persisted[row["id"]] = row["last_event"]
            if row["last_event"] == "fired":
                self._announced.add(row["id"])

    # --- evaluation -----------------------------------------------------------------------------

    def _gateway_down(self, gateway: str, now_ms: int) -> bool:
        last = self._gateway_seen.get(gateway)
        return last is None or now_ms - last > self.liveness_ms

    def _suppressed(self, subject: str) -> bool:
        if subject in self._maintenance:
            return True
        gateway = self._gateway_of.get(subject)
        return gateway is not None and self._gateway_down(gateway, self._now_ms)

    def tick(self, now_ms: int) -> TickResult:
        """Evaluate every rule; the rows to save and the events to deliver once they are saved."""
        self._now_ms = now_ms
        engine_events = self.engine.tick(now_ms)
        open_now: dict[str, Alert] = {}
        for alert in self.engine.open_alerts():
            key = (alert.rule, alert.subject)
            if alert.id not in self._ids:
                adopted = self._adopted.pop(key, None)
                self._ids[alert.id] = adopted.row["id"] if adopted is not None else alert.id
            open_now[self._ids[alert.id]] = self._live[self._ids[alert.id]] = alert
        rows: list[dict[str, Any]] = []
        resolved: list[AlertEvent] = []
        for stored_id in sorted(set(self._persisted) - set(open_now)):
            row, event = self._closed(stored_id, now_ms)
            if row is not None:
                rows.append(row)
                if event is not None:
                    resolved.append(event)
        fired = []
        for event in engine_events:  # its resolved events are made above, from what was announced
            if event.event != "fired":
                continue
            stored_id = self._ids[event.alert_id]
            if stored_id not in self._announced:
                self._announced.add(stored_id)
                fired.append(_with_id(event, stored_id))
        for stored_id, alert in open_now.items():
            last = "fired" if stored_id in self._announced else "silenced"
            if self._persisted.get(stored_id) != last:
                self._persisted[stored_id] = last
                rows.append(_row(stored_id, alert, "open", last, now_ms))
        self.counters["fired"] += len(fired)
        self.counters["resolved"] += len(resolved)
        return TickResult(rows, resolved + fired)

    def _closed(self, stored_id: str, now_ms: int) -> tuple[dict[str, Any] | None, AlertEvent | None]:
        """The row (and event) for an alert persisted open that the engine no longer holds open."""
        alert = self._live.pop(stored_id, None)
        if alert is None:  # adopted and not opened again
            key = next((k for k, a in self._adopted.items() if a.row["id"] == stored_id), None)
            if key is None or self._adopted[key].deadline_ms > now_ms:
                return None, None
            row = self._adopted.pop(key).row
            detail = {**(row.get("detail") or {}), "resolved_because": "not breaching since the cloud restarted"}
            row = {**row, "state": "resolved", "resolved_ms": now_ms, "detail": detail}
        else:
            del self._ids[alert.id]
            row = _row(stored_id, alert, "resolved", "resolved", now_ms)
            row["resolved_ms"] = alert.resolved_ms if alert.resolved_ms is not None else now_ms
        row.update(last_event="resolved", last_event_ms=now_ms)
        del self._persisted[stored_id]
        if stored_id not in self._announced:
            return row, None
        self._announced.discard(stored_id)
        event = AlertEvent("resolved", stored_id, row["rule"], row["type"], row["subject"], row["severity"],
                           now_ms, row["opened_ms"], dict(row["detail"]))
        return row, event

    def persist_failed(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """The store did not take ``rows``: open ones are offered again at the next tick.

        (A resolved row that failed is lost to the store, which then shows the alert open until
        the cloud restarts and resolves it as not breaching; its event is delivered regardless.)
        """
        for row in rows:
            if row["state"] == "open":
                self._persisted[row["id"]] = "unsaved"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _duration_ms(rule: Rule) -> int:
    """How long the rule needs to decide: a condition still true after this long has opened again."""
    if isinstance(rule, OfflineRule):
        seconds = rule.after_s
    elif isinstance(rule, (ThresholdRule, BacklogRule)):
        seconds = rule.for_s
    elif isinstance(rule, RateRule):
        seconds = rule.window_s * (rule.baseline_windows + 2)
    else:
        assert isinstance(rule, FirmwareRule)
        seconds = 0
    return round(seconds * 1000) + 1000  # and the tick after it


def _with_id(event: AlertEvent, stored_id: str) -> AlertEvent:
    if event.alert_id == stored_id:
        return event
    return AlertEvent(event.event, stored_id, event.rule, event.type, event.subject, event.severity,
                      event.at_ms, event.opened_ms, dict(event.detail))


def _row(stored_id: str, alert: Alert, state: str, last_event: str, now_ms: int) -> dict[str, Any]:
    return {
        "id": stored_id,
        "rule": alert.rule,
        "type": alert.type,
        "subject": alert.subject,
        "severity": alert.severity,
        "state": state,
        "opened_ms": alert.opened_ms,
        "resolved_ms": None,
        "last_event": last_event,
        "last_event_ms": now_ms,
        "detail": _json_ready(alert.detail),
    }


def _json_ready(detail: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): v if isinstance(v, (str, int, float, bool, type(None))) else str(v) for k, v in detail.items()}


def site_alert_event(row: Mapping[str, Any]) -> AlertEvent:
    """The event to announce for an alert row a gateway raised at its site (``IngestResult.site_alerts``)."""
    return AlertEvent(row["last_event"], row["id"], row["rule"], row["type"], row["subject"], row["severity"],
                      row["last_event_ms"], row["opened_ms"], dict(row["detail"]))
