"""Rendering vision results as Rekognition response shapes (botocore's `rekognition` model)."""

from __future__ import annotations

from typing import Any

from .vision.types import LANDMARK_TYPES, Box, FaceAnalysis

Shape = dict[str, Any]


def bounding_box(box: Box, width: int, height: int) -> Shape:
    """Rekognition's BoundingBox: ratios of the image width and height."""
    return {
        "Width": box.width / width,
        "Height": box.height / height,
        "Left": box.left / width,
        "Top": box.top / height,
    }


def landmarks(face: FaceAnalysis, width: int, height: int) -> list[Shape]:
    return [
        {"Type": t, "X": float(x) / width, "Y": float(y) / height}
        for t, (x, y) in zip(LANDMARK_TYPES, face.landmarks)
    ]


def pose_quality(face: FaceAnalysis) -> Shape:
    """The detector's pose and quality of a face (kept with enrolled faces and probes)."""
    return {"Pose": {"Roll": face.pose.roll, "Yaw": face.pose.yaw, "Pitch": face.pose.pitch},
            "Quality": {"Brightness": face.quality.brightness,
                        "Sharpness": face.quality.sharpness}}


def compared_face(face: FaceAnalysis, width: int, height: int) -> Shape:
    """Rekognition's ComparedFace (also the base of FaceDetail's default attributes)."""
    return {
        "BoundingBox": bounding_box(face.box, width, height),
        "Confidence": face.confidence,
        "Landmarks": landmarks(face, width, height),
        "Pose": {"Roll": face.pose.roll, "Yaw": face.pose.yaw, "Pitch": face.pose.pitch},
        "Quality": {"Brightness": face.quality.brightness, "Sharpness": face.quality.sharpness},
    }


def face_detail(face: FaceAnalysis, width: int, height: int) -> Shape:
    """Rekognition's FaceDetail with the attributes faceledger measures (no invented ones)."""
    return compared_face(face, width, height)
