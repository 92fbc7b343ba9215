"""The model for false-match rates beyond the data: a peaks-over-threshold fit to the lower tail
of the impostor distance distribution (pure numpy).

Why this model. Below the k smallest impostor distances there are too few pairs to count, yet
thresholds live there (FMR 1e-5 .. 1e-7 and below). Extreme-value theory (Pickands-Balkema-de
Haan) says that, for almost any continuous distribution, the excesses y = u - d of the pairs
below a low enough cut u follow a generalized Pareto distribution (GPD):

    FMR(d) = (k / n) * (1 + xi * (u - d) / sigma) ** (-1 / xi),   d < u
           = (k / n) * exp(-(u - d) / sigma)                     (xi = 0: log-linear in d)

xi < 0 means the tail has an end point (distances cannot go below 0), xi = 0 is exactly the
"log10 FMR linear in d" model. Both are fitted by maximum likelihood (the GPD through the
one-parameter profile likelihood of Grimshaw, 1993, with xi >= -1 where the likelihood is
bounded); `evaluation.calibrate` checks them by fitting on some identities and predicting the
counts in others, and writes that check into the table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class TailFit:
    """A fitted lower tail: FMR below distance `u` from a GPD (or exponential) on excesses."""

    model: str  # "gpd" or "exponential"
    u: float  # distance where the fit takes over
    k: int  # impostor pairs below u (the excesses fitted)
    n: int  # impostor pairs in all
    sigma: float
    xi: float
    xi_low: float = float("nan")  # 95% profile-likelihood interval of xi (gpd only)
    xi_high: float = float("nan")

    @property
    def log10_fmr_u(self) -> float:
        return math.log10(self.k / self.n)

    def log10_fmr(self, distance: ArrayLike) -> F64:
        """log10 FMR at distances below `u` (-inf beyond a bounded tail's end point)."""
        d = np.asarray(distance, dtype=np.float64)
        y = np.maximum(self.u - d, 0.0)
        if self.xi == 0.0:
            log_s = -y / self.sigma
        else:
            z = 1.0 + self.xi * y / self.sigma
            with np.errstate(divide="ignore", invalid="ignore"):
                log_s = np.where(z > 0, -np.log(np.maximum(z, 1e-300)) / self.xi, -np.inf)
        return np.asarray(self.log10_fmr_u + log_s / math.log(10.0), dtype=np.float64)

    def expected_count(self, distance: float, n_pairs: int) -> float:
        """Impostor pairs at or below `distance` expected among `n_pairs` under this fit."""
        return float(n_pairs * 10.0 ** float(self.log10_fmr([distance])[0]))

    def as_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in raw.items()}  # fmt: skip


def _excesses(impostor_sorted: ArrayLike, k: int) -> tuple[float, F64, int]:
    imp = np.asarray(impostor_sorted, dtype=np.float64)
    imp = imp[np.isfinite(imp)]
    if not 10 <= k < len(imp):
        raise ValueError(f"a tail fit needs 10 <= k < {len(imp)} impostor distances, got k={k}")
    u = float(imp[k])
    y = u - imp[:k]
    y = np.maximum(y, 1e-12)  # ties at u
    return u, y, len(np.asarray(impostor_sorted))


def _profile(theta: F64, y: F64) -> tuple[F64, F64]:
    """GPD profile log-likelihood over theta = xi / sigma, and xi(theta)."""
    k = len(y)
    with np.errstate(invalid="ignore", divide="ignore"):
        xi = np.log1p(np.outer(theta, y)).mean(axis=1)
        ll = -k * np.log(xi / theta) - k * (1.0 + xi)
    return ll, xi


def fit_gpd(impostor_sorted: ArrayLike, k: int) -> TailFit:
    """Maximum-likelihood GPD fit to the k smallest impostor distances."""
    u, y, n = _excesses(impostor_sorted, k)
    ymax = float(y.max())
    s = np.concatenate([
        -(1.0 - np.logspace(-6, -0.0005, 600)),  # theta from just above -1/ymax ...
        np.logspace(-6, 4, 600),                  # ... to large positive
    ])  # fmt: skip
    theta = np.sort(s) / ymax
    ll, xi = _profile(theta, y)
    ok = np.isfinite(ll) & (xi >= -1.0)
    exp_ll = -len(y) * math.log(float(y.mean())) - len(y)  # theta -> 0 limit
    best = int(np.argmax(np.where(ok, ll, -np.inf)))
    if not ok.any() or exp_ll >= ll[best]:
        xl, xh = _xi_interval(ll, xi, ok, exp_ll, exp_ll)
        return TailFit("gpd", u, len(y), n, float(y.mean()), 0.0, xl, xh)
    # Refine on a fine grid around the best coarse point.
    lo = theta[max(best - 1, 0)]
    hi = theta[min(best + 1, len(theta) - 1)]
    fine = np.linspace(lo, hi, 400)
    fine = fine[fine != 0.0]
    fll, fxi = _profile(fine, y)
    fok = np.isfinite(fll) & (fxi >= -1.0)
    j = int(np.argmax(np.where(fok, fll, -np.inf)))
    t_best, xi_best = float(fine[j]), float(fxi[j])
    sigma = xi_best / t_best
    xl, xh = _xi_interval(ll, xi, ok, float(fll[j]), exp_ll)
    return TailFit("gpd", u, len(y), n, sigma, xi_best, xl, xh)


def _xi_interval(
    ll: F64, xi: F64, ok: NDArray[np.bool_], ll_max: float, exp_ll: float
) -> tuple[float, float]:
    """95% profile-likelihood interval of xi: every xi whose profile log-likelihood is within
    chi2(1, 0.95) / 2 = 1.92 of the maximum (xi = 0 is the exponential limit)."""
    cut = ll_max - 1.92
    vals = list(xi[ok & (ll >= cut)])
    if exp_ll >= cut:
        vals.append(0.0)
    if not vals:
        return float("nan"), float("nan")
    return float(min(vals)), float(max(vals))


def fit_exponential(impostor_sorted: ArrayLike, k: int) -> TailFit:
    """The xi = 0 special case: log10 FMR linear in d below u (MLE: sigma = mean excess)."""
    u, y, n = _excesses(impostor_sorted, k)
    return TailFit("exponential", u, len(y), n, float(y.mean()), 0.0)


def fit_tail(impostor_sorted: ArrayLike, k: int, model: str) -> TailFit:
    """Fit the named model ("gpd" or "exponential") to the k smallest impostor distances."""
    match model:
        case "gpd":
            return fit_gpd(impostor_sorted, k)
        case "exponential":
            return fit_exponential(impostor_sorted, k)
        case _:
            raise ValueError(f"unknown tail model {model!r}: choose gpd or exponential")


def extrapolation_check(
    fit: TailFit, test_sorted: ArrayLike, ranks: tuple[int, ...] = (1, 3, 10, 30, 100)
) -> list[dict[str, float]]:
    """Expected (from `fit`) versus observed impostor counts at held-out distances: at the
    distance of the test set's r-th smallest impostor pair, r pairs were observed."""
    test = np.asarray(test_sorted, dtype=np.float64)
    n = len(test)
    rows = []
    for r in ranks:
        if r > n:
            continue
        d = float(test[r - 1])
        rows.append({
            "rank": float(r),
            "distance": d,
            "observed_log10_fmr": math.log10(r / n),
            "fit_log10_fmr": float(fit.log10_fmr([d])[0]) if d < fit.u else float("nan"),
            "expected": fit.expected_count(d, n) if d < fit.u else float("nan"),
            "observed": float(r),
        })  # fmt: skip
    return rows
