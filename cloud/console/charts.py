"""Metric charts drawn on the server as SVG: no chart library, nothing to load, readable without script.

    series(points)                       # metric -> [(ts_ms, value)], from GET /v1/metrics points
    svg_chart(pairs, width=520, height=140)   # one line chart (a <svg> string), axes labelled min/max
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

__all__ = ["series", "svg_chart"]


def series(points: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Points by metric, in time order; a rolled-up point (minute, hour tier) counts by its mean."""
    out: dict[str, list[tuple[int, float]]] = {}
    for p in points:
        value = p.get("value", p.get("mean"))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.setdefault(str(p["metric"]), []).append((int(p["ts_ms"]), float(value)))
    for pairs in out.values():
        pairs.sort()
    return dict(sorted(out.items()))


def svg_chart(pairs: list[tuple[int, float]], *, name: str = "", width: int = 520, height: int = 140) -> str:
    """A line chart of ``pairs`` (time, value); empty pairs draw an empty frame saying so."""
    pad_l, pad_b, pad_t = 48, 18, 8
    w, h = width - pad_l - 4, height - pad_b - pad_t
    frame = (f'<svg class="chart" role="img" aria-label="{escape(name)}" data-metric="{escape(name)}" '
             f'data-points="{len(pairs)}" viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMinYMin meet">'
             f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" class="frame"/>')
    if not pairs:
        return frame + f'<text x="{pad_l + 8}" y="{pad_t + h / 2}">no points in this range</text></svg>'
    t0, t1 = pairs[0][0], pairs[-1][0]
    lo, hi = min(v for _, v in pairs), max(v for _, v in pairs)
    span_t, span_v = max(t1 - t0, 1), (hi - lo) or 1.0

    def xy(t: int, v: float) -> str:
        return f"{pad_l + (t - t0) / span_t * w:.1f},{pad_t + h - (v - lo) / span_v * h:.1f}"

    line = " ".join(xy(t, v) for t, v in pairs)
    labels = (f'<text x="{pad_l - 4}" y="{pad_t + 10}" text-anchor="end">{_num(hi)}</text>'
              f'<text x="{pad_l - 4}" y="{pad_t + h}" text-anchor="end">{_num(lo)}</text>'
              f'<text x="{pad_l}" y="{height - 4}">{(t1 - t0) / 60000:.0f} min</text>')
    return frame + labels + f'<polyline class="line" points="{line}"/></svg>'


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"
