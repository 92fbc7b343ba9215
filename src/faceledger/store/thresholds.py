"""How strict a search is by default, and what its answer means (pure functions).

A search compares the probe with every face in the collection, so its false matches add up:
at a per-comparison false-match rate FMR, a search of N faces expects FMR x N false matches.
Without a FaceMatchThreshold the default is chosen so that this expectation stays at or below
DEFAULT_EXPECTED_FALSE_MATCHES per search (one false match in a hundred searches):

    FMR = clamp(DEFAULT_EXPECTED_FALSE_MATCHES / N, MIN_DEFAULT_FMR, MAX_DEFAULT_FMR)

- MAX_DEFAULT_FMR (1e-4, CompareFaces' default): a tiny collection is never searched more
  loosely than a 1:1 comparison.
- MIN_DEFAULT_FMR (1e-9): below this the calibration's tail fit is not credible; a collection of
  more than 10 million faces therefore gets FMR 1e-9, and its answers state expected false
  matches above the bound rather than pretend otherwise.

A threshold the caller gives is honoured as it is; the answer still reports FacesSearched,
FalseMatchRate and ExpectedFalseMatches for it.
"""

from __future__ import annotations

DEFAULT_EXPECTED_FALSE_MATCHES = 0.01
MAX_DEFAULT_FMR = 1e-4
MIN_DEFAULT_FMR = 1e-9


def default_search_fmr(
    faces_searched: int, bound: float = DEFAULT_EXPECTED_FALSE_MATCHES
) -> float:
    """The false-match rate of the default threshold for a search over `faces_searched` faces."""
    if faces_searched <= 0:
        return MAX_DEFAULT_FMR
    return min(MAX_DEFAULT_FMR, max(MIN_DEFAULT_FMR, bound / faces_searched))


def similarity_for_fmr(fmr: float) -> float:
    """The calibrated Similarity threshold that stands for a false-match rate."""
    return 100.0 * (1.0 - fmr)


def fmr_for_similarity(similarity: float) -> float:
    """The false-match rate a Similarity threshold stands for."""
    return max(0.0, 1.0 - similarity / 100.0)


def expected_false_matches(fmr: float, faces_searched: int) -> float:
    """Expected number of different people returned by one search."""
    return fmr * max(faces_searched, 0)
