"""Score normalisation that evens out false-match rates between groups of people without
knowing anyone's group (pure numpy).

Why. dlib's ResNet packs the faces of some populations closer together than others: measured on
utkface-balanced, two different Asian women are as close, on average, as two photos 0.2 apart
in distance would be for two white men, so one raw threshold lets through ~100x more false
matches for them (docs/accuracy.md §6). What differs is the *local density* of the template
space around a face: how close its nearest different people are.

How. For a template x, mu(x) is the mean distance to its k nearest people in a balanced
reference set (a cohort). A pair's distance is compared with the local density at both ends:

    d'(x, y) = d(x, y) - (mu(x) - c) / 2 - (mu(y) - c) / 2

so a pair in a crowded region must be closer to match, a pair in a sparse region may be a little
farther, and c (the reference set's mean mu) keeps the scale where it was. This is cohort score
normalisation (symmetric, as adaptive S-norm); Terhörst et al.'s fair score normalisation
(2020) is the same idea with k-means clusters instead of each face's own neighbourhood, and
equalised group rates less well here (docs/accuracy.md).

What ships. Not the cohort: its templates are biometric data of real people. mu(x) is instead
predicted by a linear model fitted on the cohort (mu_hat(x) = w . x + b, ridge regression, R^2 ~
0.87 on held-out people), so the package carries 129 numbers and no one's template. No label of
sex, race or age is used when answering; labels are used only to *measure* the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

F64 = NDArray[np.float64]

KIND = "local-density-linear"


@dataclass(frozen=True)
class ScoreNormaliser:
    """d'(x, y) = d(x, y) - h(x) - h(y), with h(x) = (w . x + b - centre) / 2."""

    weights: F64
    bias: float
    centre: float
    k: int
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ScoreNormaliser:
        if raw.get("kind") != KIND:
            raise ValueError(f"unknown score normalisation {raw.get('kind')!r}")
        w = np.asarray(raw["weights"], dtype=np.float64)
        if w.ndim != 1 or not np.all(np.isfinite(w)):
            raise ValueError("score normalisation weights must be a finite vector")
        prov = {k: v for k, v in raw.items() if k not in ("kind", "weights", "bias", "centre", "k")}
        return cls(w, float(raw["bias"]), float(raw["centre"]), int(raw["k"]), prov)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "weights": self.weights.tolist(), "bias": self.bias,
                "centre": self.centre, "k": self.k} | self.provenance  # fmt: skip

    def half_offsets(self, templates: ArrayLike) -> F64:
        """h(x) for each row: half the template's local density above the reference mean.
        Rows of NaN (failures to enrol) give NaN."""
        t = np.asarray(templates, dtype=np.float64)
        if t.ndim == 1:
            t = t[None, :]
        return np.asarray(0.5 * (t @ self.weights + self.bias - self.centre), dtype=np.float64)

    def normalise(self, distances: ArrayLike, half_a: ArrayLike, half_b: ArrayLike) -> F64:
        """Normalised distances for raw `distances` between rows with offsets a and b
        (broadcast: a matrix takes column offsets a[:, None] and row offsets b[None, :])."""
        return np.asarray(
            np.asarray(distances, dtype=np.float64) - np.asarray(half_a) - np.asarray(half_b),
            dtype=np.float64,
        )


def local_density(templates: ArrayLike, cohort: ArrayLike, k: int, *, self_in_cohort: bool) -> F64:
    """Mean distance from each template to its k nearest cohort members (skipping itself
    when the templates are the cohort)."""
    t = np.asarray(templates, dtype=np.float64)
    c = np.asarray(cohort, dtype=np.float64)
    sq = (t * t).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2.0 * (t @ c.T)
    d = np.sort(np.sqrt(np.maximum(sq, 0.0)), axis=1)
    start = 1 if self_in_cohort else 0
    return np.asarray(d[:, start : start + k].mean(axis=1), dtype=np.float64)


def fit_normaliser(
    cohort: ArrayLike, *, k: int = 20, ridge: float = 0.01, provenance: dict[str, Any] | None = None
) -> ScoreNormaliser:
    """Fit mu_hat(x) = w . x + b to the cohort's own local densities (ridge regression)."""
    c = np.asarray(cohort, dtype=np.float64)
    c = c[np.isfinite(c).all(axis=1)]
    if len(c) <= k + 1:
        raise ValueError(f"a cohort of {len(c)} templates is too small for k = {k}")
    mu = local_density(c, c, k, self_in_cohort=True)
    a = np.hstack([c, np.ones((len(c), 1))])
    reg = ridge * np.eye(a.shape[1])
    reg[-1, -1] = 0.0  # the intercept is not shrunk
    coef = np.linalg.solve(a.T @ a + reg, a.T @ mu)
    pred = a @ coef
    r2 = 1.0 - float(((pred - mu) ** 2).sum() / ((mu - mu.mean()) ** 2).sum())
    prov = dict(provenance or {}) | {
        "cohort_size": int(len(c)), "ridge": ridge, "r2_in_sample": round(r2, 4),
        "mu_range": [round(float(mu.min()), 4), round(float(mu.max()), 4)],
    }  # fmt: skip
    weights = np.asarray(coef[:-1], dtype=np.float64)
    return ScoreNormaliser(weights, float(coef[-1]), float(mu.mean()), k, prov)
