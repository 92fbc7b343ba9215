"""Rekognition's ImageQuality for a face region (Brightness, Sharpness, both 0-100), and the
quality bar behind QualityFilter NONE/AUTO/LOW/MEDIUM/HIGH and IndexFaces' UnindexedFaces reasons.

Rekognition does not publish its formulas; ours are documented here so the numbers mean something:
- Brightness: mean luma (ITU-R BT.601) of the face box, as a percentage of full white.
- Sharpness: the variance of the Laplacian of the face resized to 112x112 grey, mapped to 0-100 by
  100 * (1 - exp(-var / 60)). The scale puts the median face of LFW and UTKFace (variance ~80)
  near 74 and the sharpest 5% above 95; a Gaussian blur of sigma 1.5 px brings a face to ~25.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .types import Box, Pose, Quality, RGBImage

_SHARPNESS_SCALE = 60.0


def measure_quality(pixels: RGBImage, box: Box) -> Quality:
    """Brightness and Sharpness (0-100) of the face inside `box`."""
    h, w = pixels.shape[:2]
    b = box.clipped(w, h)
    x0, y0, x1, y1 = int(b.left), int(b.top), int(math.ceil(b.right)), int(math.ceil(b.bottom))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return Quality(brightness=0.0, sharpness=0.0)
    crop = pixels[y0:y1, x0:x1]
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    brightness = 100.0 * float(grey.mean()) / 255.0
    norm = cv2.resize(grey, (112, 112), interpolation=cv2.INTER_AREA)
    var = float(cv2.Laplacian(norm, cv2.CV_64F).var())
    sharpness = 100.0 * (1.0 - math.exp(-var / _SHARPNESS_SCALE))
    return Quality(brightness=round(brightness, 3), sharpness=round(sharpness, 3))


@dataclass(frozen=True)
class QualityBar:
    """Minimums a face must meet for one QualityFilter level."""

    min_confidence: float
    min_side_px: float
    min_brightness: float
    max_brightness: float
    min_sharpness: float
    max_abs_yaw: float
    max_abs_pitch: float


# LOW removes only the clearly unusable; HIGH keeps faces fit for identification.
# AUTO is MEDIUM, the bar IndexFaces uses by default.
QUALITY_BARS: dict[str, QualityBar] = {
    "LOW": QualityBar(80.0, 30.0, 5.0, 98.0, 5.0, 75.0, 60.0),
    # Confidence 90, not 95: 95 would drop more of HOG's false alarms (badges, patterns) but on
    # UTKFace it refused 11-14% of Asian faces against 2.5-4.5% of Indian and white ones; 90
    # refuses at most 2.5% in every sex x race group.
    "MEDIUM": QualityBar(90.0, 40.0, 12.0, 95.0, 15.0, 55.0, 45.0),
    "HIGH": QualityBar(97.0, 64.0, 20.0, 92.0, 30.0, 35.0, 30.0),
}
QUALITY_BARS["AUTO"] = QUALITY_BARS["MEDIUM"]
QUALITY_FILTERS = ("NONE", "AUTO", "LOW", "MEDIUM", "HIGH")


def quality_reasons(
    level: str, confidence: float, box: Box, pose: Pose, quality: Quality
) -> list[str]:
    """Rekognition `Reason` values why a face fails the `level` bar (empty: it passes)."""
    if level == "NONE":
        return []
    bar = QUALITY_BARS[level]
    reasons: list[str] = []
    if confidence < bar.min_confidence:
        reasons.append("LOW_CONFIDENCE")
    if min(box.width, box.height) < bar.min_side_px:
        reasons.append("SMALL_BOUNDING_BOX")
    if abs(pose.yaw) > bar.max_abs_yaw or abs(pose.pitch) > bar.max_abs_pitch:
        reasons.append("EXTREME_POSE")
    if quality.brightness < bar.min_brightness or quality.brightness > bar.max_brightness:
        reasons.append("LOW_BRIGHTNESS")
    if quality.sharpness < bar.min_sharpness:
        reasons.append("LOW_SHARPNESS")
    return reasons
