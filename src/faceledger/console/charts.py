"""The calibration chart: inline SVG drawn on the server (no JavaScript, no library).

x: the false-match rate a threshold means (log scale), with the Similarity it corresponds to
(Similarity = 100 x (1 - FMR)) on the top axis; y: the false non-match rate at that threshold.
A table beside it carries the same numbers for screen readers and for copying.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

W, H = 640, 320
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 40, 44
LOG_MIN, LOG_MAX = -7.0, 0.0


def _x(fmr: float) -> float:
    lf = min(LOG_MAX, max(LOG_MIN, math.log10(max(fmr, 10 ** LOG_MIN))))
    return LEFT + (lf - LOG_MIN) / (LOG_MAX - LOG_MIN) * (W - LEFT - RIGHT)


def _y(fnmr: float) -> float:
    return TOP + (1.0 - min(1.0, max(0.0, fnmr))) * (H - TOP - BOTTOM)


def calibration_chart(curve: Mapping[str, Any]) -> str:
    """SVG of FNMR against FMR (and Similarity) for a `calibration_curve` result."""
    points = [p for p in curve.get("Points", []) if p["FalseMatchRate"] > 0]
    path = " ".join(f"{'M' if i == 0 else 'L'}{_x(p['FalseMatchRate']):.1f},"
                    f"{_y(p['FalseNonMatchRate']):.1f}" for i, p in enumerate(points))
    parts = [
        f'<svg viewBox="0 0 {W} {H}" role="img" class="chart" '
        f'aria-labelledby="calib-title calib-desc">',
        '<title id="calib-title">Calibration of model '
        f'{html.escape(str(curve.get("ModelVersion")))}</title>',
        '<desc id="calib-desc">False non-match rate (vertical) against the false-match rate a '
        'threshold means (horizontal, log scale) and its Similarity (top axis). The table below '
        'gives the same numbers.</desc>',
        f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" '
        'fill="#fff" stroke="#888"/>',
    ]
    for e in range(int(LOG_MIN), int(LOG_MAX) + 1):
        x = _x(10.0 ** e)
        sim = 100 * (1 - 10.0 ** e)
        parts.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{H - BOTTOM}" '
                     'stroke="#ddd"/>')
        parts.append(f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">'
                     f'1e{e}</text>')
        label = f"{sim:.{max(0, -e - 2)}f}" if e < 0 else "0"
        parts.append(f'<text x="{x:.1f}" y="{TOP - 8}" text-anchor="middle">{label}</text>')
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = _y(v)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" '
                     'stroke="#eee"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    parts += [
        f'<path d="{path}" fill="none" stroke="#3b6ea5" stroke-width="2.5"/>',
        f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 8}" text-anchor="middle">'
        'false-match rate (FMR) the threshold means</text>',
        f'<text x="{(LEFT + W - RIGHT) / 2}" y="14" text-anchor="middle">Similarity threshold'
        '</text>',
        f'<text x="14" y="{(TOP + H - BOTTOM) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(TOP + H - BOTTOM) / 2})">FNMR</text>',
        "</svg>",
    ]
    return "".join(parts)
