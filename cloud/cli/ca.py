"""``edgefleet ca init | rotate-intermediate | issue``: the fleet CA, on files.

    edgefleet ca init --dir DIR                 (root encrypted with a passphrase, and an intermediate)
    edgefleet ca rotate-intermediate --dir DIR  (the next intermediate; the old one's certificates stay valid)
    edgefleet ca issue --dir DIR --role gateway --id GW --site S --key KEY --out GW.pem

Unlike the other operator commands these never talk to the API: they read and write the CA
directory (``cloud.security.ca``), so the root key can live offline, on a machine with no cloud.
"""

from __future__ import annotations

import datetime as dt
import os

import click

from cloud.cli.helpers import OperatorError, emit

__all__ = ["ca"]


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
    emit(out, as_json, f"fleet CA written to {directory}: root.key (encrypted), root.crt, intermediate (until "
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
    emit(out, as_json, f"new intermediate until {out['intermediate_expires']}; chain.pem trusts "
                       f"{out['intermediates_trusted']} intermediates. Next: restart the cloud, copy "
                       f"{os.path.join(directory, 'chain.pem')} to the gateways")


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
