"""The values the vision layer produces, and the Protocols each model class implements."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

RGBImage = NDArray[np.uint8]
Embedding = NDArray[np.float32]
# Five (x, y) pixel points in Rekognition's order: eyeLeft, eyeRight, nose, mouthLeft, mouthRight.
Landmarks5 = NDArray[np.float32]
LANDMARK_TYPES = ("eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight")


@dataclass(frozen=True)
class Box:
    """A face box in pixels of the (orientation-corrected) image."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    def scaled(self, factor: float) -> Box:
        """The same box in an image resized by `factor`."""
        return Box(self.left * factor, self.top * factor, self.right * factor, self.bottom * factor)

    def clipped(self, width: int, height: int) -> Box:
        """The box limited to the image."""
        return Box(
            min(max(self.left, 0.0), float(width)),
            min(max(self.top, 0.0), float(height)),
            min(max(self.right, 0.0), float(width)),
            min(max(self.bottom, 0.0), float(height)),
        )

    def iou(self, other: Box) -> float:
        """Intersection over union."""
        ix = max(0.0, min(self.right, other.right) - max(self.left, other.left))
        iy = max(0.0, min(self.bottom, other.bottom) - max(self.top, other.top))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Detection:
    """A detector's answer: a box and how sure it is (0-100), with landmarks if it makes them.

    `face_probability` is MTCNN's output network's (ONet's) probability that the box holds a
    face (0-1), set by the pipeline's check (`FacePipeline.check_faces`), which every
    detection must pass (`Settings.min_face_probability`).
    """

    box: Box
    confidence: float
    landmarks: Landmarks5 | None = None
    face_probability: float | None = None
    # ONet's five points on the box (set by the check): what Pose is computed from, since
    # YuNet's own points understate in-plane rotation (docs/accuracy.md, "Detector").
    check_landmarks: Landmarks5 | None = None


@dataclass(frozen=True)
class Pose:
    """Head rotation in degrees (see vision/pose.py for the sign conventions)."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True)
class Quality:
    """Rekognition's ImageQuality: Brightness and Sharpness of the face region, 0-100."""

    brightness: float
    sharpness: float


@dataclass(frozen=True)
class FaceAnalysis:
    """Everything faceledger knows about one face in one image."""

    box: Box
    confidence: float
    landmarks: Landmarks5
    pose: Pose
    quality: Quality
    embedding: Embedding | None = None
    # ONet's probability (0-1) that the box holds a face: the check the detection passed.
    face_probability: float | None = None


class Detector(Protocol):
    """Finds face boxes in an RGB image at the scale it is given."""

    name: str
    # Smallest face side (px) the model finds reliably at scale 1; the pipeline upsamples to it.
    native_min_face: int
    # dlib's detectors draw tight boxes (brows to chin); YuNet and MTCNN looser, square-ish
    # ones. ONet places landmarks on a square grown from a tight box, on the box itself else.
    tight_boxes: bool

    def detect(self, pixels: RGBImage) -> list[Detection]: ...


class Landmarker(Protocol):
    """Places Rekognition's five landmarks inside given face boxes."""

    def landmarks(self, pixels: RGBImage, boxes: list[Box], tight_boxes: bool = True) -> list[Landmarks5]: ...

    def landmarks_and_face_probabilities(
        self, pixels: RGBImage, boxes: list[Box], tight_boxes: bool = True
    ) -> tuple[list[Landmarks5], NDArray[np.float32]]:
        """The five landmarks of each box and the probability (0-1) that it holds a face."""
        ...


class Embedder(Protocol):
    """Turns faces (image + box, and the five landmarks if it aligns by them) into
    L2-comparable template vectors."""

    model_version: str
    dim: int
    # True when `embed` aligns faces by the five landmarks (they must then be passed).
    needs_landmarks: bool

    def embed(
        self, pixels: RGBImage, boxes: list[Box], landmarks: list[Landmarks5] | None = None
    ) -> NDArray[np.float32]: ...


class FaceNetwork(Protocol):
    """One network of a fused model (vision/fused.py): aligns faces its own way from the five
    landmarks and turns them into L2-normalised templates, many faces in one run."""

    name: str
    dim: int

    def aligned(self, pixels: RGBImage, landmarks: list[Landmarks5]) -> NDArray[np.uint8]: ...

    def embed_aligned(self, faces: NDArray[np.uint8]) -> NDArray[np.float32]: ...


# One image's faces to embed: its pixels, the boxes, and (for an embedder that aligns by them)
# the five landmarks of each face.
FacesOfImage = tuple[RGBImage, list[Box], list[Landmarks5] | None]


@runtime_checkable
class BatchEmbedder(Protocol):
    """An embedder that takes the faces of many images in runs of up to `batch` faces
    (vision/batching.py): the same templates as `embed`, image by image, to 1e-5."""

    def embed_many(
        self, items: Sequence[FacesOfImage], batch: int
    ) -> list[NDArray[np.float32]]: ...
