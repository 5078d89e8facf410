"""``edgefleet delta make OLD NEW PATCH`` and ``edgefleet delta apply OLD PATCH NEW``.

The same engine the cloud runs when it publishes a release. Both print the
method, the sizes and the time (``--json`` for one JSON object). Exit codes: 0
done; 1 no delta worth shipping (the full image is about as small); 2 an error
(a missing file, a corrupt patch, the wrong old image), with a message saying which.
"""

from __future__ import annotations

import json
from typing import Any

import click

from common.delta.apply import apply_delta
from common.delta.engine import DEFAULT_METHODS, DeltaResult, make_delta
from common.errors import DeltaError, DeltaNotWorthIt

__all__ = ["delta"]

_FILE = click.Path(exists=True, dir_okay=False, path_type=str)


class DeltaCommandError(click.ClickException):
    exit_code = 2


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError


def _report(r: DeltaResult, verdict: str) -> str:
    lines = [
        f"{verdict}: {r.method}, {_human(r.patch_size)} ({r.patch_size} bytes)",
        (
            f"  old {_human(r.old_size)}, new {_human(r.new_size)}, "
            f"full image zstd-{r.full_level} {_human(r.full_size)}; delta/full {r.ratio:.3f}"
        ),
        f"  {r.seconds:.1f} s" + (f", peak memory {_human(r.peak_rss_bytes)}" if r.peak_rss_bytes else ""),
    ]
    for a in r.attempts:
        what = f"{_human(a.patch_size)} in {a.seconds:.1f} s" if a.patch_size is not None else a.note
        lines.append(f"  - {a.label}: {what}")
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def delta() -> None:
    """Make and apply binary deltas between firmware images."""


@delta.command("make")
@click.argument("old", type=_FILE)
@click.argument("new", type=_FILE)
@click.argument("patch", type=click.Path(dir_okay=False, path_type=str))
@click.option("--time-budget", "time_budget", type=float, default=110.0, show_default=True, help="Seconds for all candidates.")
@click.option("--memory-budget", "memory_mib", type=int, default=2048, show_default=True, help="MiB any candidate may use.")
@click.option(
    "--method",
    "methods",
    multiple=True,
    type=click.Choice(DEFAULT_METHODS),
    help="Try only this method (repeatable); default: all that fit the budget.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def make_cmd(
    old: str, new: str, patch: str, time_budget: float, memory_mib: int, methods: tuple[str, ...], as_json: bool
) -> None:
    """Write the smallest delta from OLD to NEW into PATCH."""
    try:
        r = make_delta(
            old,
            new,
            patch,
            time_budget_s=time_budget,
            memory_budget_bytes=memory_mib << 20,
            methods=methods or DEFAULT_METHODS,
        )
    except DeltaNotWorthIt as exc:
        res = exc.result if isinstance(exc.result, DeltaResult) else None
        if as_json:
            click.echo(json.dumps({"ok": False, "error": str(exc), **(res.to_dict() if res else {})}))
        else:
            click.echo(_report(res, "no delta written") if res else "", err=True)
            click.echo(f"Error: {exc}; ship the full image", err=True)
        raise SystemExit(1) from exc
    except (DeltaError, OSError) as exc:
        raise DeltaCommandError(str(exc)) from exc
    click.echo(json.dumps({"ok": True, "patch": patch, **r.to_dict()}) if as_json else _report(r, f"wrote {patch}"))


@delta.command("apply")
@click.argument("old", type=_FILE)
@click.argument("patch", type=_FILE)
@click.argument("new", type=click.Path(dir_okay=False, path_type=str))
@click.option("--max-memory", "memory_mib", type=int, default=512, show_default=True, help="MiB applying may buffer.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def apply_cmd(old: str, patch: str, new: str, memory_mib: int, as_json: bool) -> None:
    """Rebuild NEW from OLD and PATCH, checking the result's SHA-256."""
    try:
        r = apply_delta(old, patch, new, max_memory_bytes=memory_mib << 20)
    except (DeltaError, OSError) as exc:
        raise DeltaCommandError(str(exc)) from exc
    out: dict[str, Any] = {
        "ok": True,
        "method": r.method,
        "old_size": r.old_size,
        "patch_size": r.patch_size,
        "new_size": r.new_size,
        "seconds": round(r.seconds, 3),
        "new_sha256": r.new_sha256,
        "bare": r.bare,
    }
    if as_json:
        click.echo(json.dumps(out))
    else:
        click.echo(
            f"wrote {new}: {r.method}, old {_human(r.old_size)} + patch {_human(r.patch_size)} -> "
            f"new {_human(r.new_size)} in {r.seconds:.2f} s " + _verdict(r)
        )


def _verdict(r: Any) -> str:
    if not r.bare:
        return f"(SHA-256 {r.new_sha256[:16]}... verified)"
    checked = "verified by the frame's checksum; " if r.method == "zstd-patch-from" else ""
    return f"({checked}SHA-256 {r.new_sha256}: a bare {r.method} patch declares no hash, compare it with the release's)"
