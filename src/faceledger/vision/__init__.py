"""Image pixels -> faces: detection, landmarks, pose, quality and embeddings, one class per model."""

from .pipeline import FacePipeline
from .types import Box, FaceAnalysis, Pose, Quality

__all__ = ["Box", "FaceAnalysis", "FacePipeline", "Pose", "Quality"]
