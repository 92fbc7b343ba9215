"""Error rates per demographic group at the operating thresholds, as NIST FRVT part 3 measures
them: impostor pairs are drawn *within* each group (two people of the same sex, say), since
cross-group impostors are easy and would flatter every group. Reported with 95% intervals, the
max/min ratio between groups, and a flag when the extreme groups' intervals do not overlap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .datasets import ImageSet, Labels, PairList
from ..rates import ClusteredPairs, Interval, intervals_overlap
from .verification import HalfOffsets, histogram, offsets_of, score_edges

UNLABELLED = None


def image_groups(images: ImageSet, labels: Labels, attributes: Sequence[str]) -> list[str | None]:
    """Each image's group, e.g. `F` or `female/asian` (None when a label is missing)."""
    out: list[str | None] = []
    for key, ident in zip(images.keys, images.identity):
        lab = labels.for_image(key, images.names[ident])
        vals = [lab.get(a, "") for a in attributes]
        out.append("/".join(vals) if all(vals) else UNLABELLED)
    return out


def _interval(raw: Any) -> Interval:
    def num(x: Any) -> float:
        return float("nan") if x is None else float(x)

    return Interval(num(raw["value"]), num(raw["low"]), num(raw["high"]))


def ratio_and_note(high: float, low: float) -> tuple[float | None, str]:
    """max/min between groups, and why it is undefined when it is."""
    if high <= 0:
        return None, "no errors in any group"
    if low <= 0:
        return None, "the lowest group has no errors: ratio undefined (see the intervals)"
    return high / low, ""


def compare_groups(
    per_group: Mapping[str, Mapping[str, Any]],
    names: Sequence[str],
    rates: Sequence[str] = ("fmr", "fnmr"),
) -> list[dict[str, Any]]:
    """For each threshold and rate: highest and lowest group, their ratio, and whether their
    95% intervals overlap (no overlap: the difference is not chance at this sample size)."""
    out: list[dict[str, Any]] = []
    for i, name in enumerate(names):
        for rate in rates:
            vals = {
                g: _interval(r["at_thresholds"][i][rate])
                for g, r in per_group.items()
                if r["at_thresholds"][i][rate]["value"] is not None
            }
            if len(vals) < 2:
                continue
            order = sorted(vals, key=lambda g: vals[g].value)
            lo, hi = order[0], order[-1]
            ratio, note = ratio_and_note(vals[hi].value, vals[lo].value)
            overlap = intervals_overlap(vals[hi], vals[lo])
            out.append({
                "threshold": name,
                "rate": rate,
                "highest": hi,
                "lowest": lo,
                "max_over_min": ratio,
                "note": note,
                "intervals_overlap": overlap,
                "flagged": not overlap,
            })  # fmt: skip
    return out


def _group_section(
    cp: ClusteredPairs,
    thresholds: Mapping[str, float],
    edges: NDArray[np.float64],
    replicates: int,
    seed: int,
) -> dict[str, Any]:
    names = list(thresholds)
    rates = cp.verification_rates(
        thresholds=[thresholds[n] for n in names], replicates=replicates, seed=seed
    )
    return {
        "pairs": {"genuine": cp.n_genuine, "impostor": cp.n_impostor},
        "at_thresholds": [{"name": n} | r for n, r in zip(names, rates["at_thresholds"])],
        "distributions": {
            "genuine": histogram(cp.genuine, edges),
            "impostor": histogram(np.asarray(cp.impostor), edges),
        },
    }


def groups_all_pairs(
    templates: NDArray[np.float64],
    images: ImageSet,
    groups: Sequence[str | None],
    thresholds: Mapping[str, float],
    *,
    replicates: int = 200,
    seed: int = 0,
    half_offsets: HalfOffsets | None = None,
) -> dict[str, Any]:
    """Per-group FMR (within-group impostor pairs) and FNMR over every pair of a folder set."""
    ident = np.asarray(images.identity)
    labels = sorted({g for g in groups if g is not None})
    garr = np.array([g if g is not None else "" for g in groups], dtype=object)
    cps: dict[str, ClusteredPairs] = {}
    cutoff = max(thresholds.values(), default=0.0)
    for g in labels:
        idx = np.flatnonzero(garr == g)
        cps[g] = ClusteredPairs.from_embeddings(
            templates[idx], ident[idx], max_fmr=1e-2, min_cutoff=cutoff,
            offsets=offsets_of(templates[idx], half_offsets),
        )  # fmt: skip
    edges = score_edges(
        *(c.genuine for c in cps.values()),
        *(np.asarray(c.impostor, dtype=np.float64) for c in cps.values()),
    )
    per_group = {
        g: {"images": int((garr == g).sum())}
        | _group_section(c, thresholds, edges, replicates, seed)
        for g, c in cps.items()
    }
    return {
        "design": "all pairs within each group (impostors of the same group, as NIST does)",
        "unlabelled_images": int(sum(g is None for g in groups)),
        "edges": edges.tolist(),
        "groups": per_group,
        "comparisons": compare_groups(per_group, list(thresholds)),
    }


def groups_pair_list(
    pairs: PairList,
    distances: NDArray[np.float64],
    groups: Sequence[str | None],
    thresholds: Mapping[str, float],
    *,
    replicates: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-group rates on a pair list: the pairs whose two images are both in the group
    (impostor pairs across groups are left out, and counted)."""
    a, b = np.asarray(pairs.a), np.asarray(pairs.b)
    garr = np.array([g if g is not None else "" for g in groups], dtype=object)
    ga, gb = garr[a], garr[b]
    ident = np.asarray(pairs.images.identity)
    same = np.asarray(pairs.same)
    labels = sorted({g for g in groups if g is not None})
    cps = {}
    for g in labels:
        m = (ga == g) & (gb == g)
        cps[g] = ClusteredPairs.from_pairs(
            distances[m], same[m], ident[a[m]], ident[b[m]], len(pairs.images.names)
        )
    edges = score_edges(
        *(c.genuine for c in cps.values()),
        *(np.asarray(c.impostor, dtype=np.float64) for c in cps.values()),
    )
    per_group = {g: _group_section(c, thresholds, edges, replicates, seed) for g, c in cps.items()}
    return {
        "design": "pairs of the list whose two images are both in the group",
        "cross_group_pairs_left_out": int(((ga != gb) | (ga == "")).sum()),
        "edges": edges.tolist(),
        "groups": per_group,
        "comparisons": compare_groups(per_group, list(thresholds)),
    }
