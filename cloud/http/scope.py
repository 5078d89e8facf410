"""Which action and which site every operator route acts on, and a scoped principal's share of a list.

``ROUTES`` names every route of the operator API (its method and path template, as the OpenAPI document
spells them) with a ``Rule``: the action (``cloud.security.rbac.PERMISSIONS``) and where its site comes from.
``tests/cloud/http/test_route_scope.py`` enumerates the app's routes, so a new route without a rule fails the
suite, and runs every route as a principal of site A against data of site B.

    "device"   the device named by ``{device_id}``; an unknown device has no site, so a scoped principal is refused
    "site"     the site named by ``{site}``
    "list"     a list or read: a site or device it names (``?site=``, ``?device=``) must be within the principal's
               sites; the rows it answers are those of the principal's sites only (``SiteScope``)
    "global"   fleet-wide (users, tokens, releases, rollouts, groups, config layers, the audit log, silences):
               an unscoped principal only, 403 for a scoped one
    "unsited"  nothing of any site (who the caller is, the firmware catalog): any principal with the role
    "self"     the route finds the site in its body and checks it itself (``cloud.http.security``,
               ``cloud.http.ddi``); ``cloud.http.access`` checks the role first, before the body is read

Deny by default: a request that matches no rule is ``api.unmapped`` (admin) fleet-wide.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import fastapi

__all__ = ["ROUTES", "Rule", "SiteScope", "match", "scope_of", "site_scope"]

SiteRule = Literal["device", "site", "list", "global", "unsited", "self"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Rule:
    action: str
    site: SiteRule


_D, _S, _L, _G, _U, _SELF = "device", "site", "list", "global", "unsited", "self"

ROUTES: dict[tuple[str, str], Rule] = {
    ("GET", "/v1/me"): Rule("devices.list", _U),
    ("GET", "/v1/devices"): Rule("devices.list", _L),
    ("GET", "/v1/sites"): Rule("sites.list", _L),
    ("GET", "/v1/sites/{site}"): Rule("sites.list", _S),
    ("GET", "/v1/telemetry/summary"): Rule("telemetry.read", _L),
    ("GET", "/v1/gaps"): Rule("telemetry.read", _L),
    ("GET", "/v1/updates"): Rule("telemetry.read", _L),
    ("POST", "/v1/devices/{device_id}/commands"): Rule("devices.command", _D),
    ("GET", "/v1/devices/{device_id}/commands"): Rule("devices.show", _D),
    ("GET", "/v1/alerts"): Rule("devices.list", _L),
    ("POST", "/v1/alerts/{alert_id}/ack"): Rule("alerts.ack", _G),
    ("POST", "/v1/silences"): Rule("alerts.silence", _G),
    ("GET", "/v1/silences"): Rule("devices.list", _L),
    ("GET", "/v1/fleet/devices"): Rule("devices.list", _L),
    ("POST", "/v1/devices/{device_id}/tags"): Rule("devices.tag", _D),
    ("POST", "/v1/devices/{device_id}/state"): Rule("devices.set_state", _D),
    ("GET", "/v1/devices/{device_id}/history"): Rule("devices.show", _D),
    ("GET", "/v1/devices/{device_id}/logs"): Rule("telemetry.read", _D),
    ("GET", "/v1/ghosts"): Rule("devices.list", _L),
    ("GET", "/v1/groups"): Rule("devices.list", _G),
    ("POST", "/v1/groups"): Rule("groups.manage", _G),
    ("DELETE", "/v1/groups/{name}"): Rule("groups.manage", _G),
    ("POST", "/v1/groups/{name}/members"): Rule("groups.manage", _G),
    ("GET", "/v1/config/layers"): Rule("devices.list", _G),
    ("POST", "/v1/config/set"): Rule("config.set", _G),
    ("GET", "/v1/config/explain/{device_id}"): Rule("devices.show", _D),
    ("GET", "/v1/config/status"): Rule("devices.list", _L),
    ("GET", "/v1/metrics"): Rule("telemetry.read", _L),
    ("GET", "/v1/fleet/sites"): Rule("sites.list", _L),
    ("POST", "/v1/releases"): Rule("release.create", _G),
    ("GET", "/v1/releases"): Rule("devices.list", _U),
    ("POST", "/v1/releases/{version}/signature"): Rule("release.create", _G),
    ("GET", "/v1/releases/{version}"): Rule("devices.list", _U),
    ("POST", "/v1/enroll-tokens"): Rule("enroll_tokens.create", _SELF),
    ("POST", "/v1/enroll-tokens/{token_id}/revoke"): Rule("enroll_tokens.revoke", _SELF),
    ("POST", "/v1/preauthorizations"): Rule("devices.preauthorize", _SELF),
    ("GET", "/v1/identities"): Rule("devices.list", _L),
    ("POST", "/v1/devices/{device_id}/approve"): Rule("devices.approve", _SELF),
    ("POST", "/v1/devices/{device_id}/reject"): Rule("devices.approve", _SELF),
    ("POST", "/v1/devices/{device_id}/revoke"): Rule("devices.revoke", _SELF),
    ("POST", "/v1/devices/{device_id}/quarantine"): Rule("devices.quarantine", _SELF),
    ("POST", "/v1/devices/{device_id}/reinstate"): Rule("devices.revoke", _SELF),
    ("POST", "/v1/devices/{device_id}/reprovision"): Rule("devices.approve", _SELF),
    ("POST", "/v1/devices/{device_id}/rotate"): Rule("devices.rotate", _SELF),
    ("POST", "/v1/sites/{site}/rotate"): Rule("devices.rotate", _SELF),
    ("GET", "/v1/revocations"): Rule("devices.list", _L),
    ("GET", "/v1/audit"): Rule("audit.read", _G),
    ("POST", "/v1/users"): Rule("users.manage", _SELF),
    ("POST", "/v1/tokens"): Rule("tokens.manage", _SELF),
    ("POST", "/v1/tokens/{token_id}/revoke"): Rule("tokens.manage", _SELF),
    ("POST", "/v1/ddi-tokens"): Rule("ddi_tokens.issue", _SELF),
    ("GET", "/v1/ddi-tokens"): Rule("devices.list", _L),
    ("POST", "/v1/ddi-tokens/{device_id}/revoke"): Rule("ddi_tokens.revoke", _SELF),
    ("POST", "/v1/rollouts"): Rule("rollout.start", _G),
    ("GET", "/v1/rollouts"): Rule("devices.list", _L),
    ("POST", "/v1/rollouts/dry-run"): Rule("rollout.start", _G),
    ("GET", "/v1/rollouts/{rollout_id}"): Rule("devices.list", _L),
    ("POST", "/v1/rollouts/{rollout_id}/{action}"): Rule("rollout.abort", _G),
    ("GET", "/metrics"): Rule("metrics.read", _G),
}


def _compile(template: str) -> re.Pattern[str]:
    # a device id may hold a '/': a parameter is one segment or more, and a literal tail still has to match
    return re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>.+?)", re.escape(template)))


_EXACT = {key: rule for key, rule in ROUTES.items() if "{" not in key[1]}
_PATTERNS = sorted(((method, _compile(path), path, rule) for (method, path), rule in ROUTES.items() if "{" in path),
                   key=lambda row: (-row[2].count("/"), -len(row[2])))  # the longest template first


def match(method: str, path: str) -> tuple[str, Rule, dict[str, str]] | None:
    """The template, rule and path parameters of a request, or None for a route the table does not name."""
    rule = _EXACT.get((method, path))
    if rule is not None:
        return path, rule, {}
    for m, pattern, template, rule in _PATTERNS:
        if m == method and (found := pattern.fullmatch(path)):
            if template == "/v1/rollouts/{rollout_id}/{action}":
                if found["action"] not in ("pause", "resume", "abort"):
                    continue
                if found["action"] == "pause":  # audited as what it is; resume and abort share rollout.abort
                    rule = Rule("rollout.pause", rule.site)
            return template, rule, found.groupdict()
    return None


def scope_of(request: fastapi.Request) -> frozenset[str] | None:
    """The caller's sites (None: every site; also with no access check installed, the bootstrap token)."""
    principal = getattr(request.state, "principal", None)
    return None if principal is None else principal.sites


@dataclass(frozen=True, slots=True)
class SiteScope:
    """A scoped principal's share of a list: ``keep`` what is of its sites. ``sites=None`` keeps everything."""

    sites: frozenset[str] | None
    site_of: dict[str, str]  # device and gateway ids -> site (``SecurityRecords.site_map``), when rows name no site

    @property
    def everything(self) -> bool:
        return self.sites is None

    def has(self, site: str | None) -> bool:
        return self.sites is None or (site is not None and site in self.sites)

    def has_id(self, ident: str | None) -> bool:
        """A device or gateway id of these sites."""
        return self.sites is None or (ident is not None and self.site_of.get(ident) in self.sites)

    def keep(self, rows: Iterable[T], site: Callable[[T], str | None]) -> list[T]:
        return list(rows) if self.sites is None else [r for r in rows if self.has(site(r))]

    def keep_ids(self, rows: Iterable[T], ident: Callable[[T], str | None]) -> list[T]:
        return list(rows) if self.sites is None else [r for r in rows if self.has_id(ident(r))]

    def rollout(self, view: dict[str, Any]) -> dict[str, Any] | None:
        """A rollout as the scope sees it: its devices and per-site progress of these sites (None: none of them)."""
        if self.sites is None or "progress" not in view:
            return view
        touched = {s for stage in view["progress"].values() for s in stage} | {d["site"] for d in view["devices"]}
        if not touched & self.sites:
            return None
        out = dict(view)
        out["devices"] = [d for d in view["devices"] if d["site"] in self.sites]
        out["progress"] = {st: {s: v for s, v in sites.items() if s in self.sites} for st, sites in view["progress"].items()}
        totals: dict[str, int] = {}
        for d in out["devices"]:
            totals[d["state"]] = totals.get(d["state"], 0) + 1
        out["totals"] = totals
        return out


async def site_scope(request: fastapi.Request, ctx: Any, *, ids: bool = False) -> SiteScope:
    """The request's ``SiteScope``; ``ids``: with the site of every device and gateway (one store read)."""
    sites = scope_of(request)
    site_of = await ctx.call(ctx.store.security.site_map) if ids and sites is not None else {}
    return SiteScope(sites, site_of)

