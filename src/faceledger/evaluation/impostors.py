"""False-match rates per demographic group on a set where every image is a different person.

Such a set (UTKFace, a folder of staff badge photos, a mugshot sample) has no genuine pairs, but
every pair of its images is an impostor pair, which is all a false-match rate needs. Rates are
reported within each group (two people of the same sex, race and age group, as NIST FRVT part 3
measures them: that is where false matches happen) and across each pair of groups, at the
operating thresholds, with 95% intervals; the highest/lowest within-group ratio is flagged when
the two intervals do not overlap, and a threshold whose promise (FMR at most 1 - S/100) is
broken for a group is flagged as such.

"Every image a different person" is an assumption a dataset can break (UTKFace holds some
images under two names, and some people many times). A reviewed list of such pairs
(`evaluation.duplicates`; the shipped one for utkface-balanced + utkface-more is used with
`--utkface` by default) joins the images of one person: their pairs are left out of every count,
within and across groups. Pairs closer than `duplicate_distance` that no list joins are listed as
possible duplicates for a person to look at, and they are counted, not silently removed.
(Duplicates are judged on raw distance; rates on the distances the calibration scores,
normalised if it normalises.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .groups import compare_groups
from ..rates import ClusteredPairs, Interval, cross_identity_pairs_below, wilson_interval
from .verification import HalfOffsets, histogram, offsets_of, score_edges, scored_distances

# Pairs of different UTKFace images closer than this are very likely the same person (LFW's
# closest impostor pairs, at 0.215, were labelling errors and duplicate photos).
DEFAULT_DUPLICATE_DISTANCE = 0.2
# Near-duplicate pairs listed in full; beyond this only counted.
MAX_LISTED_DUPLICATES = 200


def _within_group(
    templates: NDArray[np.float64],
    person: NDArray[np.int64],
    thresholds: Mapping[str, float],
    nominal: Mapping[str, float],
    replicates: int,
    seed: int,
    half_offsets: HalfOffsets | None,
) -> tuple[dict[str, Any], ClusteredPairs | None]:
    enrolled = np.isfinite(templates).all(axis=1)
    n = int(enrolled.sum())
    if n < 2:
        rows = [
            {"name": name, "threshold": float(t), "fmr": Interval(*(float("nan"),) * 3).as_dict(),
             "impostor_matches": 0, "nominal_fmr": nominal[name], "promise_broken": False}
            for name, t in thresholds.items()
        ]  # fmt: skip
        return {"images": n, "pairs": {"impostor": 0}, "at_thresholds": rows,
                "no_data": "fewer than two enrolled images"}, None  # fmt: skip
    keep = templates[enrolled]
    cutoff = max(thresholds.values(), default=0.0)
    # Every image is its own person, except images a reviewed duplicate list joins: pairs
    # within a person are not impostor pairs, and each person is resampled as one.
    cp = ClusteredPairs.from_embeddings(
        keep, person[enrolled], max_fmr=1e-2, min_cutoff=cutoff,
        offsets=offsets_of(keep, half_offsets),
    )  # fmt: skip
    rates = cp.verification_rates(
        thresholds=list(thresholds.values()), replicates=replicates, seed=seed
    )["at_thresholds"]
    rows = []
    for name, r in zip(thresholds, rates):
        fmr = r["fmr"]
        assert isinstance(fmr, dict)
        low = fmr.get("low")
        rows.append({
            "name": name, "threshold": r["threshold"], "fmr": fmr,
            "impostor_matches": r["impostor_matches"], "nominal_fmr": nominal[name],
            # broken: even the lower end of the 95% interval is above what the threshold promises
            "promise_broken": low is not None and float(low) > nominal[name],
        })  # fmt: skip
    return {"images": n, "people": cp.n_ids, "pairs": {"impostor": cp.n_impostor},
            "at_thresholds": rows}, cp  # fmt: skip


def _cross_groups(
    templates: NDArray[np.float64],
    person: NDArray[np.int64],
    garr: NDArray[np.object_],
    labels: Sequence[str],
    thresholds: Mapping[str, float],
    half_offsets: HalfOffsets | None,
) -> list[dict[str, Any]]:
    """FMR of pairs whose two people are in different groups (Wilson intervals: each image
    takes part in many pairs, so these are narrower than a people-resampling bootstrap)."""
    out = []
    t = np.asarray(list(thresholds.values()), dtype=np.float64)
    ok = np.isfinite(templates).all(axis=1)
    for i, a in enumerate(labels):
        in_a = (garr == a) & ok
        xa, pa = templates[in_a], person[in_a]
        for b in labels[i + 1 :]:
            in_b = (garr == b) & ok
            xb, pb = templates[in_b], person[in_b]
            # one person labelled into two groups (a reviewed duplicate): not an impostor pair
            other = (pa[:, None] != pb[None, :]).ravel()
            n = int(other.sum())
            if n == 0:
                continue
            d = scored_distances(xa, xb, half_offsets).ravel()[other]
            k = (d[None, :] <= t[:, None]).sum(axis=1)
            lo, hi = wilson_interval(k, n)
            out.append({
                "groups": [a, b], "pairs": n,
                "at_thresholds": [
                    {"name": name, "fmr": {"value": float(k[c] / n), "low": float(lo[c]),
                                           "high": float(hi[c])}, "impostor_matches": int(k[c])}
                    for c, name in enumerate(thresholds)
                ],
            })  # fmt: skip
    return out


def near_duplicates(
    templates: NDArray[np.float64],
    keys: Sequence[str],
    duplicate_distance: float,
    person: NDArray[np.int64] | None = None,
) -> dict[str, Any]:
    """Pairs closer than `duplicate_distance` that no reviewed list joins: possibly one person
    twice (listed, closest first, for a person to look at)."""
    ok = np.flatnonzero(np.isfinite(templates).all(axis=1))
    if len(ok) < 2:
        return {"distance": duplicate_distance, "count": 0, "pairs": []}
    ident = np.arange(len(ok)) if person is None else person[ok]
    i, j, d = cross_identity_pairs_below(templates[ok], ident, duplicate_distance)
    order = np.argsort(d, kind="stable")
    listed = [
        {"a": keys[int(ok[i[o]])], "b": keys[int(ok[j[o]])], "distance": round(float(d[o]), 4)}
        for o in order[:MAX_LISTED_DUPLICATES]
    ]
    return {"distance": duplicate_distance, "count": int(len(d)), "pairs": listed}


def impostor_rates(
    templates: NDArray[np.float64],
    keys: Sequence[str],
    groups: Sequence[str | None],
    thresholds: Mapping[str, float],
    nominal_fmr: Mapping[str, float],
    *,
    duplicate_distance: float = DEFAULT_DUPLICATE_DISTANCE,
    replicates: int = 200,
    seed: int = 0,
    half_offsets: HalfOffsets | None = None,
    person: Sequence[int] | None = None,
    duplicates: Mapping[str, Any] | None = None,
    not_covered: Sequence[str] = (),
) -> dict[str, Any]:
    """Within-group and cross-group FMR at each threshold, the overall FMR, the max/min
    comparison between groups and the near-duplicate check. `person` (an id per image, from a
    reviewed duplicate list) joins images of one person: their pairs are not impostor pairs.
    `not_covered`: groups the calibration makes no promise for (children, for model 2.0):
    their broken promises are marked as expected, and `overall_covered` is the overall rate
    without them (what the promise is about)."""
    tmpl = np.asarray(templates, dtype=np.float64)
    pid = (np.arange(len(tmpl), dtype=np.int64) if person is None
           else np.asarray(person, dtype=np.int64))  # fmt: skip
    garr = np.array([g if g is not None else "" for g in groups], dtype=object)
    labels = sorted({g for g in groups if g is not None})
    per_group: dict[str, dict[str, Any]] = {}
    pairs: dict[str, ClusteredPairs] = {}
    for g in labels:
        section, cp = _within_group(
            tmpl[garr == g], pid[garr == g], thresholds, nominal_fmr, replicates, seed,
            half_offsets,
        )
        per_group[g] = section
        if cp is not None:
            pairs[g] = cp
    overall, _ = _within_group(
        tmpl, pid, thresholds, nominal_fmr, replicates, seed, half_offsets
    )
    uncovered = sorted(set(not_covered) & set(labels))
    overall_covered = None
    if uncovered:
        mask = np.array([g not in uncovered for g in garr], dtype=bool)
        overall_covered, _ = _within_group(
            tmpl[mask], pid[mask], thresholds, nominal_fmr, replicates, seed, half_offsets)
    edges = score_edges(*(np.asarray(c.impostor, dtype=np.float64) for c in pairs.values()))
    for g, cp in pairs.items():
        per_group[g]["distributions"] = {"impostor": histogram(np.asarray(cp.impostor), edges)}
    # no genuine pairs here: FMR only (groups without data have no value and are left out)
    comparisons = compare_groups(per_group, list(thresholds), rates=("fmr",))
    return {
        "design": (
            "every image is a different person: impostor pairs within each group (as NIST "
            "FRVT part 3), and across groups"
        ),
        "unlabelled_images": int(sum(g is None for g in groups)),
        "overall": overall,
        "not_covered": uncovered,
        "overall_covered": overall_covered,
        "groups": per_group,
        "no_data": [g for g, s in per_group.items() if "no_data" in s],
        "comparisons": comparisons,
        "cross_groups": _cross_groups(tmpl, pid, garr, labels, thresholds, half_offsets),
        "edges": edges.tolist(),
        "near_duplicates": near_duplicates(tmpl, keys, duplicate_distance, pid)
        | {"excluded": dict(duplicates or {}),
           "joined_images": int(len(pid) - len(np.unique(pid)))},
        "promises_broken": [
            {"group": g, "threshold": r["name"], "fmr": r["fmr"]["value"],
             "nominal_fmr": r["nominal_fmr"], "covered": g not in uncovered}
            for g, s in per_group.items() for r in s["at_thresholds"] if r["promise_broken"]
        ],  # fmt: skip
    }

