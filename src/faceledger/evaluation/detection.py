"""Detection and quality-filter rates per group: how often no face is found (failure to detect)
and how often the found face is refused by each QualityFilter level, with the reasons.

Each image counts once (different photos, mostly different people), so intervals are Wilson
score intervals; ratios between groups are flagged when the extreme groups' intervals do not
overlap.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from .enrolment import Enrolment
from .groups import ratio_and_note
from ..rates import Interval, intervals_overlap, wilson_interval

LEVELS = ("LOW", "MEDIUM", "HIGH")


def _rate(k: int, n: int) -> dict[str, float | None]:
    lo, hi = wilson_interval(k, n)
    return {"value": k / n if n else None, "low": float(lo), "high": float(hi), "count": k, "of": n}


def _cell(enrolments: Sequence[Enrolment]) -> dict[str, Any]:
    n = len(enrolments)
    missed = sum(1 for e in enrolments if not e.enrolled)
    out: dict[str, Any] = {
        "images": n,
        "undecodable": sum(1 for e in enrolments if e.error),
        "failure_to_detect": _rate(missed, n),
        "several_faces": sum(1 for e in enrolments if e.n_faces > 1),
        "quality_filter": {},
    }
    for level in LEVELS:
        reasons: Counter[str] = Counter()
        refused = 0
        for e in enrolments:
            r = e.reasons(level)
            if r:
                refused += 1
                reasons.update(r)
        out["quality_filter"][level] = {"refused": _rate(refused, n), "reasons": dict(reasons)}
    return out


def detection_rates(
    enrolments: Sequence[Enrolment], groups: Sequence[str | None] | None = None
) -> dict[str, Any]:
    """Failure-to-detect and QualityFilter refusal rates overall and per group."""
    result: dict[str, Any] = {"overall": _cell(enrolments)}
    if groups is None:
        return result
    names = sorted({g for g in groups if g is not None})
    per = {g: _cell([e for e, gg in zip(enrolments, groups) if gg == g]) for g in names}
    result["groups"] = per
    result["unlabelled_images"] = sum(1 for g in groups if g is None)
    comparisons = []
    metrics: list[tuple[str, Any]] = [("failure_to_detect", lambda c: c["failure_to_detect"])]
    for level in LEVELS:
        metrics.append(
            (f"refused_by_{level}", lambda c, lv=level: c["quality_filter"][lv]["refused"])
        )
    for name, get in metrics:
        vals = {g: get(c) for g, c in per.items() if get(c)["value"] is not None}
        if len(vals) < 2:
            continue
        order = sorted(vals, key=lambda g: vals[g]["value"])
        lo, hi = order[0], order[-1]
        ratio, note = ratio_and_note(vals[hi]["value"], vals[lo]["value"])
        ih = Interval(vals[hi]["value"], vals[hi]["low"], vals[hi]["high"])
        il = Interval(vals[lo]["value"], vals[lo]["low"], vals[lo]["high"])
        comparisons.append({
            "rate": name,
            "highest": hi,
            "lowest": lo,
            "max_over_min": ratio,
            "note": note,
            "intervals_overlap": intervals_overlap(ih, il),
            "flagged": not intervals_overlap(ih, il),
        })  # fmt: skip
    result["comparisons"] = comparisons
    return result
