"""Identification (1:N): search probes against a gallery by exact numpy nearest neighbour.

At a threshold t and gallery size N (NIST FRVT 1:N definitions, rank 1):
  FPIR(N, t) = share of non-mated probes (nobody in the gallery) that return any candidate
  FNIR(N, t) = share of mated probes whose nearest gallery entry is not their mate at d <= t
and the false matches a non-mated search produces are compared with what the 1:1 calibration
predicts: expected = probes x N x FMR(t). This is the ACLU experiment (members of Congress
searched against mugshots) made reproducible on anyone's data: with N large, even a small
FMR gives many false matches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..rates import wilson_interval
from .verification import HalfOffsets, scored_distances

F64 = NDArray[np.float64]


def split_gallery(identity: Sequence[int], enrolled: Sequence[bool]) -> tuple[list[int], list[int]]:
    """One dataset into (gallery, probes): each person with 2+ enrolled images gives the first
    to the gallery and the rest as mated probes; people with one image alternate between
    gallery distractor and non-mated probe."""
    by_id: dict[int, list[int]] = {}
    for i, (ident, ok) in enumerate(zip(identity, enrolled)):
        if ok:
            by_id.setdefault(ident, []).append(i)
    gallery: list[int] = []
    probes: list[int] = []
    singles = 0
    for ident in sorted(by_id):
        members = by_id[ident]
        if len(members) > 1:
            gallery.append(members[0])
            probes.extend(members[1:])
        else:
            (gallery if singles % 2 == 0 else probes).append(members[0])
            singles += 1
    return gallery, probes


def gallery_sizes(n: int) -> list[int]:
    """1-3-10 steps up to the whole gallery."""
    sizes = [s for k in range(1, 8) for s in (10**k, 3 * 10**k) if s < n]
    return sorted(set(sizes + [n]))


def identification(
    gallery: F64,
    gallery_ids: Sequence[str],
    probes: F64,
    probe_ids: Sequence[str],
    thresholds: Mapping[str, float],
    fmr_of_threshold: Mapping[str, float],
    *,
    sizes: Sequence[int] | None = None,
    repeats: int = 3,
    seed: int = 0,
    half_offsets: HalfOffsets | None = None,
) -> dict[str, Any]:
    """FPIR and FNIR against gallery size and threshold, and expected versus observed false
    matches. Gallery rows of NaN (failures to enrol) are not enrolled; probe rows of NaN never
    return a candidate (a miss when mated)."""
    keep = ~np.isnan(gallery).any(axis=1)
    g = gallery[keep]
    gid = np.asarray(gallery_ids, dtype=object)[keep]
    d = scored_distances(np.nan_to_num(probes, nan=0.0), g, half_offsets)
    d[np.isnan(probes).any(axis=1)] = np.inf
    pid = np.asarray(probe_ids, dtype=object)
    rng = np.random.default_rng(seed)
    sizes = list(sizes) if sizes else gallery_sizes(len(g))
    rows: list[dict[str, Any]] = []
    for n in sizes:
        n = min(n, len(g))
        acc: dict[str, dict[str, float]] = {
            name: {"fp": 0.0, "nm": 0.0, "fn": 0.0, "m": 0.0, "pairs": 0.0, "expected": 0.0}
            for name in thresholds
        }
        for _ in range(repeats if n < len(g) else 1):
            subset = rng.choice(len(g), size=n, replace=False)
            sub_ids = gid[subset]
            mated = np.isin(pid, sub_ids)
            ds = d[:, subset]
            nearest = ds.argmin(axis=1) if n else np.zeros(len(pid), dtype=np.int64)
            best = ds[np.arange(len(pid)), nearest] if n else np.full(len(pid), np.inf)
            hit_is_mate = sub_ids[nearest] == pid
            for name, t in thresholds.items():
                a = acc[name]
                a["nm"] += float((~mated).sum())
                a["fp"] += float(((best <= t) & ~mated).sum())
                a["m"] += float(mated.sum())
                a["fn"] += float((mated & ~((best <= t) & hit_is_mate)).sum())
                a["pairs"] += float((ds[~mated] <= t).sum())
                a["expected"] += float((~mated).sum()) * n * fmr_of_threshold[name]
        for name, a in acc.items():
            reps = repeats if n < len(g) else 1
            lo_fp, hi_fp = wilson_interval(a["fp"], a["nm"])
            lo_fn, hi_fn = wilson_interval(a["fn"], a["m"])
            rows.append({
                "gallery_size": n,
                "threshold": name,
                "distance": thresholds[name],
                "fmr_per_comparison": fmr_of_threshold[name],
                "non_mated_probes": a["nm"] / reps,
                "mated_probes": a["m"] / reps,
                "fpir": a["fp"] / a["nm"] if a["nm"] else None,
                "fpir_low": float(lo_fp), "fpir_high": float(hi_fp),
                "fnir": a["fn"] / a["m"] if a["m"] else None,
                "fnir_low": float(lo_fn), "fnir_high": float(hi_fn),
                "false_matches_observed": a["pairs"] / reps,
                "false_matches_expected": a["expected"] / reps,
            })  # fmt: skip
    return {
        "gallery": {
            "entries": len(g),
            "identities": len(set(gid)),
            "failed_to_enrol": int((~keep).sum()),
        },
        "probes": {
            "total": len(pid),
            "failed_to_enrol": int(np.isnan(probes).any(axis=1).sum()),
            "mated_at_full_size": int(np.isin(pid, gid).sum()),
        },
        "rank": 1,
        "repeats_per_size": repeats,
        "rows": rows,
    }
