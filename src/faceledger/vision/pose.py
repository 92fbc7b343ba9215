"""Head pose (yaw, pitch, roll in degrees) from the five landmarks, by a small geometric model.

Conventions: roll is the angle of the eye line (positive: clockwise in the image, right eye
lower); yaw is positive when the nose points towards the image's right; pitch is positive when
the face looks up. The model assumes a nose tip that stands in front of the eye/mouth plane by
half the distance between the eyes, and the frontal nose position of the ArcFace 5-point template;
it is accurate to a few degrees near frontal and saturates gracefully for profiles.
"""

from __future__ import annotations

import math

import numpy as np

from .types import Landmarks5, Pose

# Frontal template (ArcFace 112x112 reference points): where the nose sits between eyes and mouth.
_NOSE_T_FRONTAL = (71.74 - 51.6) / (92.3 - 51.6)
# Nose protrusion over eye-to-mouth height in that template: 0.5 * iod / H = 0.5 * 35.24 / 40.7.
_NOSE_DEPTH_OVER_HEIGHT = 0.433


def estimate_pose(points: Landmarks5) -> Pose:
    """Yaw, pitch and roll of a face from eyeLeft, eyeRight, nose, mouthLeft, mouthRight."""
    p = np.asarray(points, dtype=np.float64)
    eye_l, eye_r, nose, mouth_l, mouth_r = p
    dx, dy = eye_r - eye_l
    roll = math.degrees(math.atan2(dy, dx))
    # Undo roll so the rest is measured on a level face.
    c, s = math.cos(-math.radians(roll)), math.sin(-math.radians(roll))
    rot = np.array([[c, -s], [s, c]])
    q = (p - p.mean(axis=0)) @ rot.T
    eye_l, eye_r, nose, mouth_l, mouth_r = q
    iod = float(np.linalg.norm(eye_r - eye_l))
    eye_mid = (eye_l + eye_r) / 2.0
    mouth_mid = (mouth_l + mouth_r) / 2.0
    height = float(mouth_mid[1] - eye_mid[1])
    if iod <= 1e-6 or height <= 1e-6:
        return Pose(yaw=0.0, pitch=0.0, roll=round(roll, 2))
    axis_x = (eye_mid[0] + mouth_mid[0]) / 2.0
    # Nose offset = depth * sin(yaw); observed iod = iod0 * cos(yaw); depth = iod0 / 2.
    yaw = math.degrees(math.atan2(2.0 * float(nose[0] - axis_x), iod))
    t = float(nose[1] - eye_mid[1]) / height
    pitch = math.degrees(math.atan2(-(t - _NOSE_T_FRONTAL), _NOSE_DEPTH_OVER_HEIGHT))
    return Pose(yaw=round(yaw, 2), pitch=round(pitch, 2), roll=round(roll, 2))
