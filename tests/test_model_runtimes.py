"""Model 2.0's and 3.0's networks computed as their publishers' files define them.

- Intel's face-reidentification-retail-0095 runs on OpenVINO from Intel's IR files; our own IR
  reader (vision/openvino_ir/) translates the same files to an ONNX graph run on ONNX Runtime:
  two independent implementations, equal to 1e-5.
- YuNet's decoding (vision/yunet.py) gives the boxes, landmarks and scores of OpenCV's
  `cv2.FaceDetectorYN`, run on the upstream fixed-size export of the same network.
- OpenCV Zoo's SFace (model 3.0's second network): its block-quantised weights folded into
  float32 (vision/onnx_fold.py) give `cv2.FaceRecognizerSF.feature` on the published file, and
  its faces are aligned as `cv2.FaceRecognizerSF.alignCrop` aligns them.
- The vendored files are the published artifacts (SHA-256), and a changed one is refused.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from faceledger.imaging import decode_image
from faceledger.vision import weights
from faceledger.vision.fused import FusedEmbedder
from faceledger.vision.onnx_fold import cached_folded, dequantize, fold_dequantized_weights
from faceledger.vision.onnx_models import ort_session
from faceledger.vision.openvino_ir import IrFormatError, build_onnx, read_ir
from faceledger.vision.openvino_models import ReidEmbedder
from faceledger.vision.sface import SFACE_FILE, SfaceEmbedder
from faceledger.vision.types import Box
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


@pytest.fixture(scope="module")
def sface(tmp_path_factory: pytest.TempPathFactory) -> SfaceEmbedder:
    return SfaceEmbedder(tmp_path_factory.mktemp("model-cache"))


@pytest.fixture(scope="module")
def opencv_sface() -> cv2.FaceRecognizerSF:
    return cv2.FaceRecognizerSF.create(str(weights.weight_file(SFACE_FILE)), "")


def _detected(astronaut: np.ndarray, faces_dir: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image, YuNet's row as cv2.FaceDetectorYN gives it, landmarks) for every face YuNet
    finds in the astronaut and 20 LFW photos."""
    images = [astronaut] + [decode_image(p.read_bytes()).pixels
                            for p in sorted((faces_dir / "lfw").glob("*/*.jpg"))[:60:3]]  # fmt: skip
    out = []
    for pixels in images:
        for d in YunetDetector().detect(pixels):
            assert d.landmarks is not None
            row = np.array([[d.box.left, d.box.top, d.box.width, d.box.height,
                             *d.landmarks.ravel(), 0.9]], np.float32)  # fmt: skip
            out.append((pixels, row, d.landmarks))
    return out


def test_sface_alignment_equals_opencv_align_crop(
    sface: SfaceEmbedder, opencv_sface: cv2.FaceRecognizerSF, astronaut: np.ndarray, faces_dir: Path
) -> None:
    # OpenCV fits the transform in float32, we in float64: at most 0.5% of the values of a crop
    # may round the other way (measured: 0.2%, by at most 2-4 grey levels), the rest are equal
    faces = _detected(astronaut, faces_dir)
    assert len(faces) >= 20
    for pixels, row, landmarks in faces:
        ref = opencv_sface.alignCrop(np.ascontiguousarray(pixels[..., ::-1]), row)
        ours = sface.aligned(pixels, [landmarks])[0][..., ::-1]
        diff = np.abs(ref.astype(np.int16) - ours.astype(np.int16))
        assert ref.shape == ours.shape == (112, 112, 3)
        assert float((diff > 0).mean()) <= 5e-3 and int(diff.max()) <= 8


def test_sface_folded_equals_opencv_feature_on_the_published_file(
    sface: SfaceEmbedder, opencv_sface: cv2.FaceRecognizerSF, astronaut: np.ndarray, faces_dir: Path
) -> None:
    # the folded graph on OpenVINO against OpenCV's DNN running the block-quantised file as
    # published, on the same crops (aligned faces and noise): equal to 1e-5 (measured 4e-7)
    crops = [sface.aligned(p, [lm])[0] for p, _, lm in _detected(astronaut, faces_dir)[:12]]
    crops += list(np.random.default_rng(3).integers(0, 256, size=(3, 112, 112, 3), dtype=np.uint8))
    ours = sface.embed_aligned(np.stack(crops))
    ref = np.vstack([opencv_sface.feature(np.ascontiguousarray(c[..., ::-1])) for c in crops])
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    assert ours.shape == (len(crops), 128)
    assert float(np.abs(ours - ref).max()) < 1e-5


def test_dequantize_is_onnx_dequantize_linear() -> None:
    # per block (with a short last block), per axis and per tensor, against ONNX Runtime's own
    # DequantizeLinear on the same constants
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    cases = [
        (rng.integers(-128, 128, (6, 70), dtype=np.int8), rng.uniform(1e-3, 1e-1, (6, 2)).astype(np.float32),
         rng.integers(-5, 5, (6, 2), dtype=np.int8), 1, 64),
        (rng.integers(-128, 128, (130,), dtype=np.int8), rng.uniform(1e-3, 1e-1, (3,)).astype(np.float32),
         rng.integers(-5, 5, (3,), dtype=np.int8), 0, 64),
        (rng.integers(-128, 128, (4, 3, 3, 3), dtype=np.int8), rng.uniform(1e-3, 1e-1, (4,)).astype(np.float32),
         np.zeros(4, np.int8), 0, 0),
        (rng.integers(-128, 128, (5, 7), dtype=np.int8), np.array(0.02, np.float32), np.array(3, np.int8), 1, 0),
    ]  # fmt: skip
    for q, scale, zp, axis, block in cases:
        attrs = {"axis": axis} | ({"block_size": block} if block else {})
        node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs)
        graph = helper.make_graph(
            [node], "dq", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, q.shape)],
            [numpy_helper.from_array(q, "q"), numpy_helper.from_array(scale, "s"),
             numpy_helper.from_array(zp, "z")])  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
        model.ir_version = 10
        ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})[0]
        assert np.array_equal(dequantize(q, scale, zp, axis, block), ref)
        folded, n = fold_dequantized_weights(model)
        (y,) = folded.graph.initializer
        assert n == 1 and not folded.graph.node and np.array_equal(numpy_helper.to_array(y), ref)


def test_sface_graph_is_folded_once_per_file(tmp_path: Path) -> None:
    source = weights.weight_file(SFACE_FILE)
    first = cached_folded(source, tmp_path / "models")
    stamp = first.stat().st_mtime_ns
    assert cached_folded(source, tmp_path / "models") == first and first.stat().st_mtime_ns == stamp
    assert first.name.startswith("face_recognition_sface_2021dec_int8bq-fb143eea07838aa5-")
    assert (tmp_path / "models").stat().st_mode & 0o077 == 0  # owner-only, as the dlib graphs
    session = ort_session(first, 1)
    (inp,) = session.get_inputs()
    assert inp.name == "data" and inp.shape[0] == "batch"  # faces of many images in one run
    graph = onnx.load(str(first)).graph
    assert not any(n.op_type == "DequantizeLinear" for n in graph.node)
    assert [i.name for i in graph.input] == ["data"]  # the exporter's unused inputs are gone


def test_fused_template_is_unit_length_and_its_cosine_is_the_mean(
    reid: ReidEmbedder, sface: SfaceEmbedder, astronaut: np.ndarray, faces_dir: Path
) -> None:
    fused = FusedEmbedder([reid, sface])
    assert fused.dim == 384 and fused.model_version == "3.0" and fused.needs_landmarks
    faces = _detected(astronaut, faces_dir)[:6]
    t = np.vstack([fused.embed(p, [Box(0, 0, 1, 1)], [lm]) for p, _, lm in faces])
    r = np.vstack([reid.embed_aligned(reid.aligned(p, [lm])) for p, _, lm in faces])
    s = np.vstack([sface.embed_aligned(sface.aligned(p, [lm])) for p, _, lm in faces])
    assert np.allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-6)
    assert np.allclose(t @ t.T, (r @ r.T + s @ s.T) / 2, atol=1e-6)
    # the same face three times in one run: three equal templates
    pixels, _, lm = faces[0]
    three = fused.embed(pixels, [Box(0, 0, 1, 1)] * 3, [lm] * 3)
    assert float(np.abs(three - t[0]).max()) < 1e-5
    assert fused.embed(pixels, [], []).shape == (0, 384)
    with pytest.raises(ValueError, match="landmarks"):
        fused.embed(pixels, [Box(0, 0, 1, 1)], None)
