"""A sans-IO alert engine: the cloud runs it for the fleet, a gateway for its site while its uplink is down.

Drivers feed observations, then call ``tick(now_ms)`` and deliver the events it
returns; the engine never reads a clock and does no I/O. Times are integer
milliseconds (``now_ms``); rule durations are seconds, as operators write them.

Rules (``name`` is the operator's id for the rule and the first part of an alert id; they are
declared in ``common.alert_rules`` and re-exported here)::

    OfflineRule     a subject not seen for longer than after_s          (observe_seen)
    ThresholdRule   a metric's latest value OP threshold for for_s      (observe_metric; ``metrics`` names them)
    FirmwareRule    firmware behind the newest release by >= behind     (observe_firmware)
    BacklogRule     a gateway's backlog above percent of its quota      (observe_backlog)
    RateRule        a device's messages in the last window vs the mean  (observe_message[s])
                    of its previous baseline_windows, by factor, up or down

Every ``tick`` evaluates every rule and compares the breaching (rule, subject)
pairs with the open alerts: a new pair opens an alert (``fired``), an open alert
whose pair no longer breaches closes (``resolved``). There is one open alert per
(rule, subject), so a condition that persists fires once. Alert ids are
``rule:subject:opened_ms``: the same inputs give the same ids (simulations and
tests compare them), and a condition that clears and returns gets a new id.

Quieting, from strongest to weakest:

* ``suppressed(subject)`` (e.g. devices in maintenance): no new alert opens for the
  subject; an alert already open stays open and resolves normally.
* ``silence(target, until_ms)``, target a rule name or a subject: alerts open and
  are listed (``silenced``) but their ``fired`` event is held; if one is still open
  when the silence ends its ``fired`` goes out then, one that closes while silenced
  emits nothing. An alert already announced before the silence still announces its
  ``resolved``: a silence mutes new noise, not the all-clear.
* ``ack(alert_id, who)``: the alert is marked as being handled; events are unchanged.

Which subjects exist is what was observed: a device never seen cannot be offline
(the cloud feeds ``observe_seen(device, enrolled_ms)`` at enrollment so a device
that never speaks becomes a ghost). ``forget(subject)`` drops a retired subject:
its open alerts resolve at the next tick, and observations of it from then on are
ignored (one read before the retirement and fed after it must not bring it back).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.alert_rules import (
    _OPS,
    BacklogRule,
    FirmwareRule,
    OfflineRule,
    RateRule,
    Rule,
    ThresholdRule,
    parse_rules,
)
from common.errors import AlertNotFound, ConfigError

__all__ = [
    "Alert",
    "AlertEngine",
    "AlertEvent",
    "BacklogRule",
    "FirmwareRule",
    "OfflineRule",
    "RateRule",
    "Rule",
    "ThresholdRule",
    "parse_rules",
]

@dataclass
class Alert:
    """One alert, open or resolved. ``notified``: its ``fired`` event has gone out."""

    id: str
    rule: str
    type: str
    subject: str
    severity: str
    opened_ms: int
    detail: dict[str, Any]
    notified: bool = False
    silenced: bool = False
    acked_by: str | None = None
    acked_ms: int | None = None
    resolved_ms: int | None = None


@dataclass(frozen=True)
class AlertEvent:
    event: str  # "fired" or "resolved"
    alert_id: str
    rule: str
    type: str
    subject: str
    severity: str
    at_ms: int  # when this event was produced
    opened_ms: int
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the webhook body)."""
        return {
            "event": self.event,
            "alert_id": self.alert_id,
            "rule": self.rule,
            "type": self.type,
            "subject": self.subject,
            "severity": self.severity,
            "at_ms": self.at_ms,
            "opened_ms": self.opened_ms,
            "detail": dict(self.detail),
        }


class AlertEngine:
    """Observations in, ``fired``/``resolved`` events out of ``tick``; no clock, no I/O. Its rules are
    fixed when it is made."""

    def __init__(
        self,
        rules: Iterable[Rule],
        *,
        suppressed: Callable[[str], bool] | Collection[str] = frozenset(),
        history: int = 1000,
    ) -> None:
        self.rules: list[Rule] = list(rules)
        names = [r.name for r in self.rules]
        for name in names:
            if names.count(name) > 1:
                raise ConfigError(f"alert rule name {name!r} is used by more than one rule")
        self._suppressed = suppressed if callable(suppressed) else frozenset(suppressed).__contains__
        # metric -> (rule name, comparison, threshold) of the threshold rules on it: what observe_metric judges
        self._thresholds: dict[str, list[tuple[str, Callable[[float, float], bool], float]]] = {}
        for r in self.rules:
            if isinstance(r, ThresholdRule):
                self._thresholds.setdefault(r.metric, []).append((r.name, _OPS[r.op], r.threshold))
        self._seen: dict[str, tuple[str, int]] = {}  # subject -> (kind, last seen ms)
        self._latest: dict[tuple[str, str], float] = {}  # (device, metric) -> latest value
        self._since: dict[tuple[str, str], int] = {}  # (rule, subject) -> breaching since ms
        self._firmware: dict[str, dict[str, Any]] = {}  # device -> detail, with "behind" or None
        self._backlog: dict[str, tuple[int, int]] = {}  # gateway -> (used, quota)
        self._counts: dict[tuple[str, str], dict[int, int]] = {}  # (rate rule, device) -> window -> count
        self._first: dict[tuple[str, str], int] = {}  # (rate rule, device) -> window of the first message
        self._silences: dict[str, int] = {}  # rule name or subject -> until ms
        self._open: dict[tuple[str, str], Alert] = {}
        self._resolved: deque[Alert] = deque(maxlen=history)
        self._forgotten: set[str] = set()  # retired subjects: observations of them are ignored

    # --- observations -------------------------------------------------------------------------

    def observe_seen(self, subject: str, now_ms: int, *, kind: str = "device") -> None:
        """``subject`` was heard from at ``now_ms`` (call for every message, connect or enrollment)."""
        if subject in self._forgotten:
            return
        old = self._seen.get(subject)
        self._seen[subject] = (kind, now_ms if old is None else max(old[1], now_ms))

    def observe_metric(self, device: str, metric: str, value: float, now_ms: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return  # not a number (or NaN): nothing to compare
        if device in self._forgotten:
            return
        rules = self._thresholds.get(metric)
        if not rules:
            return  # no rule reads this metric: nothing is kept of it (a device may send any number of names)
        self._latest[(device, metric)] = value
        for name, compare, threshold in rules:
            self._breach(name, device, compare(value, threshold), now_ms)

    def observe_firmware(self, device: str, version: str, releases: Collection[str]) -> None:
        """``releases`` oldest first; a version not in the list is not judged."""
        if device in self._forgotten:
            return
        ordered = list(releases)
        behind = len(ordered) - 1 - ordered.index(version) if version in ordered else None
        latest = ordered[-1] if ordered else None
        self._firmware[device] = {"version": version, "latest": latest, "behind": behind}

    def observe_backlog(self, gateway: str, used: int, quota: int, now_ms: int) -> None:
        if gateway in self._forgotten:
            return
        self._backlog[gateway] = (used, quota)
        for rule in self.rules:
            if isinstance(rule, BacklogRule):
                over = quota > 0 and used * 100 > rule.percent * quota
                self._breach(rule.name, gateway, over, now_ms)

    def observe_message(self, device: str, now_ms: int) -> None:
        self.observe_messages(device, 1, now_ms)

    def observe_messages(self, device: str, count: int, now_ms: int) -> None:
        """``count`` messages from ``device`` at ``now_ms`` (a batch): as ``count`` calls of ``observe_message``."""
        if count <= 0 or device in self._forgotten:
            return
        for rule in self.rules:
            if isinstance(rule, RateRule):
                key = (rule.name, device)
                window = now_ms // rule.window_ms
                counts = self._counts.setdefault(key, {})
                counts[window] = counts.get(window, 0) + count
                self._first.setdefault(key, window)
                for old in [w for w in counts if w < window - rule.baseline_windows - 2]:
                    del counts[old]

    @property
    def metrics(self) -> frozenset[str]:
        """The metrics some rule names: ``observe_metric`` of any other changes no alert."""
        return frozenset(self._thresholds)

    def forget(self, subject: str) -> None:
        """Drop everything known about ``subject`` (retired) and ignore what is observed of it from now on
        (retirement is final); its open alerts resolve at the next tick."""
        self._forgotten.add(subject)
        self._seen.pop(subject, None)
        self._firmware.pop(subject, None)
        self._backlog.pop(subject, None)
        self._latest = {k: v for k, v in self._latest.items() if k[0] != subject}  # (device, metric)
        self._since = {k: v for k, v in self._since.items() if k[1] != subject}  # (rule, subject)
        self._counts = {k: v for k, v in self._counts.items() if k[1] != subject}
        self._first = {k: v for k, v in self._first.items() if k[1] != subject}

    def _breach(self, rule: str, subject: str, breaching: bool, now_ms: int) -> None:
        if breaching:
            self._since.setdefault((rule, subject), now_ms)
        else:
            self._since.pop((rule, subject), None)

    # --- evaluation -----------------------------------------------------------------------------

    def _active(self, now_ms: int) -> dict[tuple[str, str], tuple[Rule, dict[str, Any]]]:
        """Every breaching (rule, subject) with its detail."""
        out: dict[tuple[str, str], tuple[Rule, dict[str, Any]]] = {}
        for rule in self.rules:
            if isinstance(rule, OfflineRule):
                for subject, (kind, last) in self._seen.items():
                    if kind == rule.kind and now_ms - last > rule.after_s * 1000:
                        detail = {"last_seen_ms": last, "silent_s": (now_ms - last) / 1000}
                        out[(rule.name, subject)] = (rule, detail)
            elif isinstance(rule, (ThresholdRule, BacklogRule)):
                for (name, subject), since in self._since.items():
                    if name == rule.name and now_ms - since >= rule.for_s * 1000:
                        out[(rule.name, subject)] = (rule, self._detail(rule, subject, since))
            elif isinstance(rule, FirmwareRule):
                for device, fw in self._firmware.items():
                    if fw["behind"] is not None and fw["behind"] >= rule.behind:
                        out[(rule.name, device)] = (rule, dict(fw))
            else:
                for (name, device), counts in self._counts.items():
                    if name == rule.name and (detail := self._rate(rule, device, counts, now_ms)) is not None:
                        out[(rule.name, device)] = (rule, detail)
        return out

    def _detail(self, rule: ThresholdRule | BacklogRule, subject: str, since: int) -> dict[str, Any]:
        if isinstance(rule, ThresholdRule):
            value = self._latest.get((subject, rule.metric))
            return {
                "metric": rule.metric,
                "value": value,
                "op": rule.op,
                "threshold": rule.threshold,
                "since_ms": since,
            }
        used, quota = self._backlog[subject]
        return {"used": used, "quota": quota, "percent": round(used * 100 / quota, 2), "since_ms": since}

    def _rate(self, rule: RateRule, device: str, counts: dict[int, int], now_ms: int) -> dict[str, Any] | None:
        last = now_ms // rule.window_ms - 1  # the last complete window
        first_baseline = last - rule.baseline_windows
        if self._first[(rule.name, device)] > first_baseline:
            return None  # not heard from for the whole baseline yet
        total = sum(counts.get(w, 0) for w in range(first_baseline, last))
        if total < rule.min_baseline:
            return None  # too few messages to call anything an anomaly
        mean = total / rule.baseline_windows
        rate = counts.get(last, 0)
        if rate > mean * rule.factor and rule.direction in ("high", "both"):
            direction = "high"
        elif rate < mean / rule.factor and rule.direction in ("low", "both"):
            direction = "low"
        else:
            return None
        mean = round(mean, 3)
        return {"direction": direction, "count": rate, "baseline_mean": mean, "window_s": rule.window_s}

    def _is_silenced(self, rule: str, subject: str, now_ms: int) -> bool:
        return any(self._silences.get(t, now_ms) > now_ms for t in (rule, subject))

    def tick(self, now_ms: int) -> list[AlertEvent]:
        """Evaluate every rule at ``now_ms``; resolved events first, then fired, each by (rule, subject)."""
        self._silences = {t: until for t, until in self._silences.items() if until > now_ms}
        active = self._active(now_ms)
        resolved, fired = [], []
        for key in sorted(self._open):
            if key not in active:
                alert = self._open.pop(key)
                alert.resolved_ms = now_ms
                self._resolved.append(alert)
                if alert.notified:
                    resolved.append(_event("resolved", alert, now_ms))
        for key in sorted(active):
            rule, detail = active[key]
            alert = self._open.get(key)
            if alert is None:
                if self._suppressed(key[1]):
                    continue
                alert = self._new_alert(rule, key[1], detail, now_ms)
                self._open[key] = alert
            else:
                alert.detail = detail
            alert.silenced = self._is_silenced(*key, now_ms)
            if not alert.notified and not alert.silenced:
                alert.notified = True
                fired.append(_event("fired", alert, now_ms))
        return resolved + fired

    def _new_alert(self, rule: Rule, subject: str, detail: dict[str, Any], now_ms: int) -> Alert:
        alert_id = f"{rule.name}:{subject}:{now_ms}"
        if any(a.id == alert_id for a in self._resolved):  # closed and reopened within one ms
            n = 2
            while any(a.id == f"{alert_id}-{n}" for a in self._resolved):
                n += 1
            alert_id = f"{alert_id}-{n}"
        return Alert(alert_id, rule.name, rule.type, subject, rule.severity, now_ms, detail)

    # --- operators --------------------------------------------------------------------------------

    def get(self, alert_id: str) -> Alert:
        for alert in (*self._open.values(), *self._resolved):
            if alert.id == alert_id:
                return alert
        raise AlertNotFound(alert_id)

    def ack(self, alert_id: str, who: str, now_ms: int | None = None) -> Alert:
        """Mark an alert (open or recently resolved) as being handled by ``who``."""
        alert = self.get(alert_id)
        alert.acked_by, alert.acked_ms = who, now_ms
        return alert

    def silence(self, target: str, until_ms: int) -> None:
        """Mute events of alerts whose rule name or subject is ``target`` until ``until_ms``."""
        self._silences[target] = until_ms

    def unsilence(self, target: str) -> None:
        self._silences.pop(target, None)

    @property
    def silences(self) -> dict[str, int]:
        return dict(self._silences)

    def open_alerts(self) -> list[Alert]:
        return [self._open[k] for k in sorted(self._open)]

    def resolved_alerts(self) -> list[Alert]:
        """The most recently resolved alerts (bounded by ``history``), oldest first."""
        return list(self._resolved)


def _event(kind: str, alert: Alert, now_ms: int) -> AlertEvent:
    return AlertEvent(
        event=kind,
        alert_id=alert.id,
        rule=alert.rule,
        type=alert.type,
        subject=alert.subject,
        severity=alert.severity,
        at_ms=now_ms,
        opened_ms=alert.opened_ms,
        detail=dict(alert.detail),
    )
