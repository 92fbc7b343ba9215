"""How strict a search is by default, and what its answer means (pure functions).

A search compares the probe with every face in the collection, so its false matches add up:
at a per-comparison false-match rate FMR, a search of N faces expects FMR x N false matches.
Without a FaceMatchThreshold the default is chosen so that this expectation stays at or below
DEFAULT_EXPECTED_FALSE_MATCHES per search (one false match in a hundred searches):

    FMR = clamp(DEFAULT_EXPECTED_FALSE_MATCHES / N, MIN_DEFAULT_FMR, MAX_DEFAULT_FMR)

- MAX_DEFAULT_FMR (1e-4, CompareFaces' default): a tiny collection is never searched more
  loosely than a 1:1 comparison.
- the floor: the calibration table's `lowest_credible_fmr` (1.9e-6 for model 1.0), the
  smallest false-match rate LFW's data can demonstrate. A default never claims more than that,
  so a collection larger than bound / floor (about 5,200 faces for model 1.0 at the default
  bound) is searched at the floor, and its answers state the larger ExpectedFalseMatches (and
  FalseNonMatchRate, the share of true matches such a strict threshold misses) rather than
  pretend to a rate nobody measured. MIN_DEFAULT_FMR is the floor used without a table.

A threshold the caller gives is honoured as it is; the answer still reports FacesSearched,
FalseMatchRate and ExpectedFalseMatches for it.
"""

from __future__ import annotations

# The conversions live with the calibration that defines them; re-exported for the service.
from ..calibration.table import fmr_for_similarity, similarity_for_fmr

__all__ = [
    "DEFAULT_EXPECTED_FALSE_MATCHES", "MAX_DEFAULT_FMR", "MIN_DEFAULT_FMR", "default_search_fmr",
    "expected_false_matches", "fmr_for_similarity", "similarity_for_fmr",
]  # fmt: skip

DEFAULT_EXPECTED_FALSE_MATCHES = 0.01
MAX_DEFAULT_FMR = 1e-4
MIN_DEFAULT_FMR = 1e-6


def default_search_fmr(
    faces_searched: int, bound: float = DEFAULT_EXPECTED_FALSE_MATCHES,
    floor: float = MIN_DEFAULT_FMR,
) -> float:
    """The false-match rate of the default threshold for a search over `faces_searched` faces,
    never below `floor` (the calibration's lowest credible FMR)."""
    if faces_searched <= 0:
        return MAX_DEFAULT_FMR
    return min(MAX_DEFAULT_FMR, max(floor, bound / faces_searched))


def expected_false_matches(fmr: float, faces_searched: int) -> float:
    """Expected number of different people returned by one search."""
    return fmr * max(faces_searched, 0)
