"""Verification (1:1) results: LFW pair-list protocols and all-pairs on folder datasets.

Every number comes from `faceledger.rates`; this module decides which pairs to score and
assembles the report sections (accuracy protocol, ROC, AUC, TAR at FMR, rates at thresholds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .datasets import PairList
from ..rates import (
    ClusteredPairs,
    accuracy,
    auc,
    best_accuracy_threshold,
    distances_of_pairs,
    roc_curve,
)
from ..rates import pair_distances as rates_pair_distances

TAR_FMRS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def histogram(values: NDArray[Any], edges: NDArray[np.float64]) -> list[int]:
    """Counts of finite values per bin (for score-distribution plots)."""
    v = np.asarray(values, dtype=np.float64)
    return [int(c) for c in np.histogram(v[np.isfinite(v)], bins=edges)[0]]


def score_edges(*arrays: NDArray[Any], bins: int = 60) -> NDArray[np.float64]:
    """Common histogram bin edges for distance arrays."""
    finite = [a[np.isfinite(a)] for a in arrays if len(a)]
    top = max((float(a.max()) for a in finite if len(a)), default=1.0)
    return np.linspace(0.0, max(top, 1e-6) * 1.0001, bins + 1)


# A calibration's score normalisation: each template's half-offset (`CalibrationTable.half_offsets`).
HalfOffsets = Callable[[NDArray[np.float64]], NDArray[np.float64]]


def offsets_of(
    templates: NDArray[np.float64], half_offsets: HalfOffsets | None
) -> NDArray[np.float64] | None:
    """The normalisation offsets of these templates (None: raw distances)."""
    return None if half_offsets is None else half_offsets(templates)


def scored_distances(
    a: NDArray[np.float64], b: NDArray[np.float64], half_offsets: HalfOffsets | None
) -> NDArray[np.float64]:
    """Distances between every row of `a` and every row of `b`, normalised as the calibration
    in use scores them."""
    d = rates_pair_distances(a, b)
    if half_offsets is not None:
        d -= half_offsets(a)[:, None] + half_offsets(b)[None, :]
    return d


def pair_distances(
    pairs: PairList, templates: NDArray[np.float64], half_offsets: HalfOffsets | None = None
) -> NDArray[np.float64]:
    """Distance of each listed pair (+inf where an image failed to enrol), normalised as the
    calibration in use is."""
    return distances_of_pairs(
        templates, pairs.a, pairs.b, offsets=offsets_of(templates, half_offsets)
    )


def _clustered(
    pairs: PairList, d: NDArray[np.float64], mask: NDArray[np.bool_] | None = None
) -> ClusteredPairs:
    ident = np.asarray(pairs.images.identity)
    a, b = np.asarray(pairs.a), np.asarray(pairs.b)
    same = np.asarray(pairs.same)
    if mask is not None:
        d, a, b, same = d[mask], a[mask], b[mask], same[mask]
    return ClusteredPairs.from_pairs(d, same, ident[a], ident[b], len(pairs.images.names))


def verification_section(
    cp: ClusteredPairs,
    thresholds: Mapping[str, float],
    *,
    fmr_targets: Sequence[float] = TAR_FMRS,
    replicates: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """ROC, AUC, TAR at FMR targets and FMR/FNMR at named thresholds, with 95% intervals."""
    names = list(thresholds)
    rates = cp.verification_rates(
        thresholds=[thresholds[n] for n in names], fmr_targets=fmr_targets,
        replicates=replicates, seed=seed,
    )  # fmt: skip
    at_t = [{"name": n} | r for n, r in zip(names, rates["at_thresholds"])]
    for row in rates["at_fmr"]:
        if not row["estimable"]:
            row["note"] = (
                f"not measurable: {cp.n_impostor:,} impostor pairs cannot show an FMR of "
                f"{row['fmr']:g} (needs at least {math.ceil(1 / float(str(row['fmr']))):,})"
            )
    t, fmr, tar = roc_curve(cp.genuine, cp.impostor)
    edges = score_edges(cp.genuine, np.asarray(cp.impostor, dtype=np.float64))
    return {
        "pairs": {"genuine": cp.n_genuine, "impostor": cp.n_impostor},
        "auc": auc(cp.genuine, cp.impostor),
        "tar_at_fmr": rates["at_fmr"],
        "at_thresholds": at_t,
        "roc": {"threshold": t.tolist(), "fmr": fmr.tolist(), "tar": tar.tolist()},
        "distributions": {
            "edges": edges.tolist(),
            "genuine": histogram(cp.genuine, edges),
            "impostor": histogram(np.asarray(cp.impostor), edges),
        },
    }


def lfw_protocol(
    pairs: PairList, d: NDArray[np.float64], train: tuple[PairList, NDArray[np.float64]] | None
) -> dict[str, Any]:
    """LFW's accuracy protocol. With folds: for each fold, the threshold that maximises
    accuracy on the other folds, accuracy on this one; mean and standard error over folds.
    With a separate training list (View 1): the threshold from training, accuracy on test."""
    same = np.asarray(pairs.same)
    fold = np.asarray(pairs.fold)
    if train is not None:
        tp, td = train
        tsame = np.asarray(tp.same)
        th = best_accuracy_threshold(td[tsame], td[~tsame])
        acc = accuracy(d[same], d[~same], th)
        n = len(d)
        se = math.sqrt(acc * (1 - acc) / n)
        return {
            "protocol": "threshold chosen on the training list, accuracy on this list",
            "train": tp.source,
            "threshold": th,
            "accuracy": acc,
            "standard_error": se,
            "train_accuracy": accuracy(td[tsame], td[~tsame], th),
        }
    if pairs.n_folds > 1:
        accs, ths = [], []
        for f in range(pairs.n_folds):
            test, rest = fold == f, fold != f
            th = best_accuracy_threshold(d[rest & same], d[rest & ~same])
            ths.append(th)
            accs.append(accuracy(d[test & same], d[test & ~same], th))
        mean = float(np.mean(accs))
        return {
            "protocol": f"{pairs.n_folds}-fold cross-validation (threshold from the other folds)",
            "fold_accuracy": accs,
            "fold_threshold": ths,
            "accuracy": mean,
            "standard_error": float(np.std(accs, ddof=1) / math.sqrt(len(accs))),
        }
    th = best_accuracy_threshold(d[same], d[~same])
    return {
        "protocol": "best threshold on this list itself (optimistic: no separate training data)",
        "threshold": th,
        "accuracy": accuracy(d[same], d[~same], th),
    }


def evaluate_pair_list(
    pairs: PairList,
    templates: NDArray[np.float64],
    thresholds: Mapping[str, float],
    *,
    train: tuple[PairList, NDArray[np.float64]] | None = None,
    fmr_targets: Sequence[float] = TAR_FMRS,
    replicates: int = 200,
    seed: int = 0,
    half_offsets: HalfOffsets | None = None,
) -> dict[str, Any]:
    """Verification on an LFW-format pair list; `train` = (list, its templates) for View 1."""
    d = pair_distances(pairs, templates, half_offsets)
    failed = np.asarray(np.isnan(templates).any(axis=1), dtype=bool)
    fte_pairs = int((failed[np.asarray(pairs.a)] | failed[np.asarray(pairs.b)]).sum())
    train_d = (
        None if train is None else (train[0], pair_distances(train[0], train[1], half_offsets))
    )
    cp = _clustered(pairs, d)
    out = verification_section(
        cp, thresholds, fmr_targets=fmr_targets, replicates=replicates, seed=seed
    )
    out["accuracy"] = lfw_protocol(pairs, d, train_d)
    out["pairs"]["with_failure_to_enrol"] = fte_pairs
    out["pairs"]["folds"] = pairs.n_folds
    return out


def evaluate_all_pairs(
    templates: NDArray[np.float64],
    identity: Sequence[int],
    thresholds: Mapping[str, float],
    *,
    fmr_targets: Sequence[float] = TAR_FMRS,
    replicates: int = 200,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    half_offsets: HalfOffsets | None = None,
) -> tuple[dict[str, Any], ClusteredPairs]:
    """Verification over every genuine and every cross-identity pair of a folder dataset."""
    cp = ClusteredPairs.from_embeddings(
        templates,
        identity,
        max_fmr=max(fmr_targets, default=0.01),
        min_cutoff=max(thresholds.values(), default=0.0),
        offsets=offsets_of(templates, half_offsets),
        progress=progress,
    )
    return verification_section(
        cp, thresholds, fmr_targets=fmr_targets, replicates=replicates, seed=seed
    ), cp
