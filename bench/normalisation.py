"""Score normalisations compared side by side: how evenly each spreads false matches over the
sex x race x age groups of utkface-balanced's held-out half (docs/accuracy.md section 6).

Every method is fitted on the `fit` half of the people and measured on the `test` half. For each,
the threshold is set where the pooled within-group FMR of the fit half is 1e-2 (adults only, and
all groups), and the table shows, on the test half, the max/min ratio of the groups' FMR (counts
continuity-corrected: (k + 0.5) / (n + 1)) and the standard deviation of log10 FMR across groups.
Lower is more even. Run: python bench/normalisation.py   (needs ../shared/faces; templates come
from the evaluation cache, ~3 min cold).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.cluster.vq import kmeans2

from faceledger.calibration.normalise import fit_normaliser, local_density
from faceledger.evaluation.datasets import load_images, people_half, utkface_labels
from faceledger.evaluation.enrolment import default_cache_dir, enrol_files, template_matrix

F64 = NDArray[np.float64]
Offsets = Callable[[F64], F64]  # template rows -> the half-offset each takes off a distance


def _pd(a: F64, b: F64) -> F64:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.asarray(np.sqrt(np.maximum(sq, 0.0)), dtype=np.float64)


def _quantile(v: F64, f: float) -> float:
    s = np.sort(v)
    return float(s[max(int(f * len(s)) - 1, 0)])


def fsn(cohort: F64, k: int, target: float) -> Offsets:
    """Terhörst et al. 2020 (fair score normalisation): k-means clusters, each cluster's
    within-cluster impostor threshold at `target` against the pooled one."""
    cent, lab = kmeans2(cohort, k, seed=0, minit="++")
    d = _pd(cohort, cohort)
    within = [d[np.ix_(lab == c, lab == c)][np.triu_indices(int((lab == c).sum()), 1)]
              for c in range(k)]  # fmt: skip
    pooled = _quantile(np.concatenate(within), target)
    off = np.array([_quantile(w, target) - pooled if len(w) * target >= 5 else 0.0
                    for w in within])  # fmt: skip
    # In distance terms a cluster whose impostors are close gets a negative offset: its pairs
    # must be closer to match. d' = d - off_a/2 - off_b/2.
    return lambda t: 0.5 * off[np.argmin(_pd(t, cent), axis=1)]


def cohort_density(cohort: F64, k: int) -> Offsets:
    """Cohort normalisation with the cohort's own templates (not shippable: they are people's)."""
    c = float(local_density(cohort, cohort, k, self_in_cohort=True).mean())

    def offsets(t: F64) -> F64:
        d = np.sort(_pd(t, cohort), axis=1)
        start = (d[:, 0] < 1e-9).astype(int)  # a cohort member does not count itself
        mu = np.array([row[s : s + k].mean() for row, s in zip(d, start)])
        return np.asarray(0.5 * (mu - c), dtype=np.float64)

    return offsets


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/faces/utkface-balanced")
    images = load_images(root)
    labels = utkface_labels(images)
    tmpl = template_matrix(enrol_files(images.paths, cache_dir=default_cache_dir(), progress=True))
    ok = np.isfinite(tmpl).all(axis=1)
    half = np.array([people_half(k) for k in images.keys])
    group = np.array(["/".join(labels.by_key[k][a] for a in ("sex", "race", "age_group"))
                      for k in images.keys])  # fmt: skip
    fit, test = ok & (half == "fit"), ok & (half == "test")
    cohort = tmpl[fit]

    def within(mask: NDArray[np.bool_], offsets: Offsets) -> dict[str, F64]:
        t, g, o = tmpl[mask], group[mask], offsets(tmpl[mask])
        d = _pd(t, t) - o[:, None] - o[None, :]
        return {name: d[np.ix_(g == name, g == name)][np.triu_indices(int((g == name).sum()), 1)]
                for name in sorted(set(g))}  # fmt: skip

    norm = fit_normaliser(cohort, k=20)
    methods: dict[str, Offsets] = {"raw distance": lambda t: np.zeros(len(t))}
    for k in (5, 10, 20, 30):
        methods[f"fair score normalisation, K={k}"] = fsn(cohort, k, 3e-2)
    methods["cohort density, k=20 (cohort templates)"] = cohort_density(cohort, 20)
    methods["linear density model, k=20 (shipped)"] = norm.half_offsets
    print(f"{'method':<44} {'adults max/min':>15} {'adults sd log10':>16} "
          f"{'all max/min':>12} {'all sd log10':>13}")
    for name, offsets in methods.items():
        wf, wt = within(fit, offsets), within(test, offsets)
        cols = []
        for sel in ("adult", ""):
            pooled = np.concatenate([v for g, v in wf.items() if g.endswith(sel)])
            t = _quantile(pooled, 1e-2)
            r = np.array([((v <= t).sum() + 0.5) / (len(v) + 1)
                          for g, v in wt.items() if g.endswith(sel)])  # fmt: skip
            cols += [f"{r.max() / r.min():.1f}", f"{np.log10(r).std():.2f}"]
        print(f"{name:<44} {cols[0]:>15} {cols[1]:>16} {cols[2]:>12} {cols[3]:>13}")


if __name__ == "__main__":
    main()
