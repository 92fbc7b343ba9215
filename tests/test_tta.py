"""Test-time augmentation is a setting that makes a new model version, deterministic, and
averages exactly the copies it names; it is not the default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceledger.imaging import decode_image
from faceledger.settings import Settings
from faceledger.vision import FacePipeline
from faceledger.vision.onnx_models import OnnxResnetEmbedder
from faceledger.vision.tta import JITTERS, TtaEmbedder, augmented


@pytest.fixture(scope="module")
def chips(astronaut_jpeg: bytes, tmp_path_factory: pytest.TempPathFactory) -> tuple[OnnxResnetEmbedder, np.ndarray]:
    base = OnnxResnetEmbedder(tmp_path_factory.mktemp("models"))
    px = decode_image(astronaut_jpeg).pixels
    box = FacePipeline(Settings()).detect(px)[0].box
    return base, base.chips(px, [box])


def test_default_is_no_augmentation_and_each_mode_is_its_own_version(tmp_path: Path) -> None:
    assert FacePipeline(Settings(embedder="dlib", data_dir=tmp_path)).model_version == "1.0"
    assert FacePipeline(Settings(embedder="dlib", embedder_tta="flip")).model_version == "1.1"
    assert FacePipeline(Settings(embedder="dlib", embedder_tta="jitter")).model_version == "1.2"


def test_flip_averages_the_chip_and_its_mirror(chips: tuple[OnnxResnetEmbedder, np.ndarray]) -> None:
    base, c = chips
    plain, mirrored = base.embed_chips(c)[0], base.embed_chips(np.ascontiguousarray(c[:, :, ::-1]))[0]
    flip = TtaEmbedder(base, "flip").embed_chips(c)[0]
    np.testing.assert_allclose(flip, (plain + mirrored) / 2, atol=1e-5)
    assert 0.01 < float(np.linalg.norm(plain - mirrored)) < 0.4  # a real but small change


def test_jitter_is_deterministic_and_uses_every_copy(chips: tuple[OnnxResnetEmbedder, np.ndarray]) -> None:
    base, c = chips
    copies = augmented(c, "jitter")
    assert len(copies) == 2 * len(JITTERS)
    assert all(k.shape == c.shape for k in copies)
    tta = TtaEmbedder(base, "jitter")
    a, b = tta.embed_chips(c), tta.embed_chips(c)
    np.testing.assert_array_equal(a, b)
    each = np.stack([base.embed_chips(np.ascontiguousarray(k))[0] for k in copies])
    np.testing.assert_allclose(a[0], each.mean(axis=0), atol=1e-5)
