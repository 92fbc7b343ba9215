"""The embedder slot for operator models: `FACELEDGER_EMBEDDER=onnx:PATH`.

An operator who holds a licence for a stronger model (e.g. an ArcFace-class network on 112x112
aligned faces) puts its ONNX file at PATH and a model card beside it, `PATH.json` (or
`model-card.json` in the same folder):

    {"input_size": [112, 112], "alignment": "arcface-112", "color_order": "RGB",
     "mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5], "output_dim": 512,
     "licence": "...", "source": "..."}

`alignment` is "arcface-112" (the similarity transform of the five landmarks onto ArcFace's
standard 112x112 template, scaled to input_size) or "dlib-5point-chip" (dlib's 5-point
predictor and get_face_chips at input_size, padding 0.25). Optional: "layout" ("NCHW", default,
or "NHWC"), "l2_normalize" (default false). The model version is "100." + the first 12 hex
digits of the weights' SHA-256 read as a decimal number (model_versions.py), so another file is
another version: collections stay bound to the version that made their templates, and the
service answers comparisons only once `faceledger calibration build` has made a table for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from ..errors import ResourceNotReadyException
from ..imaging import file_sha256
from ..model_versions import operator_version
from .align import similarity_transform
from .onnx_models import DlibChipper, ort_session
from .types import Box, Landmarks5, RGBImage

# ArcFace's reference positions of eyeLeft, eyeRight, nose, mouthLeft, mouthRight in 112x112
# (insightface `arcface_dst`), in the same order as Rekognition's landmarks.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
     [70.7299, 92.2041]],
    dtype=np.float32,
)  # fmt: skip
ALIGNMENTS = ("arcface-112", "dlib-5point-chip")


class ModelCardError(ResourceNotReadyException, ValueError):
    """The operator model or its card is missing or inconsistent (the message says what):
    the configured model cannot serve, so callers get ResourceNotReadyException, not a 500."""


@dataclass(frozen=True)
class ModelCard:
    input_size: tuple[int, int]  # (width, height)
    alignment: str
    color_order: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output_dim: int
    licence: str
    source: str
    layout: str = "NCHW"
    l2_normalize: bool = False

    @staticmethod
    def find(model: Path) -> Path:
        for candidate in (model.with_name(model.name + ".json"), model.parent / "model-card.json"):
            if candidate.is_file():
                return candidate
        raise ModelCardError(
            f"no model card for {model}: write {model.name}.json beside it (input_size, "
            "alignment, color_order, mean, std, output_dim, licence, source)"
        )

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        try:
            raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelCardError(f"model card {path} is not readable JSON: {exc}") from exc
        missing = [k for k in ("input_size", "alignment", "color_order", "mean", "std",
                               "output_dim", "licence", "source") if k not in raw]  # fmt: skip
        if missing:
            raise ModelCardError(f"model card {path} lacks {', '.join(missing)}")
        try:
            w, h = (int(v) for v in raw["input_size"])
            card = cls(
                input_size=(w, h),
                alignment=str(raw["alignment"]),
                color_order=str(raw["color_order"]).upper(),
                mean=(float(raw["mean"][0]), float(raw["mean"][1]), float(raw["mean"][2])),
                std=(float(raw["std"][0]), float(raw["std"][1]), float(raw["std"][2])),
                output_dim=int(raw["output_dim"]),
                licence=str(raw["licence"]),
                source=str(raw["source"]),
                layout=str(raw.get("layout", "NCHW")).upper(),
                l2_normalize=bool(raw.get("l2_normalize", False)),
            )
        except (TypeError, ValueError, IndexError) as exc:
            raise ModelCardError(f"model card {path}: {exc}") from exc
        if card.alignment not in ALIGNMENTS:
            raise ModelCardError(f"model card {path}: alignment must be one of {ALIGNMENTS}")
        if card.color_order not in ("RGB", "BGR") or card.layout not in ("NCHW", "NHWC"):
            raise ModelCardError(f"model card {path}: color_order RGB|BGR, layout NCHW|NHWC")
        if min(w, h) < 16 or card.output_dim < 1 or min(card.std) <= 0:
            raise ModelCardError(f"model card {path}: implausible input_size, output_dim or std")
        return card


def model_version_for(path: Path) -> str:
    """The model file's version: "100.<n>", n the first 12 hex digits of its SHA-256."""
    return operator_version(file_sha256(path))


def arcface_align(pixels: RGBImage, landmarks: Landmarks5, size: tuple[int, int]) -> NDArray[np.uint8]:
    """The face warped so its five landmarks best match ArcFace's template (similarity
    transform, least squares), at `size` (width, height; the template is scaled from 112)."""
    w, h = size
    dst = ARCFACE_TEMPLATE * np.array([w / 112.0, h / 112.0], dtype=np.float32)
    m, _ = cv2.estimateAffinePartial2D(landmarks.astype(np.float32), dst, method=cv2.LMEDS)
    if m is None:  # degenerate landmarks: fall back to the exact least-squares fit
        m = similarity_transform(landmarks.astype(np.float64), dst.astype(np.float64))
    out = cv2.warpAffine(pixels, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return np.asarray(out, dtype=np.uint8)


class OnnxModelEmbedder:
    """An operator-supplied ONNX face embedder described by its model card."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        if not path.is_file():
            raise ModelCardError(f"FACELEDGER_EMBEDDER names {path}, which is not a file")
        self.card = ModelCard.load(ModelCard.find(path))
        self.path = path
        self.model_version = model_version_for(path)
        self.dim = self.card.output_dim
        self.needs_landmarks = self.card.alignment == "arcface-112"
        self._session = ort_session(path, threads)
        self._input = self._session.get_inputs()[0].name
        self._chipper = DlibChipper() if self.card.alignment == "dlib-5point-chip" else None

    def aligned(
        self, pixels: RGBImage, boxes: list[Box], landmarks: list[Landmarks5] | None
    ) -> NDArray[np.uint8]:
        """(n, h, w, 3) RGB faces aligned as the card says."""
        w, h = self.card.input_size
        if self._chipper is not None:
            if w != h:
                raise ModelCardError("dlib-5point-chip alignment needs a square input_size")
            return self._chipper.chips(pixels, boxes, size=w)
        if landmarks is None or len(landmarks) != len(boxes):
            raise ValueError("arcface-112 alignment needs five landmarks per face")
        if not boxes:
            return np.zeros((0, h, w, 3), dtype=np.uint8)
        return np.stack([arcface_align(pixels, lm, (w, h)) for lm in landmarks])

    def embed(
        self, pixels: RGBImage, boxes: list[Box], landmarks: list[Landmarks5] | None = None
    ) -> NDArray[np.float32]:
        faces = self.aligned(pixels, boxes, landmarks)
        if len(faces) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = faces.astype(np.float32)
        if self.card.color_order == "BGR":
            x = x[..., ::-1]
        mean = np.array(self.card.mean, dtype=np.float32)
        std = np.array(self.card.std, dtype=np.float32)
        x = ((x - mean) / std).astype(np.float32)
        if self.card.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        raw = self._session.run(None, {self._input: np.ascontiguousarray(x, dtype=np.float32)})[0]
        out = np.asarray(raw, dtype=np.float32).reshape(len(faces), -1)
        if out.shape[1] != self.dim:
            raise ModelCardError(
                f"{self.path} gives {out.shape[1]}-d outputs; its card says {self.dim}"
            )
        if self.card.l2_normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True).astype(np.float32)
            out = (out / np.maximum(norms, np.float32(1e-12))).astype(np.float32)
        return out
