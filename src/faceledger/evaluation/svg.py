"""Small self-contained SVG line charts for the HTML report (no plotting dependency)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip


@dataclass
class Series:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    dashed: bool = False


@dataclass
class Chart:
    title: str
    x_label: str
    y_label: str
    series: list[Series] = field(default_factory=list)
    x_log: bool = False
    y_log: bool = False
    x_range: tuple[float, float] | None = None
    y_range: tuple[float, float] | None = None
    marks: list[tuple[float, str]] = field(default_factory=list)  # vertical lines at x
    width: int = 560
    height: int = 360
    uid: str = "chart"  # unique within a page: names the clip path


def _fwd(v: float, log: bool) -> float:
    return math.log10(v) if log else v


def _ticks(lo: float, hi: float, log: bool) -> list[tuple[float, str]]:
    if log:
        return [(float(e), f"1e{e}") for e in range(math.ceil(lo), math.floor(hi) + 1)]
    span = hi - lo
    if span <= 0:
        return [(lo, f"{lo:g}")]
    raw = span / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10)), key=lambda s: abs(s - raw))
    start = math.ceil(lo / step) * step
    out = []
    v = start
    while v <= hi + 1e-12:
        out.append((v, f"{v:.4g}"))
        v += step
    return out


def render(chart: Chart) -> str:
    """The chart as an inline `<svg>` element."""
    left, right, top, bottom = 64, 150, 30, 46
    w, h = chart.width, chart.height
    pw, ph = w - left - right, h - top - bottom
    pts = [
        (_fwd(x, chart.x_log), _fwd(y, chart.y_log))
        for s in chart.series
        for x, y in zip(s.x, s.y)
        if (not chart.x_log or x > 0)
        and (not chart.y_log or y > 0)
        and math.isfinite(x)
        and math.isfinite(y)
    ]
    if chart.x_range:
        x0, x1 = (_fwd(v, chart.x_log) for v in chart.x_range)
    else:
        x0, x1 = (min(p[0] for p in pts), max(p[0] for p in pts)) if pts else (0.0, 1.0)
    if chart.y_range:
        y0, y1 = (_fwd(v, chart.y_log) for v in chart.y_range)
    else:
        y0, y1 = (min(p[1] for p in pts), max(p[1] for p in pts)) if pts else (0.0, 1.0)
    if x1 <= x0:
        x1 = x0 + 1.0
    if y1 <= y0:
        y1 = y0 + 1.0

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + ph - (y - y0) / (y1 - y0) * ph

    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
         f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">',
         f'<rect width="{w}" height="{h}" fill="white"/>',
         f'<text x="{left + pw / 2}" y="16" text-anchor="middle" font-size="13">{escape(chart.title)}</text>',
         f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>']  # fmt: skip
    for v, lab in _ticks(x0, x1, chart.x_log):
        o.append(
            f'<line x1="{px(v):.1f}" y1="{top}" x2="{px(v):.1f}" y2="{top + ph}" stroke="#ddd"/>'
        )
        o.append(f'<text x="{px(v):.1f}" y="{top + ph + 14}" text-anchor="middle">{lab}</text>')
    for v, lab in _ticks(y0, y1, chart.y_log):
        o.append(
            f'<line x1="{left}" y1="{py(v):.1f}" x2="{left + pw}" y2="{py(v):.1f}" stroke="#ddd"/>'
        )
        o.append(f'<text x="{left - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{lab}</text>')
    o.append(
        f'<text x="{left + pw / 2}" y="{h - 8}" text-anchor="middle">{escape(chart.x_label)}</text>'
    )
    o.append(f'<text transform="translate(14 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
             f'{escape(chart.y_label)}</text>')  # fmt: skip
    for n, (x, lab) in enumerate(chart.marks):
        if x <= 0 and chart.x_log:
            continue
        xv = px(_fwd(x, chart.x_log))
        if left <= xv <= left + pw:
            o.append(
                f'<line x1="{xv:.1f}" y1="{top}" x2="{xv:.1f}" y2="{top + ph}" '
                f'stroke="#555" stroke-dasharray="2,3"/>'
            )
            # Stagger the labels: neighbouring thresholds are often close together.
            o.append(
                f'<text x="{xv + 3:.1f}" y="{top + 12 + 12 * (n % 3)}" fill="#555">{escape(lab)}</text>'
            )
    o.append(
        f'<clipPath id="clip-{chart.uid}"><rect x="{left}" y="{top}" width="{pw}" height="{ph}"/></clipPath>'
    )
    for i, s in enumerate(chart.series):
        colour = PALETTE[i % len(PALETTE)]
        coords = [
            f"{px(_fwd(x, chart.x_log)):.1f},{py(_fwd(y, chart.y_log)):.1f}"
            for x, y in zip(s.x, s.y)
            if (not chart.x_log or x > 0)
            and (not chart.y_log or y > 0)
            and math.isfinite(x)
            and math.isfinite(y)
        ]
        dash = ' stroke-dasharray="5,3"' if s.dashed else ""
        if coords:
            o.append(
                f'<polyline clip-path="url(#clip-{chart.uid})" fill="none" stroke="{colour}" '
                f'stroke-width="1.6"{dash} points="{" ".join(coords)}"/>'
            )
        ly = top + 12 + 16 * i
        o.append(
            f'<line x1="{left + pw + 8}" y1="{ly - 4}" x2="{left + pw + 26}" y2="{ly - 4}" '
            f'stroke="{colour}" stroke-width="2"{dash}/>'
        )
        o.append(f'<text x="{left + pw + 30}" y="{ly}">{escape(s.label[:22])}</text>')
    o.append("</svg>")
    return "\n".join(o)
