"""Shot cuts: where the picture changes as a whole between two sampled frames.

A frame's signature is the colour histogram of a small copy of it (8 levels per RGB channel,
512 bins, summing to 1). Motion, zoom and a person walking through move pixels around but keep
their colours, so the histogram barely changes; a cut to another shot replaces most of them.
The L1 distance between two signatures runs from 0 (same colours) to 2 (no colour shared);
above CUT_DISTANCE the frames are in different shots. A cut that keeps the background and
changes only a face is not seen here: the tracker never links faces by their place alone.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

# Measured on tests/videos.py's clip at 4 samples a second (two faces moving and growing, a cut
# to another background): 0.09-0.14 within the shots, 1.58 across the cut (4 levels a channel
# gave 0.17 there: the two backgrounds share their coarse colours). Not yet measured on camera
# footage; a false cut costs little: it only takes overlap's tie-break away for one sample.
CUT_DISTANCE = 0.5
LEVELS = 8
_THUMB = (64, 36)


def signature(pixels: NDArray[np.uint8]) -> NDArray[np.float32]:
    """The colour histogram of a 64x36 copy of the frame (512 bins, summing to 1)."""
    small = np.asarray(cv2.resize(np.ascontiguousarray(pixels), _THUMB,
                                  interpolation=cv2.INTER_AREA), dtype=np.uint8)
    q = small.astype(np.int32) * LEVELS // 256
    bins = np.bincount(((q[..., 0] * LEVELS + q[..., 1]) * LEVELS + q[..., 2]).ravel(),
                       minlength=LEVELS ** 3)
    return (bins / max(int(bins.sum()), 1)).astype(np.float32)


def is_cut(before: NDArray[np.float32] | None, after: NDArray[np.float32]) -> bool:
    """Whether a shot cut lies between the frames of these signatures."""
    return before is not None and float(np.abs(before - after).sum()) > CUT_DISTANCE
