"""The face pipeline: scale for detection, detect, place landmarks, measure pose and quality, embed.

Models load on first use and stay loaded for the life of the pipeline (one per process).
"""

from __future__ import annotations

import threading
from functools import cached_property

import cv2
import numpy as np
from numpy.typing import NDArray

from ..settings import Settings
from .embedders import build_embedder, embedder_version
from .models import HogDetector, MtcnnDetector, OnetLandmarker
from .onnx_models import OnnxMmodDetector
from .pose import estimate_pose
from .quality import measure_quality
from .types import (
    Box,
    Detection,
    Detector,
    Embedder,
    FaceAnalysis,
    Landmarker,
    Landmarks5,
    RGBImage,
)


def build_detector(name: str, settings: Settings | None = None) -> Detector:
    """The detector class for a configured name."""
    match name:
        case "hog":
            return HogDetector()
        case "cnn":
            s = settings or Settings()
            return OnnxMmodDetector(s.resolved_model_cache_dir(), s.inference_threads)
        case "mtcnn":
            return MtcnnDetector()
        case _:
            raise ValueError(f"unknown detector {name!r}: choose hog, cnn or mtcnn")


class FacePipeline:
    """Detect, describe and embed faces with the models chosen in Settings."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        # dlib and OpenCV networks are not documented as thread-safe: one caller at a time.
        self._lock = threading.Lock()

    @cached_property
    def detector(self) -> Detector:
        return build_detector(self.settings.detector, self.settings)

    @cached_property
    def landmarker(self) -> Landmarker:
        return OnetLandmarker()

    @cached_property
    def embedder(self) -> Embedder:
        return build_embedder(self.settings)

    @cached_property
    def model_version(self) -> str:
        """The embedding model's version: what collections and calibration tables are keyed by."""
        return embedder_version(self.settings)

    def warm_up(self) -> None:
        """Load every model now rather than on the first request."""
        _ = self.detector, self.landmarker, self.embedder

    def detection_scale(self, width: int, height: int) -> float:
        """Resize factor for detection: small images are upsampled so that faces of
        `min_face_px` reach the detector's native minimum; large ones are downscaled."""
        s = self.settings
        up = max(self.detector.native_min_face / s.min_face_px, 1.0)
        down = s.detect_max_side / max(width, height)
        return min(up, down)

    def detect(self, pixels: RGBImage) -> list[Detection]:
        """Face boxes in `pixels` coordinates, largest first."""
        h, w = pixels.shape[:2]
        scale = self.detection_scale(w, h)
        work = pixels
        if abs(scale - 1.0) > 1e-3:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            interp = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
            work = np.ascontiguousarray(cv2.resize(pixels, size, interpolation=interp))
        found = self.detector.detect(work)
        out: list[Detection] = []
        for d in found:
            box = d.box.scaled(1.0 / scale).clipped(w, h)
            if box.width < 2 or box.height < 2:
                continue
            lm = None if d.landmarks is None else (d.landmarks / scale).astype(np.float32)
            out.append(Detection(box, d.confidence, lm))
        # Largest first; HOG boxes come in quantized sizes, so break ties by confidence.
        out.sort(key=lambda d: (d.box.area, d.confidence), reverse=True)
        return out

    def analyze(
        self, pixels: RGBImage, *, embed: bool = True, max_faces: int | None = None
    ) -> list[FaceAnalysis]:
        """Every face (up to `max_faces`, largest first) with landmarks, pose, quality and,
        if `embed`, its template."""
        limit = self.settings.max_faces if max_faces is None else max_faces
        with self._lock:
            detections = self.detect(pixels)[:limit]
            if not detections:
                return []
            boxes = [d.box for d in detections]
            missing = [i for i, d in enumerate(detections) if d.landmarks is None]
            placed = self.landmarker.landmarks(pixels, [boxes[i] for i in missing])
            landmarks: list[Landmarks5 | None] = [d.landmarks for d in detections]
            for i, placed_lm in zip(missing, placed):
                landmarks[i] = placed_lm
            # every box has landmarks now: from its detector or from ONet
            placed_all = [lm for lm in landmarks if lm is not None]
            vectors = self.embedder.embed(pixels, boxes, placed_all) if embed else None
        faces = []
        for i, d in enumerate(detections):
            lm = landmarks[i]
            assert lm is not None  # every box got landmarks from its detector or from ONet
            faces.append(
                FaceAnalysis(
                    box=d.box,
                    confidence=round(float(d.confidence), 4),
                    landmarks=lm,
                    pose=estimate_pose(lm),
                    quality=measure_quality(pixels, d.box),
                    embedding=None if vectors is None else vectors[i],
                )
            )
        return faces

    def embed_boxes(
        self, pixels: RGBImage, boxes: list[Box], landmarks: list[Landmarks5] | None = None
    ) -> NDArray[np.float32]:
        """Templates for given boxes (used by evaluation to embed a known face); an embedder
        that aligns by landmarks gets ONet's unless they are given."""
        with self._lock:
            if landmarks is None and self.embedder.needs_landmarks:
                landmarks = self.landmarker.landmarks(pixels, boxes)
            return self.embedder.embed(pixels, boxes, landmarks)
