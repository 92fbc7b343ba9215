"""Raw distance <-> calibrated Similarity <-> measured false-match rate, per embedding model."""

from .table import (
    SHIPPED_FMRS,
    CalibrationTable,
    calibration_path,
    find_calibration,
    fmr_for_similarity,
    load_calibration,
    similarity_for_fmr,
    strictest_fmr_passed,
)

__all__ = ["SHIPPED_FMRS", "CalibrationTable", "calibration_path", "find_calibration",
           "fmr_for_similarity", "load_calibration", "similarity_for_fmr",
           "strictest_fmr_passed"]
