"""OpenCV Zoo's SFace face recogniser (MobileFaceNet trained with the SFace loss, 128-d), the
second network of model 3.0 (vision/fused.py).

The file is the Zoo's block-quantised build `face_recognition_sface_2021dec_int8bq.onnx`
(vendored byte for byte in vision/weights/sface/ with the Zoo's Apache-2.0 licence; checksum
checked on load). Its int8 weights are folded into float32 once (vision/onnx_fold.py, cached
in the model cache directory by the file's SHA-256) and the folded network runs on OpenVINO's
CPU plugin in float32 (runtime chosen by measurement: bench/runtimes.py). It equals
`cv2.FaceRecognizerSF.feature` on the published file to 1e-4 (tests/test_model_runtimes.py).

Faces are aligned as `cv2.FaceRecognizerSF.alignCrop` aligns them: the least-squares
similarity transform of the five landmarks onto ArcFace's 112 x 112 template, bilinear
(tests hold the crops equal to OpenCV's). The network takes RGB 0-255 (OpenCV swaps BGR to RGB
before it) and normalises inside the graph, (x - 127.5) / 128.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from .align import aligned_faces
from .onnx_fold import cached_folded
from .openvino_models import infer_templates, openvino_model
from .operator_model import ARCFACE_TEMPLATE
from .types import Landmarks5, RGBImage
from .weights import weight_file

SFACE_FILE = "sface/face_recognition_sface_2021dec_int8bq.onnx"
SFACE_SIZE = 112
SFACE_TEMPLATE = ARCFACE_TEMPLATE.astype(np.float64) / SFACE_SIZE  # normalised crop coordinates


class SfaceEmbedder:
    """SFace on OpenVINO: 128-d templates of faces aligned to ArcFace's template, L2-normalised."""

    name = "sface"
    dim = 128
    size = SFACE_SIZE

    def __init__(self, cache_dir: Path, threads: int = 1) -> None:
        self.source = weight_file(SFACE_FILE)
        self.path = cached_folded(self.source, cache_dir)
        self._compiled = openvino_model(self.path, threads)

    def aligned(self, pixels: RGBImage, landmarks: list[Landmarks5]) -> NDArray[np.uint8]:
        """(n, 112, 112, 3) RGB faces aligned as cv2.FaceRecognizerSF.alignCrop does."""
        return aligned_faces(pixels, landmarks, SFACE_TEMPLATE, SFACE_SIZE)

    def embed_aligned(self, faces: NDArray[np.uint8]) -> NDArray[np.float32]:
        """L2-normalised templates of (n, 112, 112, 3) RGB aligned faces, in one run."""
        return infer_templates(self._compiled, faces.transpose(0, 3, 1, 2).astype(np.float32),
                               self.dim)
