"""The conservative false-match-rate curve a calibration table ships (pure numpy).

`Similarity = 100 x (1 - FMR(d))` promises that a threshold means *at most* that false-match
rate. A point estimate of FMR is as likely to be too low as too high, and an extrapolated tail
fit was measured to be too low (fitted on 30% of LFW's people, the exponential tail predicted
0.3-0.4 decades too few false matches among the other 70%). So the table claims, at each
distance d, the largest FMR that LFW's data are consistent with at 95% confidence:

    FMR_table(d) = max( U_boot(d), U_wilson(d), FMR_fit(d) ),   made non-decreasing in d

- `U_boot`: the 97.5th percentile of FMR(d) over an identity-resampling bootstrap (every pair
  moves with both of its people; `rates.ClusteredPairs`). Honest where there are
  enough pairs; with no pair at or below d it is 0, so it cannot stand alone in the tail.
- `U_wilson`: the upper end of the Wilson 95% interval of the k(d) impostor pairs at or below d
  out of n, with both deflated by the design effect D (k/D successes out of n_eff = n/D, Kish's
  effective sample size). D(d) is the bootstrap variance of FMR(d) over the binomial variance
  p(1-p)/n: how much less 12 million pairs that share 3,000 people tell than 12 million
  independent trials. It is measured where at least `K_MIN` pairs lie at or below d; below
  that the bootstrap variance rests on a handful of people (and is zero at k = 0), so D is held
  at `D_tail`, the largest design effect measured at `K_MIN` or fewer pairs, and never below
  the `IDENTITY_BOOTSTRAP_FLOOR` of 3 that resampling people gives one isolated pair. Holding
  it rather than letting it fall is conservative: on LFW, D grows with the count (about 6 at 30
  pairs, 14 at 130, 60 at 1,200, 200 at 12,000: the closest impostor pairs involve a few
  people who resemble many). D is made non-decreasing in d, so U_wilson is too.
- At k = 0, below the closest impostor pair, U_wilson is z^2 / (n_eff + z^2) = 3.84 / n_eff:
  the rule of three (3 / n_eff, the exact one-sided 95% bound for zero events) with the
  two-sided z = 1.96 this project uses for every interval. That constant is the table's floor,
  `lowest_credible_fmr`: no distance, however small, is claimed to have a lower FMR, because
  the data cannot demonstrate one.
- `FMR_fit`: the tail fit (`calibration.tail`) below its cut u, so that a fitted tail heavier
  than the data's bound would still show. Where it is lower it never lowers the curve.

Beyond the largest distance the bootstrap lists (FMR above ~0.15, Similarity below 85) only
U_wilson applies, with the largest design effect measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..rates import ClusteredPairs, wilson_interval
from .tail import TailFit

F64 = NDArray[np.float64]

Z = 1.96
# Fewer impostor pairs than this at or below d: the bootstrap variance is not used for D there.
K_MIN = 30
# Resampling people with replacement gives a pair whose two people occur w_i and w_j times
# (independent Poisson(1)) weight w_i * w_j, of variance 3: the design effect the identity
# bootstrap reports for rare, unshared pairs. Never assume the tail is less clustered.
IDENTITY_BOOTSTRAP_FLOOR = 3.0


@dataclass(frozen=True)
class UpperBound:
    """The 95% upper bound of FMR on a distance grid, and how it was reached."""

    distance: F64
    count: NDArray[np.int64]  # impostor pairs at or below each distance
    n: int  # impostor pairs in all
    boot_upper: F64  # 97.5th bootstrap percentile (NaN beyond the listed pairs)
    design_effect: F64  # D used at each distance (non-decreasing)
    wilson_upper: F64  # Wilson upper bound with k/D out of n/D
    design_effect_tail: float  # D held below K_MIN pairs

    @property
    def upper(self) -> F64:
        """max(U_boot, U_wilson): the bound at each distance (non-decreasing)."""
        b = np.where(np.isfinite(self.boot_upper), self.boot_upper, 0.0)
        return np.asarray(np.maximum.accumulate(np.maximum(b, self.wilson_upper)), np.float64)

    @property
    def n_eff_tail(self) -> float:
        return self.n / self.design_effect_tail

    @property
    def lowest_credible_fmr(self) -> float:
        """The bound at zero observed pairs: z^2 / (n_eff + z^2)."""
        return Z * Z / (self.n_eff_tail + Z * Z)

    def design_effect_at(self, fmr: float) -> float | None:
        """The measured design effect where the empirical FMR first reaches `fmr`."""
        i = int(np.searchsorted(self.count, fmr * self.n, side="left"))
        return None if i >= len(self.count) else float(self.design_effect[i])


def design_effects(boot_fmr: ArrayLike, count: ArrayLike, n: int) -> F64:
    """Bootstrap variance of FMR over the binomial variance p(1-p)/n, per grid distance
    (NaN where the count is 0 or every replicate is NaN)."""
    b = np.asarray(boot_fmr, dtype=np.float64)
    k = np.asarray(count, dtype=np.float64)
    p = k / n
    binom = p * (1.0 - p) / n
    finite = np.isfinite(b).sum(axis=0) >= 2
    var = np.full(len(k), np.nan)
    if finite.any():
        var[finite] = np.nanvar(b[:, finite], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.where((k > 0) & finite & (binom > 0), var / binom, np.nan), np.float64)


def upper_bound_from_replicates(
    distance: ArrayLike, impostor_sorted: ArrayLike, boot_fmr: ArrayLike, *, k_min: int = K_MIN
) -> UpperBound:
    """The 95% upper bound of FMR at each distance from the impostor distances and bootstrap
    replicates of FMR at those distances (rows: replicates)."""
    d = np.asarray(distance, dtype=np.float64)
    imp = np.asarray(impostor_sorted)
    n = len(imp)
    if n == 0:
        raise ValueError("an FMR bound needs impostor pairs")
    k = np.searchsorted(imp, d, side="right").astype(np.int64)
    b = np.asarray(boot_fmr, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != len(d):
        raise ValueError("bootstrap replicates must be a (replicates, distances) array")
    with np.errstate(invalid="ignore"):
        measured = design_effects(b, k, n)
    some = np.isfinite(b).sum(axis=0) >= 2
    boot_hi = np.full(len(d), np.nan)
    if some.any():
        boot_hi[some] = np.nanpercentile(b[:, some], 97.5, axis=0)
    low = (k >= 1) & (k <= k_min) & np.isfinite(measured)
    d_tail = max(IDENTITY_BOOTSTRAP_FLOOR, float(measured[low].max()) if low.any() else 0.0)
    dense = (k > k_min) & np.isfinite(measured)
    deff = np.where(dense, np.maximum(measured, d_tail), d_tail)
    deff = np.maximum.accumulate(np.maximum(deff, 1.0))
    _, w_hi = wilson_interval(k / deff, n / deff, z=Z)
    return UpperBound(
        distance=d, count=k, n=n, boot_upper=boot_hi, design_effect=deff,
        wilson_upper=np.asarray(w_hi, dtype=np.float64), design_effect_tail=d_tail,
    )  # fmt: skip


def empirical_upper_bound(
    pairs: ClusteredPairs, distance: ArrayLike, *, replicates: int = 200, seed: int = 0
) -> UpperBound:
    """`upper_bound_from_replicates` with an identity-resampling bootstrap of `pairs`."""
    d = np.asarray(distance, dtype=np.float64)
    boot = pairs.bootstrap(thresholds=d.tolist(), replicates=replicates, seed=seed)
    return upper_bound_from_replicates(d, np.asarray(pairs.impostor), boot["fmr"])


def conservative_log10_fmr(
    bound: UpperBound, fit: TailFit | None, floor_log10: float
) -> tuple[F64, NDArray[np.bool_]]:
    """log10 FMR of the shipped curve: max(bound, tail fit below its cut), non-decreasing and
    never below `floor_log10`; and where the fit is what sets it."""
    d = bound.distance
    with np.errstate(divide="ignore"):
        lb = np.log10(bound.upper)
    if fit is not None:
        lf = np.where(d < fit.u, np.minimum(fit.log10_fmr(d), fit.log10_fmr_u), -np.inf)
    else:
        lf = np.full(len(d), -np.inf)
    out = np.maximum(np.maximum(lb, lf), floor_log10)
    out = np.maximum.accumulate(np.nan_to_num(out, nan=floor_log10, neginf=floor_log10))
    return np.asarray(out, np.float64), np.asarray(lf > lb + 1e-12)


def bound_provenance(bound: UpperBound, fit_binds: NDArray[np.bool_]) -> dict[str, Any]:
    """What the table's provenance says about the bound."""

    def rnd(x: float | None) -> float | None:
        return None if x is None or not math.isfinite(x) else round(x, 3)

    return {
        "rule": "FMR(d) = max(97.5th percentile of an identity bootstrap, Wilson 95% upper "
                "bound with n_eff = n / design effect, tail fit below u), non-decreasing; "
                "at zero observed pairs the Wilson bound is z^2 / (n_eff + z^2)",
        "z": Z,
        "k_min": K_MIN,
        "design_effect_tail": round(bound.design_effect_tail, 3),
        "n_eff_tail": round(bound.n_eff_tail),
        "design_effect_at_fmr": {
            f"{f:g}": rnd(bound.design_effect_at(f)) for f in (1e-5, 1e-4, 1e-3, 1e-2)
        },
        "identity_bootstrap_floor": IDENTITY_BOOTSTRAP_FLOOR,
        "grid_points_set_by_tail_fit": int(fit_binds.sum()),
    }  # fmt: skip
