"""Model 2.0's networks computed as their publishers' files define them.

- Intel's face-reidentification-retail-0095 runs on OpenVINO from Intel's IR files; our own IR
  reader (vision/openvino_ir/) translates the same files to an ONNX graph run on ONNX Runtime:
  two independent implementations, equal to 1e-5.
- YuNet's decoding (vision/yunet.py) gives the boxes, landmarks and scores of OpenCV's
  `cv2.FaceDetectorYN`, run on the upstream fixed-size export of the same network.
- The vendored files are the published artifacts (SHA-256), and a changed one is refused.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from faceledger.imaging import decode_image
from faceledger.vision import weights
from faceledger.vision.onnx_models import ort_session
from faceledger.vision.openvino_ir import IrFormatError, build_onnx, read_ir
from faceledger.vision.openvino_models import ReidEmbedder
from faceledger.vision.yunet import YunetDetector, yunet_confidence

from conftest import REPO

SHARED_MODELS = REPO.parent / "shared" / "models"


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="module")
def reid() -> ReidEmbedder:
    return ReidEmbedder()


@pytest.fixture(scope="module")
def reference_session(reid: ReidEmbedder, tmp_path_factory: pytest.TempPathFactory) -> ort.InferenceSession:
    model = build_onnx(read_ir(reid.path))
    path = tmp_path_factory.mktemp("reid-onnx") / "reid.onnx"
    path.write_bytes(model.SerializeToString())
    return ort_session(path, 1)


def test_reid_on_openvino_equals_the_onnx_translation(
    reid: ReidEmbedder, reference_session: ort.InferenceSession, astronaut: np.ndarray
) -> None:
    (face,) = YunetDetector().detect(astronaut)
    assert face.landmarks is not None
    aligned = reid.aligned(astronaut, [face.landmarks])
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, size=(3, 128, 128, 3), dtype=np.uint8)
    faces = np.concatenate([aligned, noise])
    ours = reid.embed_aligned(faces)
    x = np.ascontiguousarray(faces[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)
    raw = np.asarray(reference_session.run(None, {"input": x})[0], dtype=np.float32).reshape(len(faces), -1)
    ref = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    assert ours.shape == (4, 256)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    assert float(np.abs(ours - ref).max()) < 1e-5


def test_reid_embeds_a_face_in_any_batch(reid: ReidEmbedder, astronaut: np.ndarray) -> None:
    (face,) = YunetDetector().detect(astronaut)
    assert face.landmarks is not None
    one = reid.embed(astronaut, [face.box], [face.landmarks])
    three = reid.embed(astronaut, [face.box] * 3, [face.landmarks] * 3)
    assert float(np.abs(three - one).max()) < 1e-5
    assert reid.embed(astronaut, [], []).shape == (0, 256)
    with pytest.raises(ValueError, match="landmarks"):
        reid.embed(astronaut, [face.box], None)


def _opencv_reference(variant: str, pixels: np.ndarray, threshold: float) -> np.ndarray:
    fixed = SHARED_MODELS / "yunet" / f"yunet_{variant}_640_640.onnx"
    if not fixed.is_file():
        pytest.skip(f"needs the upstream fixed-size YuNet export at {fixed} (CI has ../shared)")
    h, w = pixels.shape[:2]
    fd = cv2.FaceDetectorYN.create(str(fixed), "", (w, h), threshold, 0.3, 5000)
    _, faces = fd.detect(np.ascontiguousarray(pixels[..., ::-1]))
    return np.zeros((0, 15), np.float32) if faces is None else np.asarray(faces, np.float32)


@pytest.mark.parametrize("variant", ["n", "s"])
def test_yunet_decoding_equals_opencv(variant: str, astronaut: np.ndarray, faces_dir: Path) -> None:
    scenes = [astronaut] + [
        decode_image(p.read_bytes()).pixels for p in sorted((faces_dir / "detection").glob("200*.jpg"))[:4]
    ]
    detector = YunetDetector(variant, score_threshold=0.6)  # type: ignore[arg-type]
    compared = 0
    for pixels in scenes:
        ours = sorted(detector.detect(pixels), key=lambda d: -d.confidence)
        ref = _opencv_reference(variant, pixels, 0.6)
        ref = ref[np.argsort(-ref[:, 14])]
        assert len(ours) == len(ref)
        for d, r in zip(ours, ref):
            assert d.landmarks is not None
            got = [d.box.left, d.box.top, d.box.width, d.box.height, *d.landmarks.ravel()]
            assert np.allclose(got, r[:14], atol=0.05)
            assert abs(d.confidence - yunet_confidence(float(r[14]))) < 1e-3
            compared += 1
    assert compared >= 5


def test_yunet_landmarks_run_image_left_first(astronaut: np.ndarray) -> None:
    (face,) = YunetDetector().detect(astronaut)
    lm = face.landmarks
    assert lm is not None
    eye_l, eye_r, nose, mouth_l, mouth_r = lm
    assert eye_l[0] < nose[0] < eye_r[0] and mouth_l[0] < mouth_r[0]
    assert max(eye_l[1], eye_r[1]) < nose[1] < min(mouth_l[1], mouth_r[1])


def test_vendored_files_are_the_published_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for relative in weights.CHECKSUMS:
        assert weights.weight_file(relative).is_file()
    with pytest.raises(FileNotFoundError):
        weights.weight_file("yunet/other.onnx")
    # a changed file is refused, not loaded
    fake = tmp_path / "yunet"
    fake.mkdir()
    original = weights.weight_file("yunet/yunet_n_dynamic.onnx")
    data = bytearray(original.read_bytes())
    data[-1] ^= 1
    (fake / "yunet_n_dynamic.onnx").write_bytes(bytes(data))
    monkeypatch.setattr(weights.resources, "files", lambda _: tmp_path)
    with pytest.raises(ValueError, match="SHA-256"):
        weights.weight_file("yunet/yunet_n_dynamic.onnx")


def test_ir_reader_refuses_what_it_cannot_translate(tmp_path: Path, reid: ReidEmbedder) -> None:
    (tmp_path / "bad.xml").write_text("<net version='7'/>")
    (tmp_path / "bad.bin").write_bytes(b"")
    with pytest.raises(IrFormatError, match="v10/v11"):
        read_ir(tmp_path / "bad.xml")
    # a layer type the builder does not know is named, not silently skipped
    tree = ET.parse(reid.path)
    layer = next(el for el in tree.getroot().iter("layer") if el.get("type") == "Sigmoid")
    layer.set("type", "HSwish")
    tree.write(tmp_path / "odd.xml")
    shutil.copy(reid.path.with_suffix(".bin"), tmp_path / "odd.bin")
    with pytest.raises(IrFormatError, match="HSwish"):
        build_onnx(read_ir(tmp_path / "odd.xml"))
