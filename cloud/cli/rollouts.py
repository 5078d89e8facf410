"""``edgefleet rollout create|show|pause|resume|abort|list``: operator commands over the cloud's HTTP API.

``rollout show ID --watch`` redraws per-stage, per-site progress bars in place until the
rollout ends (``rich``: several live bars at once, which ``click.progressbar`` cannot draw).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click

from cloud.cli.helpers import api_options, emit, format_table, q

__all__ = ["rollout"]

DONE = ("succeeded", "skipped", "rolled_back", "failed", "timed_out")
FINAL = ("completed", "aborted")


@click.group()
def rollout() -> None:
    """Roll a release out: canary first, then waves, inside maintenance windows, halting on failures."""


def _path(rid: str, tail: str = "") -> str:
    return f"/v1/rollouts/{q(rid)}{tail}"


@rollout.command("create")
@click.option("--release", "version", required=True, help="The release version to roll out, e.g. 2.0.0.")
@click.option("--id", "rid", help="Name the rollout (default r1, r2, ...).")
@click.option("--site", "sites", multiple=True, help="Target only these sites (repeat); default every site.")
@click.option("--group", "groups", multiple=True, help="Target devices in these groups (repeat).")
@click.option("--tag", "tags", multiple=True, help="Target devices carrying every one of these tags (repeat).")
@click.option("--hw", "hardware", multiple=True, help="Target only this hardware (repeat).")
@click.option("--from-version", "versions", multiple=True, help="Target devices running this version (repeat).")
@click.option("--canary", type=int, default=1, show_default=True, help="Devices in the canary stage.")
@click.option("--canary-group", default="", help="A permanent canary group: its members are the canary stage.")
@click.option("--wave", "waves", multiple=True, help="A wave, as the cumulative share (50%) or count; repeat. Default 50%, 100%.")
@click.option("--soak", "soak_s", type=float, default=3600.0, show_default=True, help="Seconds each stage soaks before promotion.")
@click.option("--success", default="100%", show_default=True, help="Share (or count) of a stage that must succeed to promote.")
@click.option("--failure", default="1", show_default=True, help="Failures (count or share) that halt the rollout.")
@click.option("--min-sample", type=int, default=1, show_default=True, help="Finished devices before a share is judged.")
@click.option("--on-failure", type=click.Choice(["pause", "abort"]), default="pause", show_default=True)
@click.option("--max-installing-per-site", type=int, default=10, show_default=True)
@click.option("--max-starts-per-minute", type=int, default=1000, show_default=True)
@click.option("--window", "windows", multiple=True, metavar="[SITE=]CRON/SECONDS",
              help="Maintenance window, e.g. '0 2 * * */3600' or 'site-1=30 1 * * 6/7200'; repeat.")
@click.option("--tz", "timezones", multiple=True, metavar="[SITE=]ZONE", help="IANA time zone of the windows, e.g. Europe/Berlin.")
@click.option("--timeout", "timeout_s", type=float, default=1800.0, show_default=True, help="Seconds a device may take.")
@click.option("--retries", "max_retries", type=int, default=2, show_default=True)
@click.option("--backoff", "backoff_s", type=float, default=60.0, show_default=True, help="First retry delay; doubles.")
@click.option("--metric-rule", "metric_rules", multiple=True, help="Health rule during the soak, e.g. 'cpu < 90'.")
@click.option("--allow-downgrade", is_flag=True, help="Allow devices running a newer version to go back.")
@click.option("--allow-below-floor", is_flag=True, help="Allow a release below a device's security floor.")
@click.option("--install-arg", "install_args", multiple=True, metavar="KEY=VALUE", help="Extra argument of the update command.")
@click.option("--draft", is_flag=True, help="Create it without starting it.")
@api_options
def create(fetch: Callable[..., Any], as_json: bool, version: str, rid: str | None, draft: bool,
           install_args: tuple[str, ...], windows: tuple[str, ...], timezones: tuple[str, ...], **kw: Any) -> None:
    """Create a rollout of RELEASE to the devices the selectors match, and start it (unless --draft)."""
    selector = {k: list(kw.pop(k)) for k in ("sites", "groups", "tags", "hardware", "versions")}
    plan: dict[str, Any] = {"release": {"version": version}, "selector": selector, **kw}
    plan["waves"] = list(kw["waves"]) or ["50%", "100%"]
    plan["metric_rules"] = list(kw["metric_rules"])
    plan["windows"], plan["timezones"] = {}, {}
    for w in windows:
        site, _, rest = w.rpartition("=") if "=" in w.split("/")[0] else ("", "", w)
        cron, _, seconds = rest.rpartition("/")
        if not cron or not seconds.replace(".", "", 1).isdigit():
            raise click.BadParameter(f"{w!r}: expected CRON/SECONDS, e.g. '0 2 * * */3600'", param_hint="--window")
        plan["windows"].setdefault(site or "*", []).append([cron, float(seconds)])
    for t in timezones:
        site, _, zone = t.rpartition("=")
        plan["timezones"][site or "*"] = zone
    args = dict(a.split("=", 1) for a in install_args if "=" in a)
    body = {"plan": plan, "install_args": args, "draft": draft, **({"id": rid} if rid else {})}
    emit(fetch("/v1/rollouts", "POST", body), as_json, _created_text)


def _created_text(made: dict[str, Any]) -> str:
    t = made.get("totals", {})
    return (f"rollout {made['id']} of release {made['release']}: {made['state']}, {sum(t.values())} devices targeted "
            f"({t.get('skipped', 0)} skipped); stages {', '.join(made['stages'])}\n"
            f"follow it with: edgefleet rollout show {made['id']} --watch")


@rollout.command("list")
@api_options
def list_(fetch: Callable[..., Any], as_json: bool) -> None:
    """Every rollout, oldest first."""
    rows = fetch("/v1/rollouts")["rollouts"]
    emit(rows, as_json, lambda rows: format_table(
        ["ID", "RELEASE", "STATE", "STAGE", "REASON"],
        [[r["id"], r["release"], r["state"], r["stage"], r["reason"][:60]] for r in rows],
    ) if rows else "no rollouts (create one with `edgefleet rollout create --release VERSION`)")


def _render_text(view: dict[str, Any]) -> str:
    lines = [f"rollout {view['id']} of release {view['release']}: {view['state']} (stage {view['stage']})"]
    if view["reason"]:
        lines.append(f"  why: {view['reason']}")
    for stage in view["stages"]:
        for site, counts in sorted(view.get("progress", {}).get(stage, {}).items()):
            total = sum(counts.values())
            done = sum(counts.get(s, 0) for s in DONE)
            detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            lines.append(f"  {stage:<8} {site:<12} {done:>4}/{total:<4} {detail}")
    problems = [d for d in view.get("devices", []) if d["state"] in ("skipped", "failed", "rolled_back", "timed_out")]
    for d in problems[:20]:
        lines.append(f"  {d['device_id']}: {d['state']} ({d['reason'] or 'no reason given'})")
    if len(problems) > 20:
        lines.append(f"  ... and {len(problems) - 20} more (--json has them all)")
    return "\n".join(lines)


def _watch(fetch: Callable[..., Any], rid: str, interval: float, console: Any = None) -> dict[str, Any]:
    from rich.console import Group
    from rich.live import Live
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.text import Text

    def frame(view: dict[str, Any]) -> Group:
        bars = Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[detail]}"), auto_refresh=False)
        for stage in view["stages"]:
            for site, counts in sorted(view.get("progress", {}).get(stage, {}).items()):
                total = sum(counts.values())
                done = sum(counts.get(s, 0) for s in DONE)
                bad = sum(counts.get(s, 0) for s in ("failed", "rolled_back", "timed_out"))
                busy = sum(counts.get(s, 0) for s in ("downloading", "downloaded", "installing", "trial"))
                bars.add_task(f"{stage} {site}", total=total, completed=done,
                              detail=f"{busy} in progress, {bad} failed" if busy or bad else "")
        head = Text(f"rollout {view['id']} of {view['release']}: {view['state']} (stage {view['stage']})"
                    + (f"\n{view['reason']}" if view["reason"] else ""))
        return Group(head, bars)

    view = fetch(_path(rid))
    with Live(frame(view), refresh_per_second=4, console=console) as live:
        while view["state"] not in FINAL:
            time.sleep(interval)
            view = fetch(_path(rid))
            live.update(frame(view))
    return view


@rollout.command("show")
@click.argument("rid", metavar="ID")
@click.option("--watch", is_flag=True, help="Redraw live progress bars per stage and site until the rollout ends.")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between redraws with --watch.")
@api_options
def show(fetch: Callable[..., Any], as_json: bool, rid: str, watch: bool, interval: float) -> None:
    """A rollout's state, why, and its progress per stage and site (devices that failed or were skipped, why)."""
    view = _watch(fetch, rid, interval) if watch and not as_json else fetch(_path(rid))
    emit(view, as_json, _render_text)


def _control(action: str, help_text: str) -> click.Command:
    @click.argument("rid", metavar="ID")
    @api_options
    def cmd(fetch: Callable[..., Any], as_json: bool, rid: str, **kw: Any) -> None:
        body = {"revert": bool(kw.get("revert"))}
        view = fetch(_path(rid, f"/{action}"), "POST", body)

        def human(view: dict[str, Any]) -> str:
            line = f"rollout {view['id']}: {view['state']} ({view['reason']})"
            if action != "abort":
                return line
            n = view.get("counters", {}).get("reverts", 0)
            return line + "\n" + (f"no new installs will start; {n} updated devices sent back to their previous release"
                                   if kw.get("revert") else "no new installs will start; updated devices keep the "
                                   "release (--revert sends them back)")

        emit(view, as_json, human)

    cmd.__doc__ = help_text
    return cmd


rollout.command("pause")(_control("pause", "Stop starting installs (those running finish); resume continues."))
rollout.command("resume")(_control("resume", "Continue a paused rollout."))
rollout.command("abort")(click.option("--revert", is_flag=True, help="Also send devices this rollout updated back to "
                                      "their previous release.")(_control("abort", "End the rollout: no new installs, at once.")))
