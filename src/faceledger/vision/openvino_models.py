"""Intel's face-reidentification-retail-0095 embedder on OpenVINO (faceledger's model "2.0").

The network is read from Intel's own IR files (vendored in vision/weights/, Apache-2.0) by
OpenVINO's runtime: on this project's 2-core machines it computes a template in 2.5x less CPU
time than ONNX Runtime does on the same network (bench/embedders.py), and its outputs equal
our own IR -> ONNX translation (vision/openvino_ir/) run on ONNX Runtime to 1e-5
(tests/test_reid_equivalence.py), which is the reference.

Faces are aligned by a similarity transform (least squares) of the five landmarks onto the
model's template, 128 x 128, BGR, 0-255; templates are L2-normalised 256-d vectors, so the
Euclidean distance between two is a monotone function of their cosine distance.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openvino as ov
from numpy.typing import NDArray

from ..model_versions import REID_0095
from .align import aligned_faces
from .batching import landmarks_of, network_templates, split_by_image
from .types import Box, FacesOfImage, Landmarks5, RGBImage
from .weights import weight_file

REID_EMBEDDER_VERSION = REID_0095  # "2.0"
REID_XML = "face-reidentification-retail-0095/face-reidentification-retail-0095.xml"
REID_SIZE = 128
# The model card's landmark positions in normalised crop coordinates (Open Model Zoo):
# eyeLeft, eyeRight, nose, mouthLeft, mouthRight (image left first, as Rekognition's order).
REID_TEMPLATE = np.array(
    [[0.31556875, 0.46157411], [0.68262292, 0.46157411], [0.50026250, 0.64050536],
     [0.34947188, 0.82469196], [0.65343646, 0.82469196]],
    dtype=np.float64,
)  # fmt: skip


def openvino_model(path: Path, threads: int, batch_input: str | None = None) -> ov.CompiledModel:
    """A network compiled for OpenVINO's CPU plugin: `threads` threads, float32 arithmetic
    (not the bf16/f16 a CPU plugin may choose by itself), and a dynamic batch on `batch_input`."""
    core = ov.Core()
    model = core.read_model(str(path))
    if batch_input is not None:
        shape = model.input(batch_input).get_partial_shape()
        shape[0] = ov.Dimension(-1)
        model.reshape({batch_input: shape})
    config = {
        "INFERENCE_NUM_THREADS": max(1, threads),
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }
    return core.compile_model(model, "CPU", config)


def l2_normalised(raw: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rows scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    return np.asarray(raw / np.maximum(norms, np.float32(1e-12)), dtype=np.float32)


def infer_templates(
    compiled: ov.CompiledModel, x: NDArray[np.float32], dim: int
) -> NDArray[np.float32]:
    """L2-normalised `dim`-d templates of the network input `x` (n, 3, h, w), in one run."""
    if len(x) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    # an infer request per call: the compiled model is shared, a request is not thread-safe
    out = compiled.create_infer_request().infer({0: np.ascontiguousarray(x, dtype=np.float32)})
    raw = np.asarray(out[compiled.output(0)], dtype=np.float32).reshape(len(x), dim)
    return l2_normalised(raw)


class ReidEmbedder:
    """face-reidentification-retail-0095: 256-d templates, L2-normalised."""

    model_version = REID_EMBEDDER_VERSION
    name = "reid-0095"
    dim = 256
    needs_landmarks = True

    def __init__(self, threads: int = 1) -> None:
        self.path = weight_file(REID_XML)
        self._compiled = openvino_model(self.path, threads, batch_input="0")

    def aligned(self, pixels: RGBImage, landmarks: list[Landmarks5]) -> NDArray[np.uint8]:
        """(n, 128, 128, 3) RGB faces aligned to the model's template."""
        return aligned_faces(pixels, landmarks, REID_TEMPLATE, REID_SIZE)

    def embed_aligned(self, faces: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Templates of (n, 128, 128, 3) RGB aligned faces, in one run."""
        x = faces[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)  # the network takes BGR
        return infer_templates(self._compiled, x, self.dim)

    def embed(
        self, pixels: RGBImage, boxes: list[Box], landmarks: list[Landmarks5] | None = None
    ) -> NDArray[np.float32]:
        return self.embed_many([(pixels, boxes, landmarks)], max(1, len(boxes)))[0]

    def embed_many(self, items: Sequence[FacesOfImage], batch: int) -> list[NDArray[np.float32]]:
        """Templates of the faces of many images, in runs of `batch` faces."""
        rows = network_templates(self, items, landmarks_of(items, "the reid-0095 embedder"), batch)
        return split_by_image(rows, items)
