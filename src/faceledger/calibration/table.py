"""The shipped calibration tables and the mapping they define.

`Similarity = 100 * (1 - FMR(d))`: a pair at distance d is more alike than that share of pairs of
different people, as measured for this model. A SimilarityThreshold of S therefore means an
operating false-match rate of 1 - S/100 (99.9 -> 1e-3, 99.99 -> 1e-4).

Table file (JSON, `tables/<model_version>.json` in the package, or `<data_dir>/calibration/
<model_version>.json` for an operator-built one), written by `evaluation.calibrate`:
  distance:   ascending grid of raw distances
  log10_fmr:  log10 of the false-match rate claimed at d: the 95% upper bound of
              P(impostor distance <= d) that the data support, never below the tail fit and
              never below the floor that zero observed pairs allow (`calibration.bound`);
              never decreasing. Its first value is that floor, `lowest_credible_fmr`.
  fnmr:       P(genuine distance > d) on that grid
  plus provenance fields (dataset, pair counts, bound, tail fit) that `faceledger calibration`
  prints.

A table cannot promise an FMR below its floor. Asked for one, `distance_for_fmr` answers with
`floor_distance`, the largest distance at the floor (whose FMR is the floor, not the one asked
for); `lowest_credible_fmr` says where that starts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..model_versions import canonical, legacy_names
from .normalise import ScoreNormaliser


def similarity_for_fmr(fmr: float) -> float:
    """The Similarity threshold that stands for a false-match rate: 100 x (1 - FMR)."""
    return 100.0 * (1.0 - fmr)


def fmr_for_similarity(similarity: float) -> float:
    """The false-match rate a Similarity threshold stands for: 1 - S/100."""
    return max(0.0, 1.0 - similarity / 100.0)


# FMR below this is reported as this: beyond any fit's credibility.
MIN_LOG10_FMR = -12.0
# The operating points every table is printed at (`faceledger calibration`): Similarity 90,
# 99, 99.9, 99.99, 99.999, 99.9999.
SHIPPED_FMRS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def strictest_fmr_passed(similarity: float, fmrs: tuple[float, ...] = SHIPPED_FMRS
                         ) -> float | None:
    """The lowest of `fmrs` whose Similarity threshold `similarity` reaches (None: none)."""
    passed = [f for f in fmrs if similarity >= similarity_for_fmr(f) - 1e-9]
    return min(passed) if passed else None


@dataclass(frozen=True)
class CalibrationTable:
    """A model's measured distance -> FMR/FNMR curve, with interpolation both ways."""

    model_version: str
    distance: NDArray[np.float64]
    log10_fmr: NDArray[np.float64]
    fnmr: NDArray[np.float64]
    provenance: dict[str, Any] = field(default_factory=dict)
    # Score normalisation the table was built with (None: raw distances); every distance the
    # service compares with the table goes through it (`distances`).
    normaliser: ScoreNormaliser | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CalibrationTable:
        d = np.asarray(raw["distance"], dtype=np.float64)
        lf = np.maximum.accumulate(
            np.maximum(np.asarray(raw["log10_fmr"], dtype=np.float64), MIN_LOG10_FMR)
        )
        fn = np.asarray(raw["fnmr"], dtype=np.float64)
        shapes_ok = d.ndim == 1 and len(d) >= 2 and d.shape == lf.shape == fn.shape
        if not (shapes_ok and np.all(np.diff(d) > 0)):
            raise ValueError("calibration table needs equal-length grids with ascending distance")
        skip = ("distance", "log10_fmr", "fnmr", "normalisation")
        prov = {k: v for k, v in raw.items() if k not in skip}
        norm = raw.get("normalisation")
        normaliser = None if norm is None else ScoreNormaliser.from_dict(norm)
        # tables built before the numbering carry a name ("dlib-resnet-v1"): answer the number
        return cls(canonical(str(raw["model_version"])), d, lf, fn, prov, normaliser)

    def half_offsets(self, templates: ArrayLike) -> NDArray[np.float64]:
        """Each template's share of the score normalisation (zeros without one)."""
        t = np.asarray(templates, dtype=np.float64)
        n = 1 if t.ndim == 1 else len(t)
        if self.normaliser is None:
            return np.zeros(n)
        return self.normaliser.half_offsets(t)

    def distances(self, probes: ArrayLike, gallery: ArrayLike) -> NDArray[np.float64]:
        """The distances this table scores (probes x gallery): Euclidean between templates,
        then normalised as the table was built."""
        p = np.atleast_2d(np.asarray(probes, dtype=np.float64))
        g = np.atleast_2d(np.asarray(gallery, dtype=np.float64))
        # Exact differences (not the |p|^2 + |g|^2 - 2pg expansion): few probes, <= 4096 faces.
        d = np.sqrt(((p[:, None, :] - g[None, :, :]) ** 2).sum(axis=2))
        if self.normaliser is None:
            return np.asarray(d, dtype=np.float64)
        return self.normaliser.normalise(
            d, self.normaliser.half_offsets(p)[:, None], self.normaliser.half_offsets(g)[None, :]
        )

    def fmr(self, distance: ArrayLike) -> NDArray[np.float64]:
        """False-match rate of a threshold at `distance` (share of impostor pairs at or below it)."""
        d = np.asarray(distance, dtype=np.float64)
        return np.asarray(10.0 ** np.interp(d, self.distance, self.log10_fmr), dtype=np.float64)

    def fnmr_at(self, distance: ArrayLike) -> NDArray[np.float64]:
        """False non-match rate of a threshold at `distance`."""
        d = np.asarray(distance, dtype=np.float64)
        return np.asarray(np.interp(d, self.distance, self.fnmr), dtype=np.float64)

    def similarity(self, distance: ArrayLike) -> NDArray[np.float64]:
        """Calibrated Similarity (0-100) for raw distances."""
        return np.asarray(100.0 * (1.0 - self.fmr(distance)), dtype=np.float64)

    @property
    def lowest_credible_fmr(self) -> float:
        """The smallest false-match rate this table claims anywhere (its floor)."""
        return float(10.0 ** self.log10_fmr[0])

    @property
    def floor_distance(self) -> float:
        """The largest distance at which the curve is still at its floor."""
        i = int(np.searchsorted(self.log10_fmr, self.log10_fmr[0], side="right")) - 1
        return float(self.distance[i])

    def is_credible(self, fmr: float) -> bool:
        """Whether the table can promise `fmr` (it is not below the floor)."""
        return fmr >= self.lowest_credible_fmr * (1.0 - 1e-9)

    def distance_for_fmr(self, fmr: float) -> float:
        """The largest distance whose FMR does not exceed `fmr`: the match threshold. Below
        `lowest_credible_fmr` no distance qualifies; the answer is then `floor_distance`."""
        lf = self.log10_fmr
        if fmr >= 1.0 or fmr >= 10.0 ** lf[-1]:
            return float(self.distance[-1])
        target = math.log10(max(fmr, 10.0**MIN_LOG10_FMR))
        # lf is non-decreasing: i is the last grid point whose FMR does not exceed the target.
        i = int(np.searchsorted(lf, target, side="right")) - 1
        if i < 0:
            return self.floor_distance
        # lf[i] <= target < lf[i + 1]: the curve crosses the target on this segment.
        frac = (target - lf[i]) / (lf[i + 1] - lf[i])
        return float(self.distance[i] + frac * (self.distance[i + 1] - self.distance[i]))

    fmr_for_similarity = staticmethod(fmr_for_similarity)

    def distance_for_similarity(self, similarity: float) -> float:
        """The distance threshold that a SimilarityThreshold means."""
        if similarity <= 0.0:
            return float("inf")
        return self.distance_for_fmr(self.fmr_for_similarity(similarity))


def _names(model_version: str) -> tuple[str, ...]:
    """File names a table of `model_version` may have: its number, then legacy names."""
    v = canonical(model_version)
    return (v, *legacy_names(v))


@lru_cache(maxsize=8)
def load_calibration(model_version: str) -> CalibrationTable:
    """The table shipped in the package for `model_version` (a number or a legacy name)."""
    tables = resources.files("faceledger.calibration") / "tables"
    for name in _names(model_version):
        try:
            raw = json.loads((tables / f"{name}.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        return CalibrationTable.from_dict(raw)
    raise LookupError(f"no calibration table ships for model {canonical(model_version)!r}")


def calibration_path(data_dir: Path, model_version: str) -> Path:
    """Where an operator-built calibration table for `model_version` is kept."""
    return data_dir / "calibration" / f"{canonical(model_version)}.json"


def find_calibration(model_version: str, data_dir: Path | None = None) -> CalibrationTable:
    """The table for `model_version`: shipped in the package, else built by the operator into
    data_dir/calibration (`faceledger calibration build`; a table written under a legacy name
    such as onnx-<hex>.json is found too). LookupError saying where to build one if neither."""
    try:
        return load_calibration(model_version)
    except LookupError:
        if data_dir is None:
            raise
    for name in _names(model_version):
        path = data_dir / "calibration" / f"{name}.json"
        if path.is_file():
            return CalibrationTable.from_dict(json.loads(path.read_text(encoding="utf-8")))
    raise LookupError(
        f"no calibration table for model {canonical(model_version)!r}: none ships with "
        f"faceledger and none was built into {calibration_path(data_dir, model_version)}")
