"""Identity and security commands:

    edgefleet ca init --dir DIR                          (root encrypted with a passphrase, and an intermediate)
    edgefleet enroll-token create --site S --uses 50 --expires 7d
    edgefleet devices preauthorize --serial X --site S [--device-id D] | --csv FILE
    edgefleet devices identities [--site S] | approve ID | revoke ID [--reason R] | quarantine ID | reinstate ID
                      | reprovision ID
    edgefleet users add NAME --role operator [--site S]... ; edgefleet tokens create --user NAME [--role R] [--site S]...
    edgefleet audit [--after N] [--limit N] [--json]

``ca init`` works on files (the root key can then go offline); everything else
talks to the cloud's operator API like the other operator commands
(``--api``/``--token``/``--data-dir``, ``EDGEFLEET_TOKEN``).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import click

from cloud.ops_cli import OperatorError, api_options, devices, format_table, parse_duration

__all__ = ["audit", "ca", "enroll_token", "tokens", "users"]


def _when(ms: int | None) -> str:
    return "-" if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


# -- the CA --------------------------------------------------------------------------------


@click.group()
def ca() -> None:
    """The fleet CA: an offline-capable root and a day-to-day intermediate."""


@ca.command("init")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False), help="Where to write the CA.")
@click.option("--passphrase-env", default="EDGEFLEET_CA_PASSPHRASE", show_default=True,
              help="Environment variable holding the root key's passphrase (asked for if unset).")
@click.option("--name", default="EdgeFleet", show_default=True, help="Name in the CA certificates' subjects.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ca_init(directory: str, passphrase_env: str, name: str, as_json: bool) -> None:
    """Make the root (its key encrypted with a passphrase) and a first intermediate in DIR.

    Start the cloud with --ca-dir DIR. The root key (DIR/root.key) is needed only to make
    the next intermediate: it can then be moved offline.
    """
    from cloud.security.ca import init_ca
    from common.errors import KeyFileError

    passphrase = os.environ.get(passphrase_env) or click.prompt("root CA passphrase", hide_input=True,
                                                                 confirmation_prompt=True)
    try:
        issuing = init_ca(directory, passphrase.encode(), now=dt.datetime.now(dt.UTC), name=name)
    except (KeyFileError, ValueError) as exc:
        raise OperatorError(f"ca init in {directory}: {exc}") from exc
    out = {"dir": directory, "root": os.path.join(directory, "root.crt"),
           "intermediate_expires": issuing.cert.not_valid_after_utc.isoformat(),
           "chain": os.path.join(directory, "chain.pem")}
    if as_json:
        click.echo(json.dumps(out))
    else:
        click.echo(f"fleet CA written to {directory}: root.key (encrypted), root.crt, intermediate (until "
                   f"{out['intermediate_expires']}), chain.pem\nnext: start the cloud with --ca-dir {directory}; "
                   f"give gateways {out['chain']}")


@ca.command("rotate-intermediate")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, exists=True), help="The CA directory.")
@click.option("--passphrase-env", default="EDGEFLEET_CA_PASSPHRASE", show_default=True,
              help="Environment variable holding the root key's passphrase (asked for if unset).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ca_rotate_intermediate(directory: str, passphrase_env: str, as_json: bool) -> None:
    """Make the next intermediate with the root key; certificates of the old one stay valid until it expires.

    Restart the cloud afterwards (it issues with the new one) and give gateways the new DIR/chain.pem.
    """
    from cloud.security.ca import rotate_intermediate
    from common.errors import KeyFileError

    passphrase = os.environ.get(passphrase_env) or click.prompt("root CA passphrase", hide_input=True)
    try:
        issuing = rotate_intermediate(directory, passphrase.encode(), now=dt.datetime.now(dt.UTC))
    except KeyFileError as exc:
        raise OperatorError(f"ca rotate-intermediate in {directory}: {exc}") from exc
    out = {"dir": directory, "intermediate_expires": issuing.cert.not_valid_after_utc.isoformat(),
           "intermediates_trusted": len(issuing.chain.intermediates)}
    click.echo(json.dumps(out) if as_json else
               f"new intermediate until {out['intermediate_expires']}; chain.pem trusts {out['intermediates_trusted']} "
               f"intermediates. Next: restart the cloud, copy {os.path.join(directory, 'chain.pem')} to the gateways")


@ca.command("issue")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, exists=True), help="The CA directory.")
@click.option("--role", type=click.Choice(["gateway", "device"]), default="gateway", show_default=True)
@click.option("--id", "subject_id", required=True, help="The gateway (or device) id to certify.")
@click.option("--site", required=True, help="Its site.")
@click.option("--hw", default="gateway", show_default=True, help="Its hardware model.")
@click.option("--key", "key_path", required=True, help="Its CurveZMQ public key: 40 Z85 characters or its curve.key file.")
@click.option("--days", type=click.FloatRange(min=1), default=365, show_default=True, help="Validity.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the PEM certificate.")
def ca_issue(directory: str, role: str, subject_id: str, site: str, hw: str, key_path: str, days: float, out: str) -> None:
    """Certify a node's CurveZMQ key with the intermediate, e.g. a gateway's (give it as `edgefleet gateway --cert`).

    Devices get theirs by enrolling; this is for gateways, and for devices provisioned by hand.
    If the intermediate key is encrypted, its passphrase is read from EDGEFLEET_CA_INTERMEDIATE_PASSPHRASE.
    """
    from cloud.security.ca import issue_certificate, load_intermediate
    from common.errors import KeyFileError
    from common.fileio import write_atomic
    from common.keys import resolve_public_key

    env = os.environ.get("EDGEFLEET_CA_INTERMEDIATE_PASSPHRASE", "")
    try:
        issuing = load_intermediate(directory, env.encode() if env else None)
        key = resolve_public_key(key_path)
        now = dt.datetime.now(dt.UTC)
        not_after = min(now + dt.timedelta(days=days), issuing.cert.not_valid_after_utc)
        pem = issue_certificate(issuing, subject_id=subject_id, role=role, site=site, hw=hw, curve_public_key=key,
                                not_before=max(now - dt.timedelta(minutes=5), issuing.cert.not_valid_before_utc),
                                not_after=not_after)
    except (KeyFileError, ValueError) as exc:
        raise OperatorError(f"ca issue for {subject_id!r}: {exc}") from exc
    write_atomic(out, pem, 0o644)
    click.echo(f"certificate for {role} {subject_id!r} at site {site!r} until {not_after:%Y-%m-%d} written to {out}")


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
                 json_body={"site": site, "uses": uses, "expires_s": int(_duration(expires))})
    if as_json:
        click.echo(json.dumps(body))
        return
    click.echo(f"claim token for site {body['site']}: {body['uses']} uses until {_when(body['expires_ms'])} UTC "
               f"(shown once; give it to the devices as --claim-token)\n{body['token']}")


@enroll_token.command("revoke")
@click.argument("token_id")
@api_options
def revoke_enroll_token(fetch: Callable[..., Any], as_json: bool, token_id: str) -> None:
    """Revoke a claim token (by its id): devices can no longer enroll with it."""
    body = fetch(f"/v1/enroll-tokens/{quote(token_id, safe='')}/revoke", method="POST")
    click.echo(json.dumps(body) if as_json else f"claim token {token_id} revoked")


@devices.command("preauthorize")
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
    click.echo(json.dumps(body) if as_json else f"preauthorized {body['preauthorized']} serials")


@devices.command("identities")
@click.option("--site", help="Only this site.")
@api_options
def identities(fetch: Callable[..., Any], as_json: bool, site: str | None) -> None:
    """Enrolled and pending devices, with their keys and certificates."""
    rows = fetch("/v1/identities", params={"site": site} if site else None)["identities"]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(format_table(["DEVICE", "SITE", "STATUS", "SERIAL", "HW", "GATEWAY", "CERT EXPIRES (UTC)"],
                            [[r["device_id"], r["site"], r["status"], r["serial"], r["hw"], r["gateway_id"],
                              _when(r["not_after_ms"])] for r in rows]) if rows else "no enrolled or pending devices")


def _device_action(name: str, verb: str, help_text: str, with_reason: bool) -> None:
    @click.argument("device")
    @api_options
    def command(fetch: Callable[..., Any], as_json: bool, device: str, reason: str = "") -> None:
        body = fetch(f"/v1/devices/{quote(device, safe='')}/{name}", method="POST",
                     json_body={"reason": reason} if with_reason else None)
        if as_json:
            click.echo(json.dumps(body))
        elif "version" in body:
            click.echo(f"{device} {verb}: revocation list version {body['version']} "
                       f"({len(body['revoked'])} revoked, {len(body['quarantined'])} quarantined) sent to every gateway")
        else:
            click.echo(f"{device} {verb}")

    command.__doc__ = help_text
    if with_reason:
        command = click.option("--reason", default="", help="Why, for the list and the audit log.")(command)
    devices.command(name)(command)


_device_action("approve", "approved", "Approve a pending device: its next enrollment attempt is accepted.", False)
_device_action("revoke", "revoked", "Revoke a device: every gateway refuses it, also while the cloud is away.", True)
_device_action("quarantine", "quarantined", "Quarantine a device: remediation (updates, config) only.", True)
_device_action("reinstate", "reinstated", "Undo a revocation or quarantine.", False)
_device_action("reprovision", "may re-enroll once with a new key",
               "Allow a device id to enroll once more with a new key (e.g. after a board swap).", False)


@devices.command("revocations")
@api_options
def revocations(fetch: Callable[..., Any], as_json: bool) -> None:
    """The current revocation list: revoked and quarantined devices, and its version."""
    body = fetch("/v1/revocations")
    if as_json:
        click.echo(json.dumps(body))
        return
    rows = [[d, "revoked", why] for d, why in sorted(body["revoked"].items())]
    rows += [[d, "quarantined", why] for d, why in sorted(body["quarantined"].items())]
    click.echo(f"revocation list version {body['version']}")
    if rows:
        click.echo(format_table(["DEVICE", "STATE", "REASON"], rows))


@devices.command("rotate")
@click.argument("device", required=False)
@click.option("--site", help="Every enrolled device of this site.")
@api_options
def rotate(fetch: Callable[..., Any], as_json: bool, device: str | None, site: str | None) -> None:
    """Rotate DEVICE's (or a whole --site's) key and certificate now; the old ones stay valid until they expire."""
    if bool(device) == bool(site):
        raise click.UsageError("give DEVICE or --site SITE (one of them)")
    path = f"/v1/devices/{quote(device, safe='')}/rotate" if device else f"/v1/sites/{quote(site or '', safe='')}/rotate"
    body = fetch(path, method="POST")
    click.echo(json.dumps(body) if as_json else
               f"rotate command sent to {len(body['rotating'])} devices: {', '.join(body['rotating']) or 'none'}")


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
    click.echo(json.dumps(body) if as_json else
               f"user {body['user_id']}: {body['role']} on {', '.join(body['sites']) if body['sites'] else 'every site'}")


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
        "expires_s": int(_duration(expires)) if expires else None})
    click.echo(json.dumps(body) if as_json else
               f"token {body['token_id']} for {body['user_id']} ({body['role']}), shown once:\n{body['token']}")


@tokens.command("revoke")
@click.argument("token_id")
@api_options
def revoke_token(fetch: Callable[..., Any], as_json: bool, token_id: str) -> None:
    """Revoke an API token (by its id, the part after ef_)."""
    body = fetch(f"/v1/tokens/{quote(token_id, safe='')}/revoke", method="POST")
    click.echo(json.dumps(body) if as_json else f"API token {token_id} revoked")


# -- audit --------------------------------------------------------------------------------


@click.command()
@click.option("--after", type=int, default=-1, help="Only records after this sequence number.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@api_options
def audit(fetch: Callable[..., Any], as_json: bool, after: int, limit: int) -> None:
    """The audit log: every mutating action, allowed or refused; the hash chain is verified by the cloud."""
    body = fetch("/v1/audit", params={"after": after, "limit": limit})
    if as_json:
        click.echo(json.dumps(body))
        return
    rows = [[r["seq"], _when(r["when_ms"]), r["who"], r["action"], r["target"], r["result"], r["source"], r["detail"]]
            for r in body["records"]]
    click.echo(format_table(["SEQ", "WHEN (UTC)", "WHO", "ACTION", "TARGET", "RESULT", "FROM", "DETAIL"], rows)
               if rows else "no audit records")
    click.echo(f"chain of {body['total']} records " + ("verified" if body["verified"] else f"BROKEN: {body['problem']}"))
