"""Vendored model files (package data): Intel's face-reidentification-retail-0095, OpenCV Zoo's
SFace (block-quantised, as published) and YuNet.

Each folder keeps the upstream licence; NOTICE at the repository root names source and
checksums. `weight_file` verifies a file's SHA-256 before a model class loads it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ...imaging import file_sha256

# SHA-256 of every vendored file, as published beside the upstream artifacts (NOTICE).
CHECKSUMS = {
    "face-reidentification-retail-0095/face-reidentification-retail-0095.xml":
        "ce53d2c9c08c0bd1c1660fb8a5b6d0e3e4ec19eb92f1036d2d83a85e83082dce",
    "face-reidentification-retail-0095/face-reidentification-retail-0095.bin":
        "241229ca3d206321868d46ce74a3c0b06c49cea58db7dc70b2e842ff287545d1",
    "sface/face_recognition_sface_2021dec_int8bq.onnx":
        "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    "yunet/yunet_n_dynamic.onnx": "104ee26c71d5c270ce79a6b3dced91c91013260d29a6bf18f9296c5b8c4c2b12",
    "yunet/yunet_s_dynamic.onnx": "daede24002cc8590f457998cc5e6c9e8b82f45f6bd969506a8913cd4ed10a2d3",
}  # fmt: skip


def weight_file(relative: str) -> Path:
    """The path of a vendored model file, after checking it is the published artifact."""
    path = Path(str(resources.files(__package__) / relative))
    want = CHECKSUMS.get(relative)
    if want is None or not path.is_file():
        raise FileNotFoundError(f"model file {relative} is not part of this installation")
    if file_sha256(path) != want:
        raise ValueError(f"model file {path} does not match its published SHA-256: reinstall")
    return path
