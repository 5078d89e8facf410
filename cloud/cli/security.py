"""Identity and security commands:

    edgefleet enroll-token create --site S --uses 50 --expires 7d
    edgefleet devices preauthorize --serial X --site S [--device-id D] | --csv FILE
    edgefleet devices identities [--site S] | approve ID | revoke ID [--reason R] | quarantine ID | reinstate ID
                      | reprovision ID
    edgefleet users add NAME --role operator [--site S]... ; edgefleet tokens create --user NAME [--role R] [--site S]...
    edgefleet audit [--after N] [--limit N] [--json]

They talk to the cloud's operator API like the other operator commands
(``--api``/``--token``/``--data-dir``, ``EDGEFLEET_TOKEN``). ``DEVICE_COMMANDS`` are plain
commands: ``cloud.cli.devices`` builds the ``devices`` group with them. The fleet CA's
commands work on files, not the API: ``cloud.cli.ca``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from typing import Any

import click

from cloud.cli.helpers import OperatorError, api_options, duration_option, emit, format_table, q, when

__all__ = ["DEVICE_COMMANDS", "audit", "enroll_token", "tokens", "users"]


# -- claims --------------------------------------------------------------------------------


@click.group("enroll-token")
def enroll_token() -> None:
    """Site claim tokens for zero-touch enrollment."""


@enroll_token.command("create")
@click.option("--site", required=True, help="The site devices enrolling with this token join.")
@click.option("--uses", type=click.IntRange(1, 1_000_000), default=50, show_default=True, help="How many devices.")
@click.option("--expires", default="7d", show_default=True, help="Valid for: 90s, 15m, 1h, 7d.")
@api_options
def create_enroll_token(fetch: Callable[..., Any], as_json: bool, site: str, uses: int, expires: str) -> None:
    """Create a claim token; it is shown once (only its hash is stored)."""
    body = fetch("/v1/enroll-tokens", method="POST",
                 json_body={"site": site, "uses": uses, "expires_s": int(duration_option(expires))})
    emit(body, as_json, lambda b: f"claim token for site {b['site']}: {b['uses']} uses until {when(b['expires_ms'])} "
                                  f"UTC (shown once; give it to the devices as --claim-token)\n{b['token']}")


@enroll_token.command("revoke")
@click.argument("token_id")
@api_options
def revoke_enroll_token(fetch: Callable[..., Any], as_json: bool, token_id: str) -> None:
    """Revoke a claim token (by its id): devices can no longer enroll with it."""
    emit(fetch(f"/v1/enroll-tokens/{q(token_id)}/revoke", method="POST"), as_json, f"claim token {token_id} revoked")


@click.command("preauthorize")
@click.option("--serial", help="Factory serial number to admit.")
@click.option("--site", help="The site it belongs to.")
@click.option("--device-id", help="Only this device id may claim the serial.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, exists=True),
              help="Import many: a CSV with columns serial,site[,device_id] (a header row is fine).")
@api_options
def preauthorize(fetch: Callable[..., Any], as_json: bool, serial: str | None, site: str | None,
                 device_id: str | None, csv_path: str | None) -> None:
    """Register factory serials: devices with them enroll at their site without a claim token."""
    entries: list[dict[str, Any]] = []
    if csv_path:
        with open(csv_path, newline="") as f:
            for n, row in enumerate(csv.reader(f), 1):
                if not row or row[0].strip().lower() == "serial" or row[0].startswith("#"):
                    continue
                if len(row) < 2 or not row[0].strip() or not row[1].strip():
                    raise OperatorError(f"{csv_path}:{n}: expected serial,site[,device_id], got {row!r}")
                entries.append({"serial": row[0].strip(), "site": row[1].strip(),
                                "device_id": row[2].strip() if len(row) > 2 and row[2].strip() else None})
    if serial or site:
        if not (serial and site):
            raise click.UsageError("give both --serial and --site (or --csv FILE)")
        entries.append({"serial": serial, "site": site, "device_id": device_id})
    if not entries:
        raise click.UsageError("nothing to preauthorize: give --serial and --site, or --csv FILE")
    body = fetch("/v1/preauthorizations", method="POST", json_body={"devices": entries})
    emit(body, as_json, lambda b: f"preauthorized {b['preauthorized']} serials")


@click.command("identities")
@click.option("--site", help="Only this site.")
@api_options
def identities(fetch: Callable[..., Any], as_json: bool, site: str | None) -> None:
    """Enrolled and pending devices, with their keys and certificates."""
    rows = fetch("/v1/identities", params={"site": site} if site else None)["identities"]
    emit(rows, as_json, lambda rows: format_table(
        ["DEVICE", "SITE", "STATUS", "SERIAL", "HW", "GATEWAY", "CERT EXPIRES (UTC)"],
        [[r["device_id"], r["site"], r["status"], r["serial"], r["hw"], r["gateway_id"], when(r["not_after_ms"])]
         for r in rows],
    ) if rows else "no enrolled or pending devices")


def _device_action(name: str, verb: str, help_text: str, with_reason: bool) -> click.Command:
    @click.argument("device")
    @api_options
    def command(fetch: Callable[..., Any], as_json: bool, device: str, reason: str = "") -> None:
        body = fetch(f"/v1/devices/{q(device)}/{name}", method="POST",
                     json_body={"reason": reason} if with_reason else None)

        def human(b: dict[str, Any]) -> str:
            if "version" not in b:
                return f"{device} {verb}"
            return (f"{device} {verb}: revocation list version {b['version']} ({len(b['revoked'])} revoked, "
                    f"{len(b['quarantined'])} quarantined) sent to every gateway")

        emit(body, as_json, human)

    command.__doc__ = help_text
    if with_reason:
        command = click.option("--reason", default="", help="Why, for the list and the audit log.")(command)
    return click.command(name)(command)


approve = _device_action("approve", "approved", "Approve a pending device: its next enrollment attempt is accepted.", False)
revoke = _device_action("revoke", "revoked", "Revoke a device: every gateway refuses it, also while the cloud is away.",
                        True)
quarantine = _device_action("quarantine", "quarantined", "Quarantine a device: remediation (updates, config) only.", True)
reinstate = _device_action("reinstate", "reinstated", "Undo a revocation or quarantine.", False)
reprovision = _device_action("reprovision", "may re-enroll once with a new key",
                             "Allow a device id to enroll once more with a new key (e.g. after a board swap).", False)


@click.command("revocations")
@api_options
def revocations(fetch: Callable[..., Any], as_json: bool) -> None:
    """The current revocation list: revoked and quarantined devices, and its version."""
    emit(fetch("/v1/revocations"), as_json, _revocations_text)


def _revocations_text(body: dict[str, Any]) -> str:
    rows = [[d, "revoked", why] for d, why in sorted(body["revoked"].items())]
    rows += [[d, "quarantined", why] for d, why in sorted(body["quarantined"].items())]
    head = f"revocation list version {body['version']}"
    return head + ("\n" + format_table(["DEVICE", "STATE", "REASON"], rows) if rows else "")


@click.command("rotate")
@click.argument("device", required=False)
@click.option("--site", help="Every enrolled device of this site.")
@api_options
def rotate(fetch: Callable[..., Any], as_json: bool, device: str | None, site: str | None) -> None:
    """Rotate DEVICE's (or a whole --site's) key and certificate now; the old ones stay valid until they expire."""
    if bool(device) == bool(site):
        raise click.UsageError("give DEVICE or --site SITE (one of them)")
    path = f"/v1/devices/{q(device)}/rotate" if device else f"/v1/sites/{q(site or '')}/rotate"
    emit(fetch(path, method="POST"), as_json,
         lambda b: f"rotate command sent to {len(b['rotating'])} devices: {', '.join(b['rotating']) or 'none'}")


DEVICE_COMMANDS: tuple[click.Command, ...] = (
    preauthorize, identities, approve, revoke, quarantine, reinstate, reprovision, revocations, rotate,
)
"""The security feature's commands on devices, for ``edgefleet devices`` (``cloud.cli.devices``)."""


# -- operators ----------------------------------------------------------------------------


@click.group()
def users() -> None:
    """Operators: roles viewer < operator < release-manager < admin, optionally scoped to sites."""


@users.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(["viewer", "operator", "release-manager", "admin"]))
@click.option("--site", "sites", multiple=True, help="Scope to this site (repeat); none: every site.")
@api_options
def add_user(fetch: Callable[..., Any], as_json: bool, name: str, role: str, sites: tuple[str, ...]) -> None:
    """Add (or replace) an operator."""
    body = fetch("/v1/users", method="POST", json_body={"user_id": name, "role": role, "sites": list(sites) or None})
    emit(body, as_json, lambda b: f"user {b['user_id']}: {b['role']} on "
                                  f"{', '.join(b['sites']) if b['sites'] else 'every site'}")


@click.group()
def tokens() -> None:
    """API tokens of operators (stored hashed; shown once)."""


@tokens.command("create")
@click.option("--user", required=True, help="The operator the token acts for.")
@click.option("--role", type=click.Choice(["viewer", "operator", "release-manager", "admin"]), help="Lower than the user's.")
@click.option("--site", "sites", multiple=True, help="Narrow to these sites (repeat).")
@click.option("--expires", help="Valid for: 1h, 30d (default: until revoked).")
@api_options
def create_token(fetch: Callable[..., Any], as_json: bool, user: str, role: str | None, sites: tuple[str, ...],
                 expires: str | None) -> None:
    """Create an API token; use it as --token or EDGEFLEET_TOKEN."""
    body = fetch("/v1/tokens", method="POST", json_body={
        "user_id": user, "role": role, "sites": list(sites) or None,
        "expires_s": int(duration_option(expires)) if expires else None})
    emit(body, as_json, lambda b: f"token {b['token_id']} for {b['user_id']} ({b['role']}), shown once:\n{b['token']}")


@tokens.command("revoke")
@click.argument("token_id")
@api_options
def revoke_token(fetch: Callable[..., Any], as_json: bool, token_id: str) -> None:
    """Revoke an API token (by its id, the part after ef_)."""
    emit(fetch(f"/v1/tokens/{q(token_id)}/revoke", method="POST"), as_json, f"API token {token_id} revoked")


# -- audit --------------------------------------------------------------------------------


@click.command()
@click.option("--after", type=int, default=-1, help="Only records after this sequence number.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@api_options
def audit(fetch: Callable[..., Any], as_json: bool, after: int, limit: int) -> None:
    """The audit log: every mutating action, allowed or refused; the hash chain is verified by the cloud."""
    emit(fetch("/v1/audit", params={"after": after, "limit": limit}), as_json, _audit_text)


def _audit_text(body: dict[str, Any]) -> str:
    rows = [[r["seq"], when(r["when_ms"]), r["who"], r["action"], r["target"], r["result"], r["source"], r["detail"]]
            for r in body["records"]]
    shown = format_table(["SEQ", "WHEN (UTC)", "WHO", "ACTION", "TARGET", "RESULT", "FROM", "DETAIL"], rows) \
        if rows else "no audit records"
    chain = "verified" if body["verified"] else f"BROKEN: {body['problem']}"
    return f"{shown}\nchain of {body['total']} records {chain}"
