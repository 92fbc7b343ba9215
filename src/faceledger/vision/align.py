"""Face alignment: the similarity transform that puts five landmarks onto a model's template."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from .types import Landmarks5, RGBImage


def similarity_transform(src: NDArray[np.float64], dst: NDArray[np.float64]) -> NDArray[np.float64]:
    """The 2x3 similarity (rotation, uniform scale, translation) mapping `src` points onto
    `dst` with least squared error (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    r = u @ sign @ vt
    var = (s**2).sum() / len(src)
    scale = float(np.trace(np.diag(sig) @ sign) / var) if var > 0 else 1.0
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def align_face(pixels: RGBImage, landmarks: Landmarks5, template: NDArray[np.float64], size: int) -> RGBImage:
    """The face warped so its five landmarks best fit `template` (normalised coordinates)."""
    m = similarity_transform(landmarks.astype(np.float64), template * size)
    out = cv2.warpAffine(pixels, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return np.asarray(out, dtype=np.uint8)


def aligned_faces(
    pixels: RGBImage, landmarks: list[Landmarks5], template: NDArray[np.float64], size: int
) -> NDArray[np.uint8]:
    """(n, size, size, 3) faces, one per set of five landmarks, each aligned by `align_face`."""
    if not landmarks:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    return np.stack([align_face(pixels, lm, template, size) for lm in landmarks])
