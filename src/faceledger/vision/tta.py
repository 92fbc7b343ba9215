"""Test-time augmentation for dlib's ResNet: average the descriptors of fixed transformed
copies of each chip (deterministic: the same transforms every time, no random generator).

dlib's published 99.38% on LFW averages over jittered copies; "flip" averages a chip with its
mirror image, "jitter" with the mirror plus small shifts, scales and rotations, each also
mirrored. Either is another template, so another model version ("1.1" flip, "1.2" jitter).
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from ..model_versions import DLIB_FLIP, DLIB_JITTER
from .onnx_models import OnnxResnetEmbedder
from .types import Box, Landmarks5, RGBImage

# (dx px, dy px, scale, rotation degrees) about the chip centre; each is also mirrored, so
# "jitter" averages 8 copies (bench/tta.py measures it against "flip" and "none").
JITTERS: tuple[tuple[float, float, float, float], ...] = (
    (0.0, 0.0, 1.0, 0.0),
    (2.0, 2.0, 1.0, 0.0),
    (0.0, 0.0, 1.05, 0.0),
    (0.0, 0.0, 1.0, 4.0),
)


def _warp(chips: NDArray[np.uint8], dx: float, dy: float, scale: float, angle: float) -> NDArray[np.uint8]:
    if (dx, dy, scale, angle) == (0.0, 0.0, 1.0, 0.0):
        return chips
    n, h, w = chips.shape[:3]
    m = np.asarray(cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, scale), dtype=np.float64)
    m[:, 2] += np.array([dx, dy])
    out = [cv2.warpAffine(c, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
           for c in chips]  # fmt: skip
    return np.stack(out).astype(np.uint8)


def tta_version(mode: str) -> str:
    """The model version of dlib's ResNet averaged over `mode`'s copies."""
    versions = {"flip": DLIB_FLIP, "jitter": DLIB_JITTER}
    if mode not in versions:
        raise ValueError(f"unknown test-time augmentation {mode!r}")
    return versions[mode]


def augmented(chips: NDArray[np.uint8], mode: str) -> list[NDArray[np.uint8]]:
    """The transformed copies of `chips` (each (n, h, w, 3)) that `mode` averages over."""
    if mode == "flip":
        return [chips, chips[:, :, ::-1]]
    if mode == "jitter":
        out = []
        for dx, dy, s, a in JITTERS:
            warped = _warp(chips, dx, dy, s, a)
            out += [warped, warped[:, :, ::-1]]
        return out
    raise ValueError(f"unknown test-time augmentation {mode!r}")


class TtaEmbedder:
    """dlib's ResNet (ONNX) with descriptors averaged over augmented copies of each chip."""

    dim = 128
    needs_landmarks = False

    def __init__(self, base: OnnxResnetEmbedder, mode: str) -> None:
        self.base = base
        self.mode = mode
        self.model_version = tta_version(mode)

    def embed_chips(self, chips: NDArray[np.uint8]) -> NDArray[np.float32]:
        if len(chips) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        copies = augmented(chips, self.mode)
        # one ORT run for every copy of every face
        out = self.base.embed_chips(np.ascontiguousarray(np.concatenate(copies)))
        mean: NDArray[np.float32] = out.reshape(len(copies), len(chips), self.dim).mean(axis=0)
        return mean.astype(np.float32)

    def embed(
        self, pixels: RGBImage, boxes: list[Box], landmarks: list[Landmarks5] | None = None
    ) -> NDArray[np.float32]:
        return self.embed_chips(self.base.chips(pixels, boxes))
