"""Error rates of a distance-scored face matcher, in pure numpy: the one implementation of
FMR and FNMR that both `faceledger evaluate` and the calibration tables use.

Scores are distances (smaller = more alike); a comparison *matches* at threshold t when d <= t.
  FMR(t)  = share of impostor pairs (different people) with d <= t
  FNMR(t) = share of genuine pairs (same person) with d > t,  TAR = 1 - FNMR
A pair whose image failed to enrol carries d = +inf: it never matches (an error for a genuine
pair, a correct rejection for an impostor pair), so failures are counted, not dropped.

Pairs built from the same images and people are not independent. Confidence intervals therefore
come from a bootstrap that resamples *identities* (every pair moves with the people in it), the
usual way to respect that dependence; see `ClusteredPairs`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

F64 = NDArray[np.float64]
F32 = NDArray[np.float32]
I64 = NDArray[np.int64]

# Pairs per block when computing all cross-identity distances (~100 MB of float64 work space).
CHUNK_PAIRS = 12_000_000


def pair_distances(a: ArrayLike, b: ArrayLike) -> F64:
    """Euclidean distances between rows of `a` and rows of `b` (len(a) x len(b))."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.asarray(np.sqrt(np.maximum(sq, 0.0)), dtype=np.float64)


def _row_blocks(n: int, chunk_pairs: int) -> Iterator[tuple[int, int]]:
    rows = max(1, chunk_pairs // max(n, 1))
    for r0 in range(0, n, rows):
        yield r0, min(n, r0 + rows)


def count_cross_pairs(identity: ArrayLike) -> int:
    """Number of unordered pairs of images of different identities."""
    ident = np.asarray(identity)
    _, counts = np.unique(ident, return_counts=True)
    n = int(counts.sum())
    return (n * n - int((counts.astype(np.int64) ** 2).sum())) // 2


def _offsets(offsets: ArrayLike | None, n: int) -> F64:
    return np.zeros(n) if offsets is None else np.asarray(offsets, dtype=np.float64)


def cross_identity_distances(
    embeddings: ArrayLike,
    identity: ArrayLike,
    *,
    offsets: ArrayLike | None = None,
    chunk_pairs: int = CHUNK_PAIRS,
    progress: Callable[[int], None] | None = None,
) -> F32:
    """Every impostor distance (all pairs i < j of different identities), sorted ascending.

    `offsets` (one per row) are subtracted from both ends of each pair's distance: the score
    normalisation of `calibration.normalise`. Rows of NaN (images that failed to enrol) give
    +inf distances."""
    emb = np.asarray(embeddings, dtype=np.float64)
    ident = np.asarray(identity)
    n = len(emb)
    off = _offsets(offsets, n)
    out = np.empty(count_cross_pairs(ident), dtype=np.float32)
    pos = 0
    for r0, r1 in _row_blocks(n, chunk_pairs):
        d = pair_distances(emb[r0:r1], emb) - off[r0:r1, None] - off[None, :]
        rows = np.arange(r0, r1)[:, None]
        keep = (np.arange(n)[None, :] > rows) & (ident[r0:r1, None] != ident[None, :])
        vals = np.where(np.isnan(d), np.inf, d)[keep]
        out[pos : pos + len(vals)] = vals
        pos += len(vals)
        if progress is not None:
            progress(r1 - r0)
    assert pos == len(out)
    out.sort()
    return out


def cross_identity_pairs_below(
    embeddings: ArrayLike,
    identity: ArrayLike,
    cutoff: float,
    *,
    offsets: ArrayLike | None = None,
    chunk_pairs: int = CHUNK_PAIRS,
) -> tuple[I64, I64, F64]:
    """Impostor pairs (i < j) with distance <= cutoff: image indices and distances."""
    emb = np.asarray(embeddings, dtype=np.float64)
    ident = np.asarray(identity)
    n = len(emb)
    off = _offsets(offsets, n)
    ii: list[I64] = []
    jj: list[I64] = []
    dd: list[F64] = []
    for r0, r1 in _row_blocks(n, chunk_pairs):
        d = pair_distances(emb[r0:r1], emb) - off[r0:r1, None] - off[None, :]
        rows = np.arange(r0, r1)[:, None]
        keep = (np.arange(n)[None, :] > rows) & (ident[r0:r1, None] != ident[None, :])
        keep &= d <= cutoff  # NaN rows compare False: failures never enter
        r, c = np.nonzero(keep)
        ii.append((r + r0).astype(np.int64))
        jj.append(c.astype(np.int64))
        dd.append(d[r, c])
    return np.concatenate(ii), np.concatenate(jj), np.concatenate(dd)


def same_identity_pairs(identity: ArrayLike) -> tuple[I64, I64]:
    """All genuine pairs (i < j, same identity) as index arrays."""
    ident = np.asarray(identity)
    order = np.argsort(ident, kind="stable")
    ii: list[I64] = []
    jj: list[I64] = []
    bounds = np.flatnonzero(np.diff(ident[order])) + 1
    for members in np.split(order, bounds):
        if len(members) > 1:
            a, b = np.triu_indices(len(members), k=1)
            ii.append(members[a].astype(np.int64))
            jj.append(members[b].astype(np.int64))
    if not ii:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(ii), np.concatenate(jj)


def distances_of_pairs(
    embeddings: ArrayLike, a: ArrayLike, b: ArrayLike, *, offsets: ArrayLike | None = None
) -> F64:
    """Distances of the listed pairs (+inf where either image failed to enrol)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    ia, ib = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    off = _offsets(offsets, len(emb))
    d = np.linalg.norm(emb[ia] - emb[ib], axis=1) - off[ia] - off[ib]
    return np.where(np.isnan(d), np.inf, d)


# ---- rates at thresholds -------------------------------------------------------------------


def fmr_at(impostor_sorted: ArrayLike, thresholds: ArrayLike) -> F64:
    """FMR at each threshold: share of (sorted) impostor distances <= t."""
    imp = np.asarray(impostor_sorted)
    t = np.asarray(thresholds, dtype=np.float64)
    if len(imp) == 0:
        return np.full(t.shape, np.nan)
    return np.searchsorted(imp, t, side="right") / len(imp)


def fnmr_at(genuine_sorted: ArrayLike, thresholds: ArrayLike) -> F64:
    """FNMR at each threshold: share of (sorted) genuine distances > t."""
    gen = np.asarray(genuine_sorted)
    t = np.asarray(thresholds, dtype=np.float64)
    if len(gen) == 0:
        return np.full(t.shape, np.nan)
    return 1.0 - np.searchsorted(gen, t, side="right") / len(gen)


def threshold_for_fmr(impostor_sorted: ArrayLike, fmr: float) -> float:
    """The largest observed threshold whose FMR is at most `fmr` (NaN when the data has fewer
    than 1/fmr impostor pairs: such a rate cannot be measured, only extrapolated)."""
    imp = np.asarray(impostor_sorted)
    k = int(math.floor(fmr * len(imp) + 1e-9))
    if k < 1:
        return float("nan")
    return float(imp[min(k, len(imp)) - 1])


def wilson_interval(k: ArrayLike, n: ArrayLike, z: float = 1.96) -> tuple[F64, F64]:
    """Wilson score interval for k successes out of n (valid at k = 0, unlike the normal one)."""
    kk = np.asarray(k, dtype=np.float64)
    n_given = np.asarray(n, dtype=np.float64)
    # No trials, no interval (NaN): a group without pairs has no rate to bound.
    empty = n_given <= 0
    nn = np.where(empty, 1.0, n_given)
    p = kk / nn
    den = 1.0 + z * z / nn
    centre = (p + z * z / (2 * nn)) / den
    half = z * np.sqrt(np.maximum(p * (1 - p), 0.0) / nn + z * z / (4 * nn * nn)) / den
    lo = np.where(empty, np.nan, np.maximum(centre - half, 0.0))
    hi = np.where(empty, np.nan, np.minimum(centre + half, 1.0))
    return lo, hi


def auc(genuine: ArrayLike, impostor: ArrayLike) -> float:
    """Area under the ROC: P(genuine distance < impostor distance), ties counted half."""
    g = np.sort(np.asarray(genuine, dtype=np.float64))
    imp = np.sort(np.asarray(impostor, dtype=np.float64))
    if len(g) == 0 or len(imp) == 0:
        return float("nan")
    above = len(imp) - np.searchsorted(imp, g, side="right")
    ties = np.searchsorted(imp, g, side="right") - np.searchsorted(imp, g, side="left")
    return float((above.sum() + 0.5 * ties.sum()) / (len(g) * len(imp)))


def roc_curve(
    genuine: ArrayLike, impostor_sorted: ArrayLike, points: int = 400
) -> tuple[F64, F64, F64]:
    """(threshold, FMR, TAR) at thresholds spaced evenly in log10 FMR (for plots and tables)."""
    imp = np.asarray(impostor_sorted, dtype=np.float64)
    g = np.sort(np.asarray(genuine, dtype=np.float64))
    finite = imp[np.isfinite(imp)]
    if len(finite) == 0 or len(g) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    ks = np.unique(np.round(np.logspace(0, math.log10(len(finite)), points)).astype(np.int64))
    t = finite[np.clip(ks, 1, len(finite)) - 1]
    return t, fmr_at(imp, t), 1.0 - fnmr_at(g, t)


def best_accuracy_threshold(genuine: ArrayLike, impostor: ArrayLike) -> float:
    """The threshold (midpoint between neighbouring scores) that maximises accuracy on
    these pairs, with genuine and impostor pairs weighted equally (LFW's protocol)."""
    g = np.sort(np.asarray(genuine, dtype=np.float64))
    imp = np.sort(np.asarray(impostor, dtype=np.float64))
    scores = np.unique(np.concatenate([g, imp]))
    scores = scores[np.isfinite(scores)]
    if len(scores) == 0:
        return float("nan")
    cands = np.concatenate(
        [[scores[0] - 1e-6], (scores[:-1] + scores[1:]) / 2, [scores[-1] + 1e-6]]
    )
    acc = 0.5 * (1.0 - fnmr_at(g, cands)) + 0.5 * (1.0 - fmr_at(imp, cands))
    return float(cands[int(np.argmax(acc))])


def accuracy(genuine: ArrayLike, impostor: ArrayLike, threshold: float) -> float:
    """Share of pairs decided correctly at `threshold`."""
    g = np.asarray(genuine, dtype=np.float64)
    imp = np.asarray(impostor, dtype=np.float64)
    right = int((g <= threshold).sum()) + int((imp > threshold).sum())
    return right / max(len(g) + len(imp), 1)


# ---- identity-clustered bootstrap ----------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A point estimate with a 95% interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float | None]:
        def clean(x: float) -> float | None:
            return None if not math.isfinite(x) else x

        return {"value": clean(self.value), "low": clean(self.low), "high": clean(self.high)}


@dataclass(frozen=True)
class ClusteredPairs:
    """Genuine and impostor distances with the identities behind each pair, for rates with
    identity-clustered bootstrap intervals.

    Impostor pairs are either every cross-identity pair of a set of images (`images_per_id`
    set; only pairs at or below `cutoff` are listed, which is all the low-FMR questions need)
    or an explicit list (pair lists such as LFW's; `images_per_id` None, `cutoff` inf).
    """

    genuine: F64  # sorted
    genuine_id: I64
    impostor: F32 | F64  # every impostor distance, sorted
    close_d: F64  # impostor pairs with d <= cutoff, sorted by d
    close_i: I64  # identity of one side
    close_j: I64  # identity of the other side
    cutoff: float
    n_ids: int
    images_per_id: I64 | None = None  # all-pairs design: images of each identity

    @classmethod
    def from_pairs(
        cls, distances: ArrayLike, same: ArrayLike, id_a: ArrayLike, id_b: ArrayLike, n_ids: int
    ) -> ClusteredPairs:
        """From an explicit pair list (distance, same person?, identity of each side)."""
        d = np.asarray(distances, dtype=np.float64)
        s = np.asarray(same, dtype=bool)
        ia, ib = np.asarray(id_a, dtype=np.int64), np.asarray(id_b, dtype=np.int64)
        g_order = np.argsort(d[s], kind="stable")
        imp_d, imp_i, imp_j = d[~s], ia[~s], ib[~s]
        order = np.argsort(imp_d, kind="stable")
        return cls(
            genuine=d[s][g_order], genuine_id=ia[s][g_order], impostor=imp_d[order],
            close_d=imp_d[order], close_i=imp_i[order], close_j=imp_j[order],
            cutoff=float("inf"), n_ids=n_ids,
        )  # fmt: skip

    @classmethod
    def from_embeddings(
        cls,
        embeddings: ArrayLike,
        identity: ArrayLike,
        *,
        max_fmr: float = 0.1,
        min_cutoff: float = 0.0,
        impostor_sorted: ArrayLike | None = None,
        offsets: ArrayLike | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> ClusteredPairs:
        """All genuine and all cross-identity pairs of a folder-per-identity set.
        Rows of NaN (failures to enrol) take part as pairs that never match. Impostor pairs
        are listed (for the bootstrap) up to the distance of FMR 1.5 x `max_fmr`, and at least
        up to `min_cutoff`."""
        emb = np.asarray(embeddings, dtype=np.float64)
        ident = np.asarray(identity, dtype=np.int64)
        uniq, ident = np.unique(ident, return_inverse=True)
        n_ids = len(uniq)
        imp = (
            cross_identity_distances(emb, ident, offsets=offsets, progress=progress)
            if impostor_sorted is None
            else np.asarray(impostor_sorted)
        )
        # Enough headroom above the largest FMR asked about for every bootstrap replicate.
        t = threshold_for_fmr(imp, min(1.0, 1.5 * max_fmr))
        cutoff = max(float(imp[-1]) if math.isnan(t) else t, min_cutoff)
        ci, cj, cd = cross_identity_pairs_below(emb, ident, cutoff, offsets=offsets)
        order = np.argsort(cd, kind="stable")
        ga, gb = same_identity_pairs(ident)
        gd = distances_of_pairs(emb, ga, gb, offsets=offsets)
        g_order = np.argsort(gd, kind="stable")
        return cls(
            genuine=gd[g_order], genuine_id=ident[ga][g_order], impostor=np.asarray(imp),
            close_d=cd[order], close_i=ident[ci][order], close_j=ident[cj][order],
            cutoff=cutoff, n_ids=n_ids, images_per_id=np.bincount(ident, minlength=n_ids),
        )  # fmt: skip

    # -- point estimates
    @property
    def n_genuine(self) -> int:
        return len(self.genuine)

    @property
    def n_impostor(self) -> int:
        return len(self.impostor)

    def fmr(self, thresholds: ArrayLike) -> F64:
        return fmr_at(self.impostor, thresholds)

    def fnmr(self, thresholds: ArrayLike) -> F64:
        return fnmr_at(self.genuine, thresholds)

    # -- bootstrap
    def _impostor_total(self, w: F64) -> float:
        if self.images_per_id is None:
            return float((w[self.close_i] * w[self.close_j]).sum())
        wm = w * self.images_per_id
        return float((wm.sum() ** 2 - (wm * wm).sum()) / 2.0)

    def bootstrap(
        self,
        *,
        thresholds: Sequence[float] = (),
        fmr_targets: Sequence[float] = (),
        replicates: int = 200,
        seed: int = 0,
    ) -> dict[str, F64]:
        """Bootstrap replicates (rows) of FMR and FNMR at `thresholds` and of the threshold and
        TAR at each FMR target, resampling identities with replacement."""
        rng = np.random.default_rng(seed)
        t = np.asarray(thresholds, dtype=np.float64)
        out = {
            "fmr": np.full((replicates, len(t)), np.nan),
            "fnmr": np.full((replicates, len(t)), np.nan),
            "threshold": np.full((replicates, len(fmr_targets)), np.nan),
            "tar": np.full((replicates, len(fmr_targets)), np.nan),
        }
        for r in range(replicates):
            w = rng.multinomial(self.n_ids, np.full(self.n_ids, 1.0 / self.n_ids)).astype(
                np.float64
            )
            gw = w[self.genuine_id]
            g_cum = np.cumsum(gw)
            g_tot = float(g_cum[-1]) if len(g_cum) else 0.0
            iw = w[self.close_i] * w[self.close_j]
            i_cum = np.cumsum(iw)
            i_tot = self._impostor_total(w)

            if len(t):
                k = np.searchsorted(self.close_d, t, side="right")
                num = i_cum[np.maximum(k - 1, 0)] * (k > 0) if len(i_cum) else np.zeros(len(t))
                fmr = num / i_tot if i_tot > 0 else np.full(t.shape, np.nan)
                out["fmr"][r] = np.where(t <= self.cutoff, fmr, np.nan)
                out["fnmr"][r] = 1.0 - _weighted_share_le(self.genuine, g_cum, g_tot, t)
            for c, target in enumerate(fmr_targets):
                if i_tot <= 0 or len(i_cum) == 0:
                    continue
                kt = int(np.searchsorted(i_cum, target * i_tot * (1 + 1e-12), side="right"))
                if kt < 1 or kt >= len(i_cum):
                    continue  # below one weighted pair, or beyond the listed ones
                th = float(self.close_d[kt - 1])
                out["threshold"][r, c] = th
                share = _weighted_share_le(self.genuine, g_cum, g_tot, np.array([th]))
                out["tar"][r, c] = float(share[0])
        return out

    def verification_rates(
        self,
        *,
        thresholds: Sequence[float] = (),
        fmr_targets: Sequence[float] = (),
        replicates: int = 200,
        seed: int = 0,
    ) -> dict[str, list[dict[str, object]]]:
        """Point estimates with 95% intervals: FMR/FNMR at each threshold, and the threshold and
        TAR at each FMR target.

        Intervals are bootstrap percentiles over identities, widened to at least the Wilson
        interval of the raw counts (which stays honest when a count is zero and the bootstrap
        collapses to a point)."""
        boot = self.bootstrap(
            thresholds=thresholds, fmr_targets=fmr_targets, replicates=replicates, seed=seed
        )
        rows_t: list[dict[str, object]] = []
        t = np.asarray(thresholds, dtype=np.float64)
        if len(t):
            fmr = self.fmr(t)
            fnmr = self.fnmr(t)
            # A group without impostor (or genuine) pairs has no rate (NaN, reported as None),
            # and no count.
            k_imp = np.nan_to_num(np.round(fmr * self.n_impostor))
            k_gen = np.nan_to_num(np.round(fnmr * self.n_genuine))
            wl_i, wh_i = wilson_interval(k_imp, self.n_impostor)
            wl_g, wh_g = wilson_interval(k_gen, self.n_genuine)
            for c, th in enumerate(t):
                rows_t.append({
                    "threshold": float(th),
                    "fmr": _widen(float(fmr[c]), boot["fmr"][:, c], wl_i[c], wh_i[c]).as_dict(),
                    "fnmr": _widen(float(fnmr[c]), boot["fnmr"][:, c], wl_g[c], wh_g[c]).as_dict(),
                    "impostor_matches": int(k_imp[c]),
                    "genuine_misses": int(k_gen[c]),
                })  # fmt: skip
        rows_f: list[dict[str, object]] = []
        for c, target in enumerate(fmr_targets):
            th = threshold_for_fmr(self.impostor, target)
            tar_v = float("nan") if math.isnan(th) else float(1.0 - self.fnmr([th])[0])
            k = round(tar_v * self.n_genuine) if math.isfinite(tar_v) else 0
            wl, wh = wilson_interval(k, self.n_genuine)
            estimable = math.isfinite(th)
            rows_f.append({
                "fmr": target,
                "estimable": estimable,
                "threshold": _percentiles(th, boot["threshold"][:, c]).as_dict(),
                "tar": (_widen(tar_v, boot["tar"][:, c], float(wl), float(wh)) if estimable
                        else Interval(float("nan"), float("nan"), float("nan"))).as_dict(),
            })  # fmt: skip
        return {"at_thresholds": rows_t, "at_fmr": rows_f}


def _weighted_share_le(sorted_d: F64, cum_w: F64, total: float, th: F64) -> F64:
    """Weighted share of the (sorted) distances at or below each threshold."""
    if total <= 0:
        return np.full(th.shape, np.nan)
    k = np.searchsorted(sorted_d, th, side="right")
    return np.asarray(np.where(k > 0, cum_w[np.maximum(k - 1, 0)], 0.0) / total, dtype=np.float64)


def _percentiles(value: float, samples: F64) -> Interval:
    s = samples[np.isfinite(samples)]
    if not math.isfinite(value) or len(s) < 10:
        return Interval(value, float("nan"), float("nan"))
    lo, hi = np.percentile(s, [2.5, 97.5])
    return Interval(value, float(lo), float(hi))


def _widen(value: float, samples: F64, w_lo: float, w_hi: float) -> Interval:
    p = _percentiles(value, samples)
    lo = w_lo if math.isnan(p.low) else min(p.low, w_lo)
    hi = w_hi if math.isnan(p.high) else max(p.high, w_hi)
    return Interval(value, float(lo), float(hi))


def intervals_overlap(a: Interval, b: Interval) -> bool:
    """Whether two 95% intervals share any value."""
    return a.low <= b.high and b.low <= a.high


def how_often(fmr: float) -> str:
    """A false-match rate as people read it: "1 in 10,000" where that is what it means (below
    10%), a percentage above ("70%", never "1 in 1" for 0.7)."""
    if fmr <= 0:
        return "none"
    if fmr >= 0.1:
        return f"{100 * fmr:.2g}%"
    return f"1 in {1 / fmr:,.0f}"


def pairs_of_different_people(fmr: float) -> str:
    """"1 in 10,000 pairs of different people" / "70% of pairs of different people"."""
    words = how_often(fmr)
    return f"{words} of pairs of different people" if words.endswith("%") else (
        f"{words} pairs of different people")
