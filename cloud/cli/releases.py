"""``edgefleet release create|publish|list|show``: firmware releases through the cloud's operator API.

    edgefleet release create --image fw.img --version 1.2.0 --hw gw-x1 [--min-version 1.0.0]
        [--security-version 3] [--expires 90d] --key release.key [--passphrase-file F]
    edgefleet release create ... --manifest-out m.json        # no key here: sign offline, then
    edgefleet release sign --key release.key --manifest-json m.json --out m.signed
    edgefleet release publish 1.2.0 --signed m.signed
    edgefleet release list | show VERSION        (each with --json)

``create`` streams the image to the cloud (a progress bar on stderr), which
stores it, computes the deltas from earlier releases and answers with the
unsigned manifest. Before signing, ``create`` checks that manifest against the
file it uploaded (size, SHA-256, every chunk hash) and the options it was given,
so a cloud that built a manifest for other bytes gets no signature. The release
key is decrypted in memory only; the cloud never sees it.

The ``release`` group here is built from these commands and the offline ones of
``common.firmware.cli`` (``keygen``, ``sign``: no cloud needed); no module adds to another's group.
Exit codes: 0 done; 2 an error (the API refused or is unreachable, a bad key).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from cloud.cli.helpers import OperatorError, api_options, emit, format_table, human_bytes, parse_duration, q, when
from common.errors import KeyFileError, ManifestError
from common.fileio import write_atomic
from common.firmware.chunks import hash_image
from common.firmware.cli import ReleaseCommandError, keygen, read_passphrase, sign
from common.firmware.keys import key_id, load_release_key
from common.firmware.manifest import Manifest, sign_manifest
from common.firmware.version import Version

__all__ = ["check_manifest", "release"]

_PIECE = 1 << 20
_OCTETS = {"Content-Type": "application/octet-stream"}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def release() -> None:
    """Firmware releases: create, publish, list, show; signing keys and offline manifest signing."""


release.add_command(keygen)
release.add_command(sign)


@release.command("create")
@click.option(
    "--image", required=True, type=click.Path(exists=True, dir_okay=False, path_type=str), help="The full image."
)
@click.option("--version", "version", required=True, help="Its firmware version, e.g. 1.2.0.")
@click.option("--hw", "hw", required=True, multiple=True, metavar="MODEL", help="A compatible hardware model; repeat.")
@click.option("--min-version", help="Devices must run at least this version to install it.")
@click.option(
    "--security-version", type=click.IntRange(min=0), default=0, show_default=True, help="Anti-rollback floor."
)
@click.option("--expires", default="90d", show_default=True, help="How long the manifest is valid (90d, 12h, 3600).")
@click.option("--module", default="rootfs-image", show_default=True,
              help="The update module that installs the image: rootfs-image (A/B), file or script (docs/UPDATES.md), "
                   "swupdate (the image is a .swu, for SWUpdate devices polling their gateway over DDI: docs/DDI.md).")
@click.option(
    "--key",
    "key_path",
    type=click.Path(exists=True, dir_okay=False, path_type=str),
    help="Release private key: sign and publish now. Without it the release stays unsigned.",
)
@click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False, path_type=str),
    help="Read the key's passphrase from this file's first line instead of asking.",
)
@click.option(
    "--manifest-out",
    type=click.Path(dir_okay=False, path_type=str),
    help="Also write the unsigned manifest JSON here (for `edgefleet release sign` offline).",
)
@click.option(
    "--timeout", type=click.FloatRange(min=1), default=1800, show_default=True, help="Seconds to wait for the cloud."
)
@api_options
def create(
    fetch: Callable[..., Any],
    as_json: bool,
    image: str,
    version: str,
    hw: tuple[str, ...],
    min_version: str | None,
    security_version: int,
    expires: str,
    module: str,
    key_path: str | None,
    passphrase_file: str | None,
    manifest_out: str | None,
    timeout: float,
) -> None:
    """Upload an image as a new release; with --key, sign its manifest and publish it."""
    t0 = time.monotonic()
    try:
        expires_s = max(1, round(parse_duration(expires)))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires") from exc
    key = None
    if key_path is not None:  # before the upload: a wrong passphrase must not cost a long upload
        try:
            key = load_release_key(key_path, read_passphrase(passphrase_file, confirm=False))
        except KeyFileError as exc:
            raise ReleaseCommandError(str(exc)) from exc
    size = os.path.getsize(image)
    streamed = hashlib.sha256()
    params: dict[str, Any] = {
        "version": version,
        "hw": list(hw),
        "security_version": security_version,
        "expires_s": expires_s,
    }
    if module != "rootfs-image":
        params["module"] = module
    if min_version is not None:
        params["min_version"] = min_version
    made = fetch(
        "/v1/releases",
        "POST",
        content=_upload(image, size, streamed),
        params=params,
        headers={**_OCTETS, "Content-Length": str(size)},
        timeout=timeout,
    )
    try:
        manifest = Manifest.from_dict(made["manifest"])
    except ManifestError as exc:
        raise ReleaseCommandError(
            f"refusing to sign release {version}: the cloud's manifest is malformed ({exc})"
        ) from exc
    problems = check_manifest(made["manifest_body"], manifest, image, streamed.hexdigest(), params)
    if problems:
        raise ReleaseCommandError(
            f"refusing to sign release {version}: the cloud's manifest does not match what was uploaded "
            f"({'; '.join(problems)}); it stays unsigned"
        )
    if manifest_out is not None:
        write_atomic(manifest_out, made["manifest_body"].encode("ascii") + b"\n", 0o644)
    if key is None:
        seconds = time.monotonic() - t0
        hint = f" --manifest-json {manifest_out}" if manifest_out else ""
        emit({**_without_texts(made), "seconds": round(seconds, 3)}, as_json, lambda m: (
            _summary(m, None, seconds) + f"\nnot signed: sign it offline (`edgefleet release sign --key KEY{hint} "
            f"--out SIGNED`), then `edgefleet release publish {m['version']} --signed SIGNED`"))
        return
    signed = sign_manifest(manifest, key)
    try:
        published = fetch(
            f"/v1/releases/{q(made['version'])}/signature",
            "POST",
            content=signed.to_bytes(),
            headers=_OCTETS,
        )
    except OperatorError as exc:
        raise OperatorError(f"release {made['version']} was uploaded but NOT published: {exc.message}") from exc
    seconds = time.monotonic() - t0
    signer = key_id(key.public_key())
    emit({**_without_texts(published), "seconds": round(seconds, 3)}, as_json, lambda p: _summary(p, signer, seconds))


def _upload(path: str, size: int, digest: Any) -> Iterator[bytes]:
    """The file's bytes a piece at a time, hashed as they go, with a progress bar on stderr."""
    with open(path, "rb") as f, click.progressbar(length=size, label="uploading", file=sys.stderr) as bar:
        while piece := f.read(_PIECE):
            digest.update(piece)
            bar.update(len(piece))
            yield piece
    click.echo("uploaded; the cloud is computing deltas...", err=True)


def check_manifest(
    body: str, manifest: Manifest, image: str, uploaded_sha256: str, params: Mapping[str, Any]
) -> list[str]:
    """What is wrong with the cloud's manifest for the ``image`` uploaded with ``params`` ([] if nothing)."""
    problems = []
    if manifest.to_bytes() != body.encode("ascii", errors="replace"):
        problems.append("its body is not the canonical form of its manifest")
    size, sha, chunks = hash_image(image, manifest.chunk_size)
    if sha != uploaded_sha256:
        problems.append(f"{image} changed during the upload")
    if (manifest.size, manifest.sha256) != (size, sha):
        problems.append(
            f"image size/SHA-256 {manifest.size}/{manifest.sha256[:16]}..., the file's {size}/{sha[:16]}..."
        )
    elif list(manifest.chunks) != chunks:
        problems.append("chunk hashes differ from the file's")
    models = {m.strip() for item in params["hw"] for m in item.split(",") if m.strip()}
    if Version(manifest.version) != Version(params["version"]) or set(manifest.hw) != models:
        problems.append(f"it is for {manifest.version} on {', '.join(manifest.hw)}")
    if manifest.security_version != params["security_version"] or manifest.min_version != params.get("min_version"):
        problems.append(f"security version {manifest.security_version}, min version {manifest.min_version}")
    if manifest.module != params.get("module", "rootfs-image"):
        problems.append(f"it is for the update module {manifest.module!r}")
    return problems


@release.command("publish")
@click.argument("version")
@click.option(
    "--signed",
    "signed_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=str),
    help="The signed manifest (from `edgefleet release sign`).",
)
@api_options
def publish(fetch: Callable[..., Any], as_json: bool, version: str, signed_path: str) -> None:
    """Publish an unsigned release with a manifest signed offline."""
    data = Path(signed_path).read_bytes().strip()
    published = fetch(f"/v1/releases/{q(version)}/signature", "POST", content=data, headers=_OCTETS)
    emit(_without_texts(published), as_json, lambda p: _summary(p, ", ".join(p.get("signed_by", [])) or None, None))


@release.command("list")
@api_options
def list_releases(fetch: Callable[..., Any], as_json: bool) -> None:
    """List the releases, oldest version first."""
    rows = fetch("/v1/releases")["releases"]
    emit(rows, as_json, lambda rows: format_table(
        ["VERSION", "STATE", "HW", "SIZE", "SHA256", "SEC", "DELTAS FROM", "CREATED (UTC)"],
        [[r["version"], r["state"], ",".join(r["hw"]), r["size"], r["sha256"][:12], r["security_version"],
          ", ".join(f"{d['from_version']} ({human_bytes(d['size'])})" for d in _offered(r)) or "-",
          when(r["created_ms"])] for r in rows],
    ) if rows else "no releases yet")


@release.command("show")
@click.argument("version")
@api_options
def show_release(fetch: Callable[..., Any], as_json: bool, version: str) -> None:
    """Show one release: its manifest, signatures and every delta tried."""
    emit(fetch(f"/v1/releases/{q(version)}"), as_json, _release_text)


def _release_text(r: Mapping[str, Any]) -> str:
    m = r["manifest"]
    lines = [
        f"release {r['version']}: {r['state']}",
        f"  hardware          {', '.join(r['hw'])}",
        f"  image             {r['size']} bytes, sha256 {r['sha256']}",
        f"  chunks            {len(m['chunks'])} of {m['chunk_size']} bytes",
        f"  security version  {r['security_version']}",
        f"  min version       {m['min_version'] or '-'}",
        f"  created           {when(r['created_ms'])} UTC",
        f"  expires           {when(m['expires_ms'])} UTC",
    ]
    if r["published_ms"] is not None:
        lines.append(f"  published         {when(r['published_ms'])} UTC, signed by {', '.join(r['signed_by'])}")
    return "\n".join([*lines, _deltas(r["deltas"])])


def _summary(r: Mapping[str, Any], signer: str | None, seconds: float | None) -> str:
    state = f"published, signed by key {signer}" if r["state"] == "published" and signer else r["state"]
    lines = [
        f"release {r['version']} ({', '.join(r['hw'])}): {state}",
        f"  image  {r['size']} bytes ({human_bytes(r['size'])}), sha256 {r['sha256']}",
        _deltas(r["deltas"]),
    ]
    if seconds is not None:
        lines.append(f"  took {seconds:.1f} s")
    return "\n".join(lines)


def _deltas(deltas: Sequence[Mapping[str, Any]]) -> str:
    if not deltas:
        return "  deltas: none (no earlier published release for this hardware)"
    rows = [
        [
            d["from_version"],
            d["status"],
            d["method"] or "-",
            human_bytes(d["size"]) if d["size"] is not None else "-",
            f"{d['detail']['ratio']:.1%}" if "ratio" in d["detail"] else "-",
            (d["sha256"] or "")[:12] or d["detail"].get("note", "")[:80],
        ]
        for d in deltas
    ]
    table = format_table(["FROM", "STATUS", "METHOD", "SIZE", "OF FULL", "SHA256 / NOTE"], rows)
    return "  deltas:\n" + "\n".join(f"    {line}" for line in table.splitlines())


def _offered(r: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [d for d in r["deltas"] if d["status"] == "offered"]


def _without_texts(r: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if k not in ("manifest_body", "signed_manifest")}
