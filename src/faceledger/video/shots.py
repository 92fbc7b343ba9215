"""Shot cuts: where the picture changes as a whole between two sampled frames.

A frame's signature is the colour histogram of a small copy of it (4 levels per RGB channel,
64 bins, summing to 1). Motion, zoom and a person walking through move pixels around but keep
their colours, so the histogram barely changes; a cut to another shot replaces most of them.
The L1 distance between two signatures runs from 0 (same colours) to 2 (no colour shared);
above CUT_DISTANCE the frames are in different shots. A cut that keeps the background and
changes only a face is not seen here: the tracker never links faces by their place alone.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

# Measured on the test clips (tests/test_video_cuts.py): within a shot 0.00-0.15 between
# samples half a second apart, across a cut between two backgrounds 0.9-1.6.
CUT_DISTANCE = 0.5
_THUMB = (64, 36)


def signature(pixels: NDArray[np.uint8]) -> NDArray[np.float32]:
    """The colour histogram of a 64x36 copy of the frame (64 bins, summing to 1)."""
    small = np.asarray(cv2.resize(np.ascontiguousarray(pixels), _THUMB,
                                  interpolation=cv2.INTER_AREA), dtype=np.uint8)
    q = (small // 64).astype(np.int32)  # 4 levels a channel
    bins = np.bincount((q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).ravel(), minlength=64)
    return (bins / max(int(bins.sum()), 1)).astype(np.float32)


def is_cut(before: NDArray[np.float32] | None, after: NDArray[np.float32]) -> bool:
    """Whether a shot cut lies between the frames of these signatures."""
    return before is not None and float(np.abs(before - after).sum()) > CUT_DISTANCE
