"""YuNet (libfacedetection.train, Apache-2.0): a 0.1 M-parameter face detector that gives a box
and the five landmarks per face, trained on WIDER FACE. faceledger's default detector.

The dynamic-size ONNX export runs on ONNX Runtime; the decoding below is YuNet's own
(anchor-free, one prediction per cell of the stride-8/16/32 grids, score = sqrt(cls * obj)),
as OpenCV's `cv2.FaceDetectorYN` does it, which tests/test_yunet.py holds it to.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from .onnx_models import ort_session
from .types import Box, Detection, RGBImage
from .weights import weight_file

YunetVariant = Literal["n", "s"]
STRIDES = (8, 16, 32)


def yunet_confidence(score: float) -> float:
    """YuNet's score (sqrt(cls * obj), 0-1; clear frontal faces reach only 0.90-0.96) mapped
    monotonically to Rekognition's 0-100 Confidence, anchored as the HOG detector's is: the
    detection bar (0.6) at 88 and a clear face (0.9) at 99.7, so the QualityFilter's
    confidence bars (LOW 80, MEDIUM 90, HIGH 97) keep their meaning (documented, not
    calibrated)."""
    return 100.0 / (1.0 + math.exp(-12.73 * (score - 0.4437)))


class YunetDetector:
    """Boxes, five landmarks and a score for every face of about 10 px and up."""

    name = "yunet"
    # The stride-8 grid finds faces down to ~10 px; 16 px is where recall is still high on
    # WIDER FACE's hard set, so images are upsampled until `min_face_px` reaches it.
    native_min_face = 16
    # WIDER FACE-style boxes (forehead to chin), not dlib's brows-to-chin ones
    tight_boxes = False

    def __init__(
        self,
        variant: YunetVariant = "n",
        threads: int = 1,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
    ) -> None:
        self.variant = variant
        self.path: Path = weight_file(f"yunet/yunet_{variant}_dynamic.onnx")
        self._session = ort_session(self.path, threads)
        self._outputs = [f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in STRIDES]
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold

    def raw(self, pixels: RGBImage) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
        """Every candidate above the score threshold before non-maximum suppression:
        boxes (n, 4) as x, y, w, h; landmarks (n, 5, 2); scores (n,)."""
        h, w = pixels.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        blob = np.zeros((1, 3, ph, pw), dtype=np.float32)
        blob[0, :, :h, :w] = pixels[..., ::-1].transpose(2, 0, 1)  # BGR, 0-255, zero padding
        out = dict(zip(self._outputs, self._session.run(self._outputs, {"input": blob})))
        boxes, points, scores = [], [], []
        for s in STRIDES:
            cols, rows = pw // s, ph // s
            cls = np.clip(out[f"cls_{s}"][0, :, 0], 0.0, 1.0)
            obj = np.clip(out[f"obj_{s}"][0, :, 0], 0.0, 1.0)
            score = np.sqrt(cls * obj)
            keep = np.nonzero(score >= self.score_threshold)[0]
            if keep.size == 0:
                continue
            cx = (keep % cols).astype(np.float32)
            cy = (keep // cols).astype(np.float32)
            assert rows * cols == cls.shape[0]
            bb = out[f"bbox_{s}"][0, keep]
            centre_x = (cx + bb[:, 0]) * s
            centre_y = (cy + bb[:, 1]) * s
            bw = np.exp(bb[:, 2]) * s
            bh = np.exp(bb[:, 3]) * s
            boxes.append(np.stack([centre_x - bw / 2, centre_y - bh / 2, bw, bh], axis=1))
            kp = out[f"kps_{s}"][0, keep].reshape(-1, 5, 2)
            points.append(np.stack([(kp[..., 0] + cx[:, None]) * s, (kp[..., 1] + cy[:, None]) * s], axis=2))
            scores.append(score[keep])
        if not scores:
            return (np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32))
        return (
            np.concatenate(boxes).astype(np.float32),
            np.concatenate(points).astype(np.float32),
            np.concatenate(scores).astype(np.float32),
        )

    def detect(self, pixels: RGBImage) -> list[Detection]:
        boxes, points, scores = self.raw(pixels)
        if len(scores) == 0:
            return []
        kept = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), self.score_threshold, self.nms_threshold)
        out = []
        for i in np.asarray(kept, dtype=np.int64).reshape(-1):
            x, y, bw, bh = (float(v) for v in boxes[i])
            # YuNet's points run right eye, left eye, nose, right and left mouth corner of the
            # person, i.e. image left first: Rekognition's eyeLeft, eyeRight, ... order.
            out.append(Detection(Box(x, y, x + bw, y + bh), yunet_confidence(float(scores[i])), points[i].copy()))
        return out
