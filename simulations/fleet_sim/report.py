"""``--report DIR``: a markdown summary a person reads, and PNG plots made with matplotlib.

Plots: backlog per site over time, uplink use against its cap, rollout progress per stage, update
outcomes, latency from sample to cloud. With a hundred sites a line per site is unreadable, so the
per-site plots show the spread across sites (median, 95th percentile, maximum) and the few sites
with the largest peaks by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_report"]

STATES = ("succeeded", "installing", "trial", "downloaded", "pending", "rolled_back", "failed", "timed_out", "skipped")


def _spread(rows: list[list[float]]) -> tuple[list[float], list[float], list[float]]:
    med, p95, top = [], [], []
    for row in rows:
        s = sorted(row) or [0.0]
        med.append(s[len(s) // 2])
        p95.append(s[min(len(s) - 1, int(0.95 * len(s)))])
        top.append(s[-1])
    return med, p95, top


def _plots(fleet: Any, out: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl, made = fleet.timeline, []
    names = [g.name for g in fleet.gateways]

    def save(fig: Any, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        made.append((name, title))

    fig, ax = plt.subplots(figsize=(9, 4.5))
    med, p95, top = _spread([[float(x) for x in row] for row in tl.backlog])
    ax.plot(tl.hours, top, label="max over sites", color="tab:red")
    ax.plot(tl.hours, p95, label="95th percentile", color="tab:orange")
    ax.plot(tl.hours, med, label="median", color="tab:blue")
    peaks = sorted(range(len(names)), key=lambda i: -max((row[i] for row in tl.backlog), default=0))[:3]
    for i in peaks:
        ax.plot(tl.hours, [row[i] for row in tl.backlog], lw=0.8, ls="--", label=names[i])
    ax.set(xlabel="virtual hour", ylabel="outbox entries", title="Gateway backlog per site")
    ax.legend(fontsize=8)
    save(fig, "backlog.png", "Backlog per site")

    fig, (top_ax, ax) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    total = [[a + b for a, b in zip(t, w)] for t, w in zip(tl.uplink_use, tl.firmware_use)]
    for axis, rows, what in ((top_ax, total, "telemetry + firmware"), (ax, tl.uplink_use, "telemetry (the drain's cap)")):
        med, p95, top = _spread(rows)
        axis.plot(tl.hours, [100 * x for x in top], label="max over sites", color="tab:red")
        axis.plot(tl.hours, [100 * x for x in p95], label="95th percentile", color="tab:orange")
        axis.plot(tl.hours, [100 * x for x in med], label="median", color="tab:blue")
        if max(top, default=0) > 0.3:  # else the cap line would flatten what was used
            axis.axhline(100, color="black", lw=1, ls=":", label="cap")
        axis.set(ylabel="% of cap, 15-min mean", title=f"Uplink use against its cap (100%): {what}")
        axis.legend(fontsize=7)
    ax.set(xlabel="virtual hour")
    save(fig, "uplink.png", "Uplink use against cap")

    for rid, series in tl.rollouts.items():
        fig, ax = plt.subplots(figsize=(9, 4.5))
        hours = [h for h, _ in series]
        present = [s for s in STATES if any(c.get(s) for _, c in series)]
        ax.stackplot(hours, [[c.get(s, 0) for _, c in series] for s in present], labels=present)
        for h, r, stage, state in tl.stages:
            if r == rid:
                ax.axvline(h, color="black", lw=0.6, ls=":")
                ax.text(h, ax.get_ylim()[1] * 0.97, f"stage {stage} {state}", rotation=90, va="top", fontsize=7)
        ax.set(xlabel="virtual hour", ylabel="devices", title=f"{rid}: progress per stage")
        ax.legend(fontsize=8, loc="center right")
        save(fig, f"{rid}.png", f"Rollout progress: {rid}")

    fig, ax = plt.subplots(figsize=(7, 4))
    labels = ["committed", "rolled_back", "failed", "late_install_refused"]
    values = [tl.outcomes[k] for k in labels]
    ax.bar(labels, values, color=["tab:green", "tab:orange", "tab:red", "tab:gray"])
    for i, v in enumerate(values):
        ax.text(i, v, str(v), ha="center", va="bottom")
    ax.set(ylabel="updates", title=f"Update outcomes ({sum(d.updater.cuts for d in fleet.devices)} power cuts during updates)")
    save(fig, "outcomes.png", "Update outcomes")

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, label in enumerate(("median", "95th percentile", "max")):
        ax.plot(tl.hours, [max(row[i], 0.001) for row in tl.latency], label=label)
    ax.set_yscale("log")
    ax.set(xlabel="virtual hour (records stored in the 15 min before)", ylabel="seconds, sample to cloud",
           title="Latency from sample to cloud")
    ax.legend(fontsize=8)
    save(fig, "latency.png", "Latency from sample to cloud")
    return made


def write_report(fleet: Any, result: dict[str, Any], directory: str | Path) -> Path:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(fleet, out)
    sc = fleet.sc
    lines = [
        f"# Fleet simulation: {sc.name}, seed {sc.seed}",
        "",
        f"{result['devices']:,} devices at {sc.sites} sites, {sc.hours:g} scenario hours "
        f"({result['virtual_hours']} virtual hours with the drain at the end). "
        f"Wall time {result['wall_s']} s (CPU {fleet.cpu_s} s), peak RSS {result['peak_rss_mb']} MB.",
        "",
        f"**Invariants: {len(fleet.invariants.failures) - result['invariants_failed']} of "
        f"{len(fleet.invariants.failures)} hold.** Replay: `edgefleet sim fleet --scenario <file> --seed {sc.seed}`.",
        "",
        "| invariant | what it checks | violations | first violation |",
        "|---|---|---|---|",
    ]
    for row in fleet.invariants.table():
        first = row["first"]
        where = "" if first is None else f"t={first['virtual_s']} s: {first['event']}"
        lines.append(f"| `{row['name']}` | {row['what']} | {row['violations']} | {where} |")
    lines += ["", "## Numbers", "", "| | |", "|---|---|"]
    for key, value in result.items():
        if key not in ("rollouts", "invariants", "first_violations"):
            lines.append(f"| {key} | {value} |")
    lines += ["", "## Rollouts", "", "| rollout | state | stage | devices by state | reason |", "|---|---|---|---|---|"]
    for rid, r in result["rollouts"].items():
        counts = ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("state", "reason", "stage"))
        lines.append(f"| {rid} | {r['state']} | {r['stage']} | {counts} | {r['reason']} |")
    lines += ["", "## Plots", ""]
    for name, title in plots:
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    lines += ["## What is simulated, and how finely", "", "See docs/SIMULATION.md."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"
