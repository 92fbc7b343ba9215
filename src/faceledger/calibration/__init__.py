"""Raw distance <-> calibrated Similarity <-> measured false-match rate, per embedding model."""

from .table import CalibrationTable, fmr_for_similarity, load_calibration, similarity_for_fmr

__all__ = ["CalibrationTable", "fmr_for_similarity", "load_calibration", "similarity_for_fmr"]
