"""Model 3.0: two face networks fused into one template.

Each network (Intel's face-reidentification-retail-0095, 256-d; OpenCV Zoo's SFace, 128-d)
aligns the face its own way from the same five landmarks and gives an L2-normalised template.
The fused template is the two concatenated and scaled by 1/sqrt(2):

    t = [r, s] / sqrt(2),   |t| = 1,   t . t' = (r . r' + s . s') / 2

so its cosine is the mean of the two networks' cosines, its Euclidean distance is
sqrt(2 - 2 cos) as for every other model, and the index, the calibration and the evaluation
code take it as any other 384-d template. The scout's measurements and ours of why it pays
(the two networks err on different faces) are in docs/accuracy.md, section 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from ..model_versions import FUSED
from .batching import landmarks_of, network_templates, split_by_image
from .types import Box, FaceNetwork, FacesOfImage, Landmarks5, RGBImage

FUSED_EMBEDDER_VERSION = FUSED  # "3.0"


class FusedEmbedder:
    """Templates of several face networks, concatenated and scaled to unit length."""

    model_version = FUSED_EMBEDDER_VERSION
    needs_landmarks = True

    def __init__(self, parts: Sequence[FaceNetwork]) -> None:
        if not parts:
            raise ValueError("a fused embedder needs at least one network")
        self.parts = tuple(parts)
        self.dim = sum(p.dim for p in self.parts)
        self._scale = np.float32(1.0 / math.sqrt(len(self.parts)))

    def embed(
        self, pixels: RGBImage, boxes: list[Box], landmarks: list[Landmarks5] | None = None
    ) -> NDArray[np.float32]:
        return self.embed_many([(pixels, boxes, landmarks)], max(1, len(boxes)))[0]

    def embed_many(self, items: Sequence[FacesOfImage], batch: int) -> list[NDArray[np.float32]]:
        """Fused templates of the faces of many images: each network runs on all of them in
        runs of `batch` faces."""
        landmarks = landmarks_of(items, "model 3.0")
        parts = [network_templates(p, items, landmarks, batch) for p in self.parts]
        rows = np.ascontiguousarray(np.hstack(parts) * self._scale, dtype=np.float32)
        return split_by_image(rows, items)
