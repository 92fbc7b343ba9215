"""Which embedder a configuration means, and the model version its templates carry."""

from __future__ import annotations

from pathlib import Path

from ..settings import Settings
from .models import DLIB_EMBEDDER_VERSION, DlibResnetEmbedder
from .onnx_models import OnnxResnetEmbedder
from .openvino_models import REID_EMBEDDER_VERSION, ReidEmbedder
from .operator_model import OnnxModelEmbedder, model_version_for
from .tta import TtaEmbedder
from .types import Embedder


# Built-in embedders: Intel's face-reidentification-retail-0095 (the default), dlib's ResNet on
# ONNX Runtime, and dlib's ResNet through dlib's own runtime (the reference).
EMBEDDER_NAMES = ("reid-0095", "dlib", "dlib-native")


def _operator_path(name: str) -> Path | None:
    return Path(name[len("onnx:") :]).expanduser() if name.startswith("onnx:") else None


def embedder_version(settings: Settings) -> str:
    """The model version of the configured embedder (what collections and tables are keyed by)."""
    path = _operator_path(settings.embedder)
    if path is not None:
        return model_version_for(path)
    _check_name(settings.embedder)
    if settings.embedder == "reid-0095":
        return REID_EMBEDDER_VERSION
    if settings.embedder_tta != "none":
        return f"{DLIB_EMBEDDER_VERSION}-{settings.embedder_tta}"
    return DLIB_EMBEDDER_VERSION


def _check_name(name: str) -> None:
    if name not in EMBEDDER_NAMES:
        raise ValueError(f"unknown embedder {name!r}: choose {', '.join(EMBEDDER_NAMES)} or onnx:PATH")


def build_embedder(settings: Settings) -> Embedder:
    """The embedder class for the configuration (loads its model)."""
    path = _operator_path(settings.embedder)
    if path is not None:
        return OnnxModelEmbedder(path, settings.inference_threads)
    _check_name(settings.embedder)
    if settings.embedder == "reid-0095":
        if settings.embedder_tta != "none":
            raise ValueError("test-time augmentation is measured for dlib's embedder only")
        return ReidEmbedder(settings.inference_threads)
    if settings.embedder == "dlib-native":
        if settings.embedder_tta != "none":
            raise ValueError("test-time augmentation runs on the ONNX embedder only (embedder=dlib)")
        return DlibResnetEmbedder()
    base = OnnxResnetEmbedder(settings.resolved_model_cache_dir(), settings.inference_threads)
    if settings.embedder_tta != "none":
        return TtaEmbedder(base, settings.embedder_tta)
    return base
