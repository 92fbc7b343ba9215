"""Accuracy and fairness evaluation: verification (1:1), identification (1:N), detection and
quality-filter rates, per group, on LFW-format pair lists and folder-per-identity datasets.

The error rates themselves (FMR, FNMR, ROC, confidence intervals) are computed in one place,
`faceledger.rates`, which the calibration tables are built from too.
"""
