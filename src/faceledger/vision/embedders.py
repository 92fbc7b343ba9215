"""Which embedder a configuration means, the model version its templates carry, and which
configuration runs a given model version (a server serves every collection's model)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ResourceNotReadyException
from ..model_versions import BUILT_IN, canonical, describe, is_operator
from ..settings import Settings
from .models import DLIB_EMBEDDER_VERSION, DlibResnetEmbedder
from .onnx_models import OnnxResnetEmbedder
from .fused import FUSED_EMBEDDER_VERSION, FusedEmbedder
from .openvino_models import REID_EMBEDDER_VERSION, ReidEmbedder
from .operator_model import ModelCardError, OnnxModelEmbedder, model_version_for
from .sface import SfaceEmbedder
from .tta import TtaEmbedder, tta_version
from .types import Embedder


# Built-in embedders: Intel's face-reidentification-retail-0095 (model 2.0), reid-0095 fused
# with OpenCV Zoo's SFace (model 3.0), dlib's ResNet on ONNX Runtime, and dlib's ResNet through
# dlib's own runtime (the reference).
EMBEDDER_NAMES = ("reid-0095", "reid-0095+sface", "dlib", "dlib-native")


def _operator_path(name: str) -> Path | None:
    return Path(name[len("onnx:") :]).expanduser() if name.startswith("onnx:") else None


def embedder_version(settings: Settings) -> str:
    """The model version of the configured embedder (what collections and tables are keyed by)."""
    path = _operator_path(settings.embedder)
    if path is not None:
        return _operator_version(path)
    _check_name(settings.embedder)
    if settings.embedder == "reid-0095":
        return REID_EMBEDDER_VERSION
    if settings.embedder == "reid-0095+sface":
        return FUSED_EMBEDDER_VERSION
    if settings.embedder_tta != "none":
        return tta_version(settings.embedder_tta)
    return DLIB_EMBEDDER_VERSION


def _operator_version(path: Path) -> str:
    try:
        return model_version_for(path)
    except OSError as exc:
        raise ModelCardError(f"the operator model {path} cannot be read: {exc}") from exc


def settings_for_version(settings: Settings, version: str) -> Settings:
    """`settings` with the embedder that makes templates of model `version`: the configured
    one, a built-in one, or an operator model listed in `extra_embedders` whose file has that
    version. ResourceNotReadyException (with what to do) when this server cannot run it."""
    want = canonical(version)
    if embedder_version(settings) == want:
        return settings
    card = BUILT_IN.get(want)
    if card is not None:
        return settings.model_copy(update={"embedder": card.embedder, "embedder_tta": card.tta})
    if is_operator(want):
        for name in settings.extra_embedders:
            path = _operator_path(name)
            if path is not None and path.is_file() and _operator_version(path) == want:
                return settings.model_copy(update={"embedder": name, "embedder_tta": "none"})
        raise ResourceNotReadyException(
            f"Face model {describe(want)} is an operator model whose file this server does not "
            "have: put the ONNX file (and its model card) back and name it in "
            "FACELEDGER_EMBEDDER or FACELEDGER_EXTRA_EMBEDDERS (onnx:PATH).")
    raise ResourceNotReadyException(
        f"Face model {want} is not known to this version of faceledger.")


def _check_name(name: str) -> None:
    if name not in EMBEDDER_NAMES:
        raise ValueError(f"unknown embedder {name!r}: choose {', '.join(EMBEDDER_NAMES)} or onnx:PATH")


def build_embedder(settings: Settings) -> Embedder:
    """The embedder class for the configuration (loads its model)."""
    path = _operator_path(settings.embedder)
    if path is not None:
        return OnnxModelEmbedder(path, settings.inference_threads)
    _check_name(settings.embedder)
    if settings.embedder in ("reid-0095", "reid-0095+sface") and settings.embedder_tta != "none":
        raise ValueError("test-time augmentation is measured for dlib's embedder only")
    if settings.embedder == "reid-0095":
        return ReidEmbedder(settings.inference_threads)
    if settings.embedder == "reid-0095+sface":
        return FusedEmbedder([
            ReidEmbedder(settings.inference_threads),
            SfaceEmbedder(settings.resolved_model_cache_dir(), settings.inference_threads),
        ])  # fmt: skip
    if settings.embedder == "dlib-native":
        if settings.embedder_tta != "none":
            raise ValueError("test-time augmentation runs on the ONNX embedder only (embedder=dlib)")
        return DlibResnetEmbedder()
    base = OnnxResnetEmbedder(settings.resolved_model_cache_dir(), settings.inference_threads)
    if settings.embedder_tta != "none":
        return TtaEmbedder(base, settings.embedder_tta)
    return base
