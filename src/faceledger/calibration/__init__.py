"""Raw distance <-> calibrated Similarity <-> measured false-match rate, per embedding model."""

from .table import CalibrationTable, load_calibration

__all__ = ["CalibrationTable", "load_calibration"]
