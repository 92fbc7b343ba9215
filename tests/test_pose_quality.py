"""Pose and quality behave as documented: mirror symmetry, rotation, blur and darkness."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from faceledger.vision import FacePipeline
from faceledger.vision.pose import estimate_pose


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.asarray(data.astronaut())  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline()


def test_frontal_template_has_zero_pose() -> None:
    template = np.array([[38.29, 51.70], [73.53, 51.70], [56.0, 71.74], [41.55, 92.3],
                         [70.45, 92.3]], dtype=np.float32)
    pose = estimate_pose(template)
    assert abs(pose.yaw) < 1 and abs(pose.pitch) < 1 and abs(pose.roll) < 1


def test_mirrored_face_flips_yaw_and_roll(pipeline: FacePipeline, astronaut: np.ndarray) -> None:
    a = pipeline.analyze(astronaut, embed=False)[0].pose
    b = pipeline.analyze(np.ascontiguousarray(astronaut[:, ::-1]), embed=False)[0].pose
    assert abs(a.yaw + b.yaw) < 6
    assert abs(a.roll + b.roll) < 4
    assert abs(a.pitch - b.pitch) < 6


def test_in_plane_rotation_shows_as_roll(pipeline: FacePipeline, astronaut: np.ndarray) -> None:
    base = pipeline.analyze(astronaut, embed=False)[0]
    cx, cy = (base.box.left + base.box.right) / 2, (base.box.top + base.box.bottom) / 2
    m = cv2.getRotationMatrix2D((cx, cy), -20, 1.0)  # 20 degrees clockwise
    rotated = cv2.warpAffine(astronaut, m, (512, 512), borderValue=(128, 128, 128))
    turned = [f for f in pipeline.analyze(rotated, embed=False) if f.box.iou(base.box) > 0.3]
    assert turned, "a 20-degree roll must still be detected where the face was"
    assert abs((turned[0].pose.roll - base.pose.roll) - 20) < 6


def test_blur_lowers_sharpness_and_darkening_lowers_brightness(
    pipeline: FacePipeline, astronaut: np.ndarray
) -> None:
    base = pipeline.analyze(astronaut, embed=False)[0].quality
    blurred = cv2.GaussianBlur(astronaut, (0, 0), 3)
    dark = (astronaut * 0.4).astype(np.uint8)
    qb = pipeline.analyze(blurred, embed=False)[0].quality
    qd = pipeline.analyze(dark, embed=False)[0].quality
    assert 0 <= qb.sharpness < base.sharpness - 20
    assert qd.brightness < base.brightness * 0.5
    assert 0 <= base.brightness <= 100 and 0 <= base.sharpness <= 100
