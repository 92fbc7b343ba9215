"""Model classes that run networks on ONNX Runtime: dlib's ResNet embedder and MMOD detector
(graphs built from dlib's own files, see onnx_graphs.py), and operator-supplied embedders.

Thread safety: an `onnxruntime.InferenceSession` may be `run()` from several threads at
once, and these classes keep no per-call state in the instance, so `embed_chips`/`detect`
are safe to call concurrently. dlib's shape predictor is used through `dlib_chips`, which
holds no state between calls either (dlib's own objects are not documented as thread-safe:
the pipeline keeps its lock around them).
"""

from __future__ import annotations

from pathlib import Path

import dlib
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from .dlibnet import MmodOptions, mmod_face_detector, read_network, resnet_face_recognition
from .mmod import MmodDetection, decode_detections, output_to_input_map, pyramid_tensor
from .models import DLIB_EMBEDDER_VERSION, _dlib_model_path, _sigmoid
from .onnx_graphs import cached_graph
from .types import Box, Detection, Landmarks5, RGBImage

CHIP_SIZE = 150
CHIP_PADDING = 0.25


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with `threads` intra-op threads and no inter-op pool."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class DlibChipper:
    """dlib's 5-point predictor and get_face_chips: the 150x150 chips dlib's ResNet expects."""

    def __init__(self) -> None:
        self._shapes = dlib.shape_predictor(_dlib_model_path("shape_predictor_5_face_landmarks.dat"))

    def chips(self, pixels: RGBImage, boxes: list[Box], size: int = CHIP_SIZE) -> NDArray[np.uint8]:
        """(n, size, size, 3) RGB chips, one per box."""
        if not boxes:
            return np.zeros((0, size, size, 3), dtype=np.uint8)
        shapes = dlib.full_object_detections()
        for b in boxes:
            rect = dlib.rectangle(
                int(round(b.left)), int(round(b.top)), int(round(b.right)) - 1, int(round(b.bottom)) - 1
            )
            shapes.append(self._shapes(pixels, rect))
        chips = dlib.get_face_chips(pixels, shapes, size=size, padding=CHIP_PADDING)
        return np.asarray(chips, dtype=np.uint8).reshape(len(boxes), size, size, 3)


class OnnxResnetEmbedder:
    """dlib's ResNet face descriptor on ONNX Runtime: the same 128-d templates as dlib's own
    runtime (within 1e-5, tests/test_onnx_equivalence.py), several times faster."""

    model_version = DLIB_EMBEDDER_VERSION
    dim = 128
    needs_landmarks = False

    def __init__(self, cache_dir: Path, threads: int = 1) -> None:
        path, _ = cached_graph(
            Path(_dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")),
            resnet_face_recognition(),
            cache_dir,
        )
        self.graph_path = path
        self._session = ort_session(path, threads)
        self._chipper = DlibChipper()

    def embed_chips(self, chips: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Descriptors of (n, 150, 150, 3) RGB chips, all in one run."""
        if len(chips) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = np.ascontiguousarray(chips.transpose(0, 3, 1, 2), dtype=np.float32)
        out = self._session.run(["output"], {"pixels": x})[0]
        return np.asarray(out, dtype=np.float32)

    def chips(self, pixels: RGBImage, boxes: list[Box]) -> NDArray[np.uint8]:
        return self._chipper.chips(pixels, boxes)

    def embed(
        self, pixels: RGBImage, boxes: list[Box], landmarks: list[Landmarks5] | None = None
    ) -> NDArray[np.float32]:
        return self.embed_chips(self._chipper.chips(pixels, boxes))


class OnnxMmodDetector:
    """dlib's MMOD CNN face detector on ONNX Runtime, with dlib's pyramid and non-max
    suppression reimplemented (vision/mmod.py): the boxes of dlib.cnn_face_detection_model_v1."""

    name = "cnn"
    native_min_face = 80
    tight_boxes = True

    def __init__(self, cache_dir: Path, threads: int = 1) -> None:
        dat = Path(_dlib_model_path("mmod_human_face_detector.dat"))
        # the graph is cached; the network description (options, input, layer maps) is small
        # and read from the .dat every time so nothing else needs caching
        self.net = read_network(dat, mmod_face_detector())
        path, _ = cached_graph(dat, mmod_face_detector(), cache_dir, dynamic_size=True)
        self._session = ort_session(path, threads)
        if not isinstance(self.net.loss, MmodOptions):
            raise ValueError("mmod_human_face_detector.dat does not end in loss_mmod")
        self._options = self.net.loss
        self._mapping = output_to_input_map(self.net)

    def raw_detections(self, pixels: RGBImage) -> list[MmodDetection]:
        """dlib's detections (inclusive rectangles, raw scores) for an RGB image."""
        inp = self.net.input
        tensor, rects = pyramid_tensor(pixels, inp.mean_rgb, inp.pyramid_padding, inp.pyramid_outer_padding)
        if not rects:
            return []
        scores = np.asarray(self._session.run(["output"], {"pixels": tensor})[0], dtype=np.float32)
        return decode_detections(scores[0, 0], rects, self._options, self._mapping)

    def detect(self, pixels: RGBImage) -> list[Detection]:
        return [
            Detection(
                Box(float(d.rect[0]), float(d.rect[1]), float(d.rect[2] + 1), float(d.rect[3] + 1)),
                100.0 * _sigmoid(4.0 * (d.confidence - 0.5)),
            )
            for d in self.raw_detections(pixels)
        ]
