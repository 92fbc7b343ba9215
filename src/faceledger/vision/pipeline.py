"""The face pipeline: scale for detection, detect, place landmarks, measure pose and quality, embed.

Models load on first use and stay loaded for the life of the pipeline (one per process). One
detector serves every collection; embedders are per model version (`embedder_for`): the
configured one, and any other a collection is bound to, each loaded once, on its first use.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from functools import cached_property

import cv2
import numpy as np
from numpy.typing import NDArray

from ..model_versions import DLIB, DLIB_FLIP, DLIB_JITTER, canonical
from ..settings import Settings
from .batching import embed_many
from .embedders import build_embedder, embedder_version, settings_for_version
from .models import HogDetector, MtcnnDetector, OnetLandmarker
from .onnx_models import OnnxMmodDetector
from .pose import estimate_pose
from .quality import measure_quality
from .yunet import YunetDetector
from .types import (
    Box,
    Detection,
    Detector,
    Embedder,
    FaceAnalysis,
    FacesOfImage,
    Landmarker,
    Landmarks5,
    RGBImage,
)


def entering(pixels: RGBImage) -> RGBImage:
    """`pixels` as one C-contiguous block: where every image and video frame enters the pipeline.
    The native models (dlib's chips, ONNX Runtime's tensors) take contiguous buffers only, and
    PyAV pads frame rows to its alignment (a 500-pixel RGB row takes 1536 bytes)."""
    return np.ascontiguousarray(pixels)


def build_detector(name: str, settings: Settings | None = None) -> Detector:
    """The detector class for a configured name."""
    s = settings or Settings()
    match name:
        case "yunet":
            return YunetDetector(s.yunet_variant, s.inference_threads, s.yunet_score_threshold)
        case "hog":
            return HogDetector()
        case "cnn":
            return OnnxMmodDetector(s.resolved_model_cache_dir(), s.inference_threads)
        case "mtcnn":
            return MtcnnDetector()
        case _:
            raise ValueError(f"unknown detector {name!r}: choose yunet, hog, cnn or mtcnn")


def detector_name(settings: Settings, model_version: str | None) -> str:
    """The detector whose faces model `model_version` embeds: the configured one, except
    `Settings.dlib_detector` for dlib's models (1.x), whose templates depend on the box.
    None (no template, or the caller's choice): the configured detector."""
    special = settings.dlib_detector
    if model_version is not None and special is not None and canonical(model_version) in (
            DLIB, DLIB_FLIP, DLIB_JITTER):
        return special
    return settings.detector


class FacePipeline:
    """Detect, describe and embed faces with the models chosen in Settings."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        # dlib and OpenCV networks are not documented as thread-safe: one caller at a time.
        self._lock = threading.Lock()
        self._other_embedders: dict[str, Embedder] = {}
        self._other_detectors: dict[str, Detector] = {}
        self._embedders_lock = threading.Lock()

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
        """The configured embedding model's version (new collections get it; CompareFaces uses
        it): what collections and calibration tables are keyed by."""
        return embedder_version(self.settings)

    def embedder_for(self, model_version: str | None) -> Embedder:
        """The embedder of `model_version` (None: the configured one), loaded on first use and
        kept; ResourceNotReadyException if this server cannot run that model."""
        if model_version is None:
            return self.embedder
        version = canonical(model_version)
        if version == self.model_version:
            return self.embedder
        with self._embedders_lock:
            found = self._other_embedders.get(version)
            if found is None:
                found = build_embedder(settings_for_version(self.settings, version))
                self._other_embedders[version] = found
            return found

    def warm_up(self) -> None:
        """Load every model now rather than on the first request."""
        _ = self.detector, self.landmarker, self.embedder

    def detector_for(self, model_version: str | None) -> Detector:
        """The detector whose faces model `model_version` embeds (`detector_name`)."""
        name = detector_name(self.settings, model_version)
        if name == self.settings.detector:
            return self.detector
        with self._embedders_lock:
            found = self._other_detectors.get(name)
            if found is None:
                found = self._other_detectors[name] = build_detector(name, self.settings)
            return found

    def detection_scale(self, width: int, height: int, detector: Detector | None = None) -> float:
        """Resize factor for detection: small images are upsampled so that faces of
        `min_face_px` reach the detector's native minimum; large ones are downscaled."""
        s = self.settings
        up = max((detector or self.detector).native_min_face / s.min_face_px, 1.0)
        down = s.detect_max_side / max(width, height)
        return min(up, down)

    def detect(self, pixels: RGBImage, model_version: str | None = None) -> list[Detection]:
        """Face boxes in `pixels` coordinates that pass the face check, largest first, each
        with its five landmarks and face probability (found by `detector_for(model_version)`)."""
        pixels = entering(pixels)
        h, w = pixels.shape[:2]
        detector = self.detector_for(model_version)
        scale = self.detection_scale(w, h, detector)
        work = pixels
        if abs(scale - 1.0) > 1e-3:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            interp = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
            work = np.ascontiguousarray(cv2.resize(pixels, size, interpolation=interp))
        found = detector.detect(work)
        out: list[Detection] = []
        for d in found:
            box = d.box.scaled(1.0 / scale).clipped(w, h)
            if box.width < 2 or box.height < 2:
                continue
            lm = None if d.landmarks is None else (d.landmarks / scale).astype(np.float32)
            out.append(replace(d, box=box, landmarks=lm))
        out = self.check_faces(pixels, out, detector)
        # Largest first; HOG boxes come in quantized sizes, so break ties by confidence.
        out.sort(key=lambda d: (d.box.area, d.confidence), reverse=True)
        return out

    def check_faces(self, pixels: RGBImage, detections: list[Detection],
                    detector: Detector | None = None) -> list[Detection]:
        """Give each detection ONet's face probability (and landmarks, where its detector has
        none); keep those whose probability reaches `Settings.min_face_probability`.

        dlib's detectors fire on face-like patterns (the mission patch on the astronaut's suit,
        HOG confidence 90-92) and sometimes on part of a face (a nose); ONet, which runs on
        their boxes anyway for the landmarks, is a second opinion trained on other data. It runs
        on MTCNN's boxes too, on the final box: MTCNN's own score comes from ONet on the box
        before its last regression, and on the labelled group photos it ranks a 14 px shelf
        above a real face (0.89 against 0.70), where ONet on the final box does not (0.06
        against 0.96 and up). Measured in docs/accuracy.md, "Fewer false faces"."""
        if not detections:
            return []
        placed, probabilities = self.landmarker.landmarks_and_face_probabilities(
            pixels, [d.box for d in detections], (detector or self.detector).tight_boxes
        )
        checked = [
            replace(
                d,
                landmarks=lm if d.landmarks is None else d.landmarks,
                face_probability=float(p),
                check_landmarks=lm,
            )
            for d, lm, p in zip(detections, placed, probabilities)
        ]
        bar = self.settings.min_face_probability
        return [d for d in checked if (d.face_probability or 0.0) >= bar]

    def analyze(
        self, pixels: RGBImage, *, embed: bool = True, max_faces: int | None = None,
        model_version: str | None = None,
    ) -> list[FaceAnalysis]:
        """Every face (up to `max_faces`, largest first) with landmarks, pose, quality and,
        if `embed`, its template by model `model_version` (None: the configured model); the
        faces are found by that model's detector even when `embed` is false."""
        return self.analyze_batch([pixels], embed=embed, max_faces=max_faces,
                                  model_version=model_version)[0]

    def analyze_batch(
        self, images: Sequence[RGBImage], *, embed: bool = True, max_faces: int | None = None,
        model_version: str | None = None,
    ) -> list[list[FaceAnalysis]]:
        """`analyze` of several images (bulk work): each image's faces are found, then the
        faces of all of them go through the embedder together, in runs of
        `Settings.embed_batch` faces (vision/batching.py)."""
        limit = self.settings.max_faces if max_faces is None else max_faces
        embedder = self.embedder_for(model_version) if embed else None
        images = [entering(p) for p in images]
        with self._lock:
            found = [self.detect(p, model_version)[:limit] for p in images]
            # check_faces gave every box landmarks (its detector's or ONet's)
            items: list[FacesOfImage] = [
                (p, [d.box for d in ds], [d.landmarks for d in ds if d.landmarks is not None])
                for p, ds in zip(images, found)
            ]
            vectors = (None if embedder is None
                       else embed_many(embedder, items, self.settings.embed_batch))
        return [self._described(p, ds, None if vectors is None else vectors[i])
                for i, (p, ds) in enumerate(zip(images, found))]

    def _described(self, pixels: RGBImage, detections: list[Detection],
                   vectors: NDArray[np.float32] | None) -> list[FaceAnalysis]:
        faces = []
        for i, d in enumerate(detections):
            lm = d.landmarks
            assert lm is not None  # check_faces gave every box landmarks (its detector's or ONet's)
            faces.append(
                FaceAnalysis(
                    box=d.box,
                    confidence=round(float(d.confidence), 4),
                    landmarks=lm,
                    # Pose from ONet's points: YuNet's (used to align, where they measure
                    # better) follow a rolled face only ~70% of the way (20 deg reads as 14).
                    pose=estimate_pose(lm if d.check_landmarks is None else d.check_landmarks),
                    quality=measure_quality(pixels, d.box),
                    embedding=None if vectors is None else vectors[i],
                    face_probability=d.face_probability,
                )
            )
        return faces

    def embed_boxes(
        self, pixels: RGBImage, boxes: list[Box], landmarks: list[Landmarks5] | None = None,
        model_version: str | None = None,
    ) -> NDArray[np.float32]:
        """Templates by model `model_version` (None: the configured one) for given boxes; an
        embedder that aligns by landmarks gets ONet's unless they are given."""
        embedder = self.embedder_for(model_version)
        pixels = entering(pixels)
        with self._lock:
            landmarks = self._landmarks_for(embedder, pixels, boxes, landmarks, model_version)
            return embedder.embed(pixels, boxes, landmarks)

    def _landmarks_for(
        self, embedder: Embedder, pixels: RGBImage, boxes: list[Box],
        landmarks: list[Landmarks5] | None, model_version: str | None,
    ) -> list[Landmarks5] | None:
        """The given landmarks, or ONet's when the embedder aligns by landmarks and none were
        given (call with the lock held)."""
        if landmarks is None and embedder.needs_landmarks:
            tight = self.detector_for(model_version).tight_boxes
            return self.landmarker.landmarks(pixels, boxes, tight)
        return landmarks

    def embed_many(
        self, items: Sequence[FacesOfImage], model_version: str | None = None
    ) -> list[NDArray[np.float32]]:
        """`embed_boxes` of several images (bulk work), the faces of all of them through the
        embedder together in runs of `Settings.embed_batch` faces."""
        embedder = self.embedder_for(model_version)
        with self._lock:
            ready: list[FacesOfImage] = []
            for pixels, boxes, landmarks in items:
                pixels = entering(pixels)
                ready.append((pixels, boxes, self._landmarks_for(
                    embedder, pixels, boxes, landmarks, model_version)))
            return embed_many(embedder, ready, self.settings.embed_batch)
