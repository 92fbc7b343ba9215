"""Making one calibration table keep its promise for every group it measured (pure numpy).

LFW gives millions of impostor pairs, enough to bound FMR down to ~1e-6, but its people are
mostly white men. A balanced set of distinct people (utkface-balanced: 200 per sex x race) gives
each group only a few thousand impostor pairs: enough to see how a group's false-match curve
sits against LFW's where it has data (FMR ~1e-2..1e-3), not to bound it at 1e-5 by itself.

The rule. Measured here, the groups' impostor distributions differ from LFW's mainly by a
*shift*: a group whose faces the model packs closer together reaches a given FMR at a smaller
distance (raw distances: ~0.2 closer for Asian women; docs/accuracy.md §6). So for each group g
the shift Delta_g is the smallest move of LFW's curve that puts it above the group's own 95%
upper bound at every distance where the group has at least `min_count` impostor pairs (and
its bound is at most `max_fmr`, the range where thresholds are set):

    Delta_g = max over those d of ( FMR_LFW^-1( U_g(d) ) - d ),   at least 0

and the shipped curve is LFW's moved by the worst group's shift:

    FMR_table(d) = FMR_LFW(d + max_g Delta_g)

(FMR_LFW is non-decreasing, so this is also max_g FMR_LFW(d + Delta_g)). Below a group's data the
rule assumes its tail has LFW's shape: an assumption, checked on the held-out half of the people
(`faceledger evaluate impostors --half test`), not a measurement.

Where that assumption is not checked, nothing is promised (format 4, model 2.0's table): each
group x threshold is `covered` only where the group's held-out people (never used to fit) show
the promise, i.e. the upper end of the 95% interval of their FMR at the threshold is at or below
1 - S/100. A group with too few held-out pairs to show it (below ~3.8/FMR pairs with no false
match) is "not covered (not shown)" at that threshold, in every surface that prints the table
(`coverage_lines`: the `calibration` command, transparency reports, the console's Populations;
the console's group rows: `held_out_status`). Measured on model 2.0: fitting the shift down to a
group's closest pair (min_count 1 or 3 instead of 10) covered nothing more on held-out people and
more than doubled the false non-matches at 99.99 (docs/accuracy.md §0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .bound import UpperBound
from .table import CalibrationTable

F64 = NDArray[np.float64]

# A group's bound is used where at least this many of its impostor pairs are at or below d:
# below that its interval is too wide to say anything but "not measured".
MIN_COUNT = 10
# ... and where its bound is at most this: thresholds live at FMR <= 1e-1, and where curves
# approach 1 they saturate and their distance differences mean nothing.
MAX_FMR = 0.1


@dataclass(frozen=True)
class GroupShift:
    """How far LFW's curve must move to cover one group."""

    group: str
    images: int
    pairs: int
    shift: float  # Delta_g, >= 0
    binding_distance: float | None  # where the shift is set (None: no usable data)
    binding_log10_fmr: float | None  # the group's bound there
    usable_points: int  # grid distances with >= min_count pairs

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group, "images": self.images, "impostor_pairs": self.pairs,
            "shift": round(self.shift, 5), "binding_distance": self.binding_distance,
            "binding_log10_fmr": self.binding_log10_fmr, "usable_points": self.usable_points,
            "measured": self.usable_points > 0,
        }  # fmt: skip


def inverse_curve(distance: F64, log10_fmr: F64, target_log10: F64) -> F64:
    """The largest distance at which a non-decreasing curve is still at or below each target
    (the curve's first distance below its floor, its last above its top)."""
    out = np.empty(len(target_log10))
    for i, t in enumerate(target_log10):
        j = int(np.searchsorted(log10_fmr, t, side="right")) - 1
        if j < 0:
            out[i] = distance[0]
        elif j >= len(distance) - 1:
            out[i] = distance[-1]
        else:
            lo, hi = log10_fmr[j], log10_fmr[j + 1]
            frac = 0.0 if hi <= lo else (t - lo) / (hi - lo)
            out[i] = distance[j] + frac * (distance[j + 1] - distance[j])
    return out


def group_shift(
    group: str,
    images: int,
    bound: UpperBound,
    distance: F64,
    log10_fmr: F64,
    *,
    min_count: int = MIN_COUNT,
    max_fmr: float = MAX_FMR,
) -> GroupShift:
    """Delta_g for one group's bound against the reference curve (on the same grid)."""
    usable = (bound.count >= min_count) & (bound.upper <= max_fmr)
    if not usable.any():
        return GroupShift(group, images, bound.n, 0.0, None, None, 0)
    d = bound.distance[usable]
    with np.errstate(divide="ignore"):
        target = np.log10(bound.upper[usable])
    need = inverse_curve(distance, log10_fmr, target) - d
    i = int(np.argmax(need))
    return GroupShift(
        group, images, bound.n, max(0.0, float(need[i])), round(float(d[i]), 5),
        round(float(target[i]), 4), int(usable.sum()),
    )  # fmt: skip


def shifted_curve(distance: F64, log10_fmr: F64, shift: float) -> F64:
    """log10 FMR_table(d) = log10 FMR(d + shift) on the same grid (the top held beyond it)."""
    return np.asarray(np.interp(distance + shift, distance, log10_fmr), dtype=np.float64)


# How each per-threshold status reads, everywhere the table is shown (the console's group table
# and footer, `faceledger calibration`, transparency reports): one set of words.
STATUS_WORDS = {
    "covered": "covered",
    "not shown": "not covered (too few held-out pairs to show it)",
    "broken": "NOT covered (BROKEN: held-out people matched more often than promised)",
    "not covered": "not covered (the table is not set for this group)",
}
_SHORT_WORDS = {"covered": "yes", "broken": "BROKEN", "not covered": "no", "not shown": "not shown"}


def _status_word(status: str) -> str:
    return _SHORT_WORDS.get(status, "not shown")


@dataclass(frozen=True)
class ThresholdCoverage:
    """Whom a table's promise holds for at one threshold: the groups it measured, by status."""

    similarity: float
    promised_fmr: float
    covered: tuple[str, ...]
    not_shown: tuple[str, ...]  # too few held-out pairs to show the promise
    broken: tuple[str, ...]  # held-out people show the promise broken
    not_covered: tuple[str, ...]  # groups the table is not set for (children)
    held_out: bool = True  # checked on held-out people (format 4); else on the fit people only

    @property
    def measured(self) -> int:
        return len(self.covered) + len(self.not_shown) + len(self.broken) + len(self.not_covered)

    def sentence(self) -> str:
        """The promise at this threshold in one sentence, for people."""
        held = ("shown to hold on held-out people" if self.held_out else
                "covered (checked on the people it was fitted on only)")
        head = (f"At Similarity {self.similarity:g} (false-match rate at most "
                f"{self.promised_fmr:g}), the published rate is {held} for ")
        if len(self.covered) == self.measured:
            head += f"all {self.measured} groups measured"
        else:
            head += f"{len(self.covered)} of the {self.measured} groups measured"
            head += f" ({', '.join(self.covered)})" if self.covered else ""
        rest = [f"{len(groups)} {words}" for groups, words in (
            (self.broken, "BROKEN (held-out people matched more often than promised)"),
            (self.not_shown, "not shown (too few held-out pairs)"),
            (self.not_covered, "not covered (the table is not set for them)")) if groups]
        return head + ("; " + "; ".join(rest) if rest else "") + "."

    def as_dict(self) -> dict[str, Any]:
        return {"Similarity": self.similarity, "PromisedFalseMatchRate": self.promised_fmr,
                "Covered": list(self.covered), "NotShown": list(self.not_shown),
                "Broken": list(self.broken), "NotCovered": list(self.not_covered),
                "GroupsMeasured": self.measured, "HeldOut": self.held_out,
                "Sentence": self.sentence()}


def threshold_coverage(table: CalibrationTable) -> list[ThresholdCoverage]:
    """Per threshold the table checked its groups at (from the table, in its order): which
    groups the promise holds for. Format 4 tables decide it per group and threshold on held-out
    people; older ones per group (covered or not at every threshold). Empty without groups."""
    cov = table.provenance.get("coverage") or {}
    held = cov.get("held_out")
    statuses: dict[float, dict[str, list[str]]] = {}
    promised: dict[float, float] = {}
    if isinstance(held, dict):
        rows = [(g["group"], float(t["similarity"]), float(t["promised_fmr"]), str(t["status"]))
                for g in held.get("groups", []) for t in g["thresholds"]]
    else:
        rows = [(g["group"], float(t["similarity"]), float(t["promised_fmr"]),
                 "covered" if g["covered"] else "not covered")
                for g in cov.get("groups", []) for t in g.get("at_thresholds", [])]
    for group, sim, fmr, status in rows:
        promised[sim] = fmr
        by = statuses.setdefault(sim, {k: [] for k in STATUS_WORDS})
        by[status if status in by else "not shown"].append(group)
    return [ThresholdCoverage(sim, promised[sim], tuple(by["covered"]), tuple(by["not shown"]),
                              tuple(by["broken"]), tuple(by["not covered"]),
                              isinstance(held, dict))
            for sim, by in statuses.items()]


def coverage_at(table: CalibrationTable, similarity: float) -> ThresholdCoverage | None:
    """`threshold_coverage` at exactly `similarity`, or None where the table checked no group."""
    return next((t for t in threshold_coverage(table)
                 if abs(t.similarity - similarity) < 1e-9), None)


def held_out_status(table: CalibrationTable) -> dict[str, dict[float, str]]:
    """Per group, per promised FMR: `covered`, `not shown` (too few held-out pairs to show the
    promise: not covered at that threshold), `broken` or `not covered` (format 4 tables; empty
    for older ones, whose coverage is per group)."""
    cov = table.provenance.get("coverage") or {}
    held = cov.get("held_out") or {}
    return {
        g["group"]: {float(t["promised_fmr"]): str(t["status"]) for t in g["thresholds"]}
        for g in held.get("groups", [])
    }


def coverage_lines(table: CalibrationTable) -> list[str]:
    """Whom the table's promise was measured for, and whom not (for every surface that shows
    the calibration: this command, the transparency report, the console)."""
    cov = table.provenance.get("coverage")
    norm = table.normaliser
    if cov is None:
        return [
            "Populations: measured on LFW only (mostly white men). The promise is NOT checked "
            "for other groups; on faces of other populations false-match rates were measured "
            "up to ~100x higher (docs/accuracy.md)."
        ]
    lines = []
    if norm is not None:
        ref = norm.provenance.get("reference", {})
        lines.append(
            f"Scores are normalised by local density (no demographic label used): fitted on "
            f"{norm.provenance.get('cohort_size')} people of {ref.get('name', '?')}."
        )
    held = cov.get("held_out")
    if held:
        sims = [f"{t.similarity:g}" for t in threshold_coverage(table)]
        lines.append(
            f"The table is LFW's bound moved by {cov['shift']:.4f} (set by {cov['set_by']}) to "
            "cover every group's fit people. A group is covered at a threshold only where its "
            "held-out people (never used to fit) show the promise; elsewhere it is NOT covered "
            "at that threshold (not shown: too few pairs to show it; BROKEN: shown above it)."
        )
        lines.extend(t.sentence() for t in threshold_coverage(table))
        lines.append(
            f"  {'group':<22} {'held-out people':>15} {'pairs':>9}  "
            + "  ".join(f"{s:>9}" for s in sims)
        )
        for g in held["groups"]:
            marks = [_status_word(t["status"]) for t in g["thresholds"]]
            lines.append(
                f"  {g['group']:<22} {g['people']:>15} {g['impostor_pairs']:>9,}  "
                + "  ".join(f"{m:>9}" for m in marks)
            )
    else:
        lines.append(
            f"The table is LFW's bound moved by {cov['shift']:.4f} (set by {cov['set_by']}) to "
            "cover every group's within-group impostor pairs."
        )
        lines.extend(t.sentence() for t in threshold_coverage(table))
        for g in cov["groups"]:
            state = "covered" if g["covered"] else "NOT covered"
            if g.get("covered_through"):
                state += f" (too few people: through {g['covered_through']})"
            shift = f"{g['shift']:.4f}" if g["measured"] else "   -  "
            lines.append(
                f"  {g['group']:<22} {g['images']:>4} people, {g['impostor_pairs']:>6,} pairs, "
                f"shift {shift}  {state}"
            )
    lines.append(f"Children: {cov['children']}.")
    lines.append(f"Not measured: {cov['populations_not_measured']}.")
    return lines
