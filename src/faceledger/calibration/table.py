"""The shipped calibration tables and the mapping they define.

`Similarity = 100 * (1 - FMR(d))`: a pair at distance d is more alike than that share of pairs of
different people, as measured for this model. A SimilarityThreshold of S therefore means an
operating false-match rate of 1 - S/100 (99.9 -> 1e-3, 99.99 -> 1e-4).

Table file (JSON, `tables/<model_version>.json`), written by `calibration.build`:
  distance:   ascending grid of raw distances
  log10_fmr:  log10 P(impostor distance <= d) on that grid (empirical where the data is dense,
              the documented tail fit below that; never decreasing)
  fnmr:       P(genuine distance > d) on that grid
  plus provenance fields (dataset, pair counts, tail fit) that `faceledger calibration` prints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

# FMR below this is reported as this: beyond any fit's credibility.
MIN_LOG10_FMR = -12.0


@dataclass(frozen=True)
class CalibrationTable:
    """A model's measured distance -> FMR/FNMR curve, with interpolation both ways."""

    model_version: str
    distance: NDArray[np.float64]
    log10_fmr: NDArray[np.float64]
    fnmr: NDArray[np.float64]
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CalibrationTable:
        d = np.asarray(raw["distance"], dtype=np.float64)
        lf = np.maximum.accumulate(
            np.maximum(np.asarray(raw["log10_fmr"], dtype=np.float64), MIN_LOG10_FMR)
        )
        fn = np.asarray(raw["fnmr"], dtype=np.float64)
        if not (d.ndim == 1 and d.shape == lf.shape == fn.shape and np.all(np.diff(d) > 0)):
            raise ValueError("calibration table needs equal-length grids with ascending distance")
        prov = {k: v for k, v in raw.items() if k not in ("distance", "log10_fmr", "fnmr")}
        return cls(str(raw["model_version"]), d, lf, fn, prov)

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

    def distance_for_fmr(self, fmr: float) -> float:
        """The largest distance whose FMR does not exceed `fmr`: the match threshold."""
        if fmr >= 1.0:
            return float(self.distance[-1])
        target = np.log10(max(fmr, 10.0**MIN_LOG10_FMR))
        lf = self.log10_fmr
        # log10_fmr is non-decreasing; interpolate on its strictly increasing part.
        keep = np.concatenate(([True], np.diff(lf) > 0))
        return float(np.interp(target, lf[keep], self.distance[keep]))

    @staticmethod
    def fmr_for_similarity(similarity: float) -> float:
        """The false-match rate a SimilarityThreshold stands for."""
        return max(0.0, 1.0 - similarity / 100.0)

    def distance_for_similarity(self, similarity: float) -> float:
        """The distance threshold that a SimilarityThreshold means."""
        if similarity <= 0.0:
            return float("inf")
        return self.distance_for_fmr(self.fmr_for_similarity(similarity))


@lru_cache(maxsize=8)
def load_calibration(model_version: str) -> CalibrationTable:
    """The table shipped in the package for `model_version`."""
    path = resources.files("faceledger.calibration") / "tables" / f"{model_version}.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise LookupError(f"no calibration table ships for model {model_version!r}") from exc
    return CalibrationTable.from_dict(raw)
