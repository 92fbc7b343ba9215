"""Raw distance <-> calibrated Similarity <-> measured false-match rate, per embedding model."""

from .table import (
    CalibrationTable,
    calibration_path,
    find_calibration,
    fmr_for_similarity,
    load_calibration,
    similarity_for_fmr,
)

__all__ = ["CalibrationTable", "calibration_path", "find_calibration", "fmr_for_similarity",
           "load_calibration", "similarity_for_fmr"]
