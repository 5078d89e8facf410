"""``edgefleet release``: release keys and offline manifest signing.

    edgefleet release keygen --out release.key [--passphrase-file F]
    edgefleet release sign --key release.key --manifest-json m.json --out m.signed [--passphrase-file F]

``keygen`` writes the private key encrypted under a passphrase (0600) and its
public key to ``<out>.pub`` (pin that on devices). ``sign`` signs a manifest
JSON offline, so the signing key never has to be on a networked machine; given
an already signed manifest it adds a signature (for thresholds or key rotation).

The operator's ``edgefleet release`` group (``cloud.cli.releases``) offers these two
beside the commands that talk to the cloud (``create``, ``publish``, ``list``, ``show``).

Exit codes: 0 done; 2 an error (unreadable key, wrong passphrase, bad manifest).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from common.errors import KeyFileError, ManifestError
from common.fileio import write_atomic
from common.firmware.keys import (
    generate_release_key,
    key_id,
    load_release_key,
    save_release_key,
)
from common.firmware.manifest import Manifest, SignedManifest, sign_manifest

__all__ = ["ReleaseCommandError", "read_passphrase", "release"]


class ReleaseCommandError(click.ClickException):
    exit_code = 2


def read_passphrase(passphrase_file: str | None, *, confirm: bool) -> bytes:
    """The passphrase from the first line of ``passphrase_file``, else asked for on the terminal."""
    if passphrase_file:
        try:
            lines = Path(passphrase_file).read_bytes().splitlines()
        except OSError as exc:
            raise ReleaseCommandError(f"cannot read passphrase file {passphrase_file!r}: {exc.strerror}") from exc
        text = lines[0] if lines else b""
    else:
        text = click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm).encode()
    if not text:
        raise ReleaseCommandError("the passphrase is empty")
    return text


_PASSPHRASE = click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False, path_type=str),
    help="Read the passphrase from this file's first line instead of asking.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def release() -> None:
    """Firmware releases: signing keys and manifests."""


@release.command("keygen")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=str), help="Private key file to write.")
@_PASSPHRASE
@click.option("--force", is_flag=True, help="Overwrite an existing key file.")
def keygen(out: str, passphrase_file: str | None, force: bool) -> None:
    """Make an Ed25519 release key, encrypted under a passphrase."""
    if Path(out).exists() and not force:
        raise ReleaseCommandError(f"{out} exists; refusing to overwrite a release key (use --force)")
    passphrase = read_passphrase(passphrase_file, confirm=True)
    try:
        kid = save_release_key(out, generate_release_key(), passphrase)
    except (KeyFileError, OSError) as exc:
        raise ReleaseCommandError(str(exc)) from exc
    click.echo(f"release key {kid}: private {out} (encrypted, 0600), public {out}.pub")


@release.command("sign")
@click.option("--key", "key_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option(
    "--manifest-json",
    "manifest_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=str),
    help="A manifest as JSON, or a signed manifest to add a signature to.",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=str), help="Signed manifest to write.")
@_PASSPHRASE
def sign(key_path: str, manifest_path: str, out: str, passphrase_file: str | None) -> None:
    """Sign a manifest offline with a release key file."""
    try:
        data = Path(manifest_path).read_bytes()
        doc = json.loads(data)
    except (OSError, ValueError) as exc:
        raise ReleaseCommandError(f"cannot read manifest {manifest_path!r}: {exc}") from exc
    try:
        target: Manifest | SignedManifest
        if isinstance(doc, dict) and "signatures" in doc:
            target = SignedManifest.from_bytes(data)
        else:
            target = Manifest.from_dict(doc)
        key = load_release_key(key_path, read_passphrase(passphrase_file, confirm=False))
        signed = sign_manifest(target, key)
        write_atomic(out, signed.to_bytes() + b"\n", 0o644)
    except (KeyFileError, ManifestError, OSError) as exc:
        raise ReleaseCommandError(str(exc)) from exc
    m = signed.unverified()
    click.echo(
        f"signed firmware {m.version} ({', '.join(m.hw)}) with key {key_id(key.public_key())}: {out} "
        f"({len(signed.signatures)} signature(s))"
    )
