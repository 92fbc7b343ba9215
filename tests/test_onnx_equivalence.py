"""dlib's networks on ONNX Runtime give dlib's answers: the file reader, the ResNet descriptors
(within 1e-5), the MMOD boxes (IoU >= 0.95, same counts) and a calibration built both ways.

The reference is dlib itself (`dlib-bin`): DlibResnetEmbedder (`embedder=dlib-native`) and
dlib.cnn_face_detection_model_v1 (vision.models.MmodDetector).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceledger.imaging import decode_image
from faceledger.settings import Settings
from faceledger.vision import FacePipeline
from faceledger.vision.dlibnet import (
    DlibFormatError,
    FullyConnected,
    MetricLoss,
    MmodOptions,
    mmod_face_detector,
    read_network,
    resnet_face_recognition,
)
from faceledger.vision.models import MmodDetector, _dlib_model_path
from faceledger.vision.onnx_models import OnnxMmodDetector

from test_detection import labelled_faces

Both = dict[str, tuple[Path, list[object]]]  # embedder -> (cache dir, enrolments)
Sample = tuple[Path, Both]  # LFW-format folder, and its images enrolled both ways

RESNET_DAT = Path(_dlib_model_path("dlib_face_recognition_resnet_model_v1.dat"))
MMOD_DAT = Path(_dlib_model_path("mmod_human_face_detector.dat"))


# --- the reader ----------------------------------------------------------------------------


def test_reader_parses_both_dlib_files_to_the_last_byte() -> None:
    resnet = read_network(RESNET_DAT, resnet_face_recognition())
    assert isinstance(resnet.loss, MetricLoss) and resnet.loss.distance_threshold == pytest.approx(0.6)
    assert resnet.input.size == (150, 150) and not resnet.input.pyramid
    fc = resnet.nodes[-1].layer
    assert isinstance(fc, FullyConnected) and fc.weights.shape == (256, 128) and fc.bias is None
    mmod = read_network(MMOD_DAT, mmod_face_detector())
    assert isinstance(mmod.loss, MmodOptions)
    assert (mmod.loss.detector_width, mmod.loss.detector_height) == (80, 80)
    assert mmod.input.pyramid and (mmod.input.pyramid_padding, mmod.input.pyramid_outer_padding) == (10, 11)


def test_unknown_layer_version_fails_clearly(tmp_path: Path) -> None:
    data = RESNET_DAT.read_bytes()
    # the same length, so only the version check can notice
    bad = tmp_path / "bad.dat"
    bad.write_bytes(data.replace(b"\x05con_4", b"\x05con_9", 1))
    with pytest.raises(DlibFormatError, match="layer version 'con_9' is not supported"):
        read_network(bad, resnet_face_recognition())


def test_truncated_or_mismatched_files_fail_clearly(tmp_path: Path) -> None:
    short = tmp_path / "short.dat"
    short.write_bytes(RESNET_DAT.read_bytes()[:100_000])
    with pytest.raises(DlibFormatError, match="unexpected end of file"):
        read_network(short, resnet_face_recognition())
    with pytest.raises(DlibFormatError):
        read_network(MMOD_DAT, resnet_face_recognition())  # wrong network definition


# --- the embedder ----------------------------------------------------------------------------


def lfw_subset(lfw: Path, images: int, tmp: Path) -> Path:
    """An LFW-format folder of `images` images (symlinks): every 7th identity, at most 6
    images each, so that there are genuine pairs and many identities."""
    out = tmp / f"lfw-{images}"
    out.mkdir()
    names = sorted(p.name for p in lfw.iterdir() if p.is_dir())
    n = 0
    for name in names[::7]:
        files = sorted((lfw / name).glob("*.jpg"))[:6]
        (out / name).mkdir()
        for f in files:
            (out / name / f.name).symlink_to(f)
        n += len(files)
        if n >= images:
            break
    return out


def enrol_both_ways(root: Path, tmp: Path) -> Both:
    """Enrol every image of `root` with the ONNX embedder and with dlib's own runtime, each
    into its own cache directory (both carry model version 1.0)."""
    from faceledger.evaluation.datasets import load_folders
    from faceledger.evaluation.enrolment import enrol_files

    paths = load_folders(root).paths
    out: Both = {}
    for name in ("dlib", "dlib-native"):
        cache = tmp / f"cache-{name}"
        settings = Settings(embedder=name, data_dir=tmp / "data")
        enrolments = enrol_files(paths, settings=settings, cache_dir=cache, workers=os.cpu_count(),
                                 progress=False)  # fmt: skip
        out[name] = (cache, list(enrolments))
    return out


@pytest.fixture(scope="session")
def small_sample(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sample]:
    tmp = tmp_path_factory.mktemp("onnx-small")
    root = lfw_subset(faces_dir / "lfw", 24, tmp)
    yield root, enrol_both_ways(root, tmp)


@pytest.fixture(scope="session")
def large_sample(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sample]:
    tmp = tmp_path_factory.mktemp("onnx-large")
    root = lfw_subset(faces_dir / "lfw", 400, tmp)
    yield root, enrol_both_ways(root, tmp)


def _max_distance(both: Both) -> tuple[float, int]:
    onnx_e, dlib_e = both["dlib"][1], both["dlib-native"][1]
    worst, compared = 0.0, 0
    for a, b in zip(onnx_e, dlib_e):
        ea, eb = getattr(a, "embedding"), getattr(b, "embedding")
        assert (ea is None) == (eb is None)  # detection is the same detector both ways
        if ea is not None:
            worst = max(worst, float(np.linalg.norm(ea.astype(np.float64) - eb)))
            compared += 1
    return worst, compared


def test_onnx_descriptors_equal_dlibs_on_lfw_chips(small_sample: Sample) -> None:
    worst, compared = _max_distance(small_sample[1])
    assert compared >= 20
    assert worst <= 1e-5, f"largest distance between the two runtimes' descriptors: {worst:.2e}"


@pytest.mark.slow
def test_onnx_descriptors_equal_dlibs_on_400_lfw_images(large_sample: Sample) -> None:
    worst, compared = _max_distance(large_sample[1])
    assert compared >= 380
    assert worst <= 1e-5, f"largest distance between the two runtimes' descriptors: {worst:.2e}"


@pytest.mark.slow
def test_calibration_built_with_onnx_equals_dlibs(
    large_sample: Sample, tmp_path: Path
) -> None:
    """The same table from both runtimes' templates (400 LFW images, ~80k impostor pairs):
    every summary threshold and the whole FMR curve to 4 decimals."""
    from faceledger.evaluation.calibrate import build_calibration

    root, both = large_sample
    tables = {}
    for name, (cache, _) in both.items():
        tables[name] = build_calibration(
            root, settings=Settings(embedder=name, data_dir=tmp_path), cache_dir=cache,
            workers=1, replicates=20, validation_splits=0, progress=False,
        )  # fmt: skip
    a, b = tables["dlib"], tables["dlib-native"]
    assert a["model_version"] == b["model_version"] == "1.0"
    assert a["pairs"]["impostor"] == b["pairs"]["impostor"] > 50_000
    assert len(a["summary"]) == len(b["summary"]) >= 3
    for ra, rb in zip(a["summary"], b["summary"]):
        assert abs(ra["distance"] - rb["distance"]) <= 5e-5, (ra, rb)
        _assert_close(ra, rb, f"summary at FMR {ra['fmr']}")
    np.testing.assert_allclose(a["log10_fmr"], b["log10_fmr"], atol=1e-4)
    np.testing.assert_allclose(a["fnmr"], b["fnmr"], atol=1e-4)


def _assert_close(a: object, b: object, where: str) -> None:
    """Equal structure; numbers within 5e-5, i.e. equal to 4 decimals (intervals and counts
    included)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_close(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert abs(float(a) - float(b)) <= 5e-5, f"{where}: {a} != {b}"  # type: ignore[arg-type]
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# --- the MMOD detector -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mmod_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[OnnxMmodDetector, MmodDetector]:
    return OnnxMmodDetector(tmp_path_factory.mktemp("models")), MmodDetector()


def _compare_mmod(pair: tuple[OnnxMmodDetector, MmodDetector], path: Path, scale: float = 1.0) -> int:
    """Both detectors on the image resized by `scale`: the same number of boxes, each pair
    (strongest first) with IoU >= 0.95 and the same confidence."""
    ours, ref = pair
    pixels = decode_image(path.read_bytes()).pixels
    if scale != 1.0:
        h, w = pixels.shape[:2]
        pixels = np.ascontiguousarray(
            cv2.resize(pixels, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
        )
    a = sorted(ours.detect(pixels), key=lambda d: -d.confidence)
    b = sorted(ref.detect(pixels), key=lambda d: -d.confidence)
    assert len(a) == len(b), (path.name, a, b)
    for da, db in zip(a, b):
        assert da.box.iou(db.box) >= 0.95, (path.name, da, db)
        assert da.confidence == pytest.approx(db.confidence, abs=0.1)
    return len(a)


def test_onnx_mmod_boxes_equal_dlibs_on_one_photo(
    faces_dir: Path, mmod_pair: tuple[OnnxMmodDetector, MmodDetector]
) -> None:
    assert _compare_mmod(mmod_pair, faces_dir / "detection" / "2008_001322.jpg") == 3


@pytest.mark.slow
def test_onnx_mmod_boxes_equal_dlibs_on_every_labelled_photo(
    faces_dir: Path, mmod_pair: tuple[OnnxMmodDetector, MmodDetector]
) -> None:
    """At the scale the pipeline detects at (small photos upsampled so 40 px faces reach the
    80 px window), on every labelled photo and on dogs.jpg."""
    folder = faces_dir / "detection"
    pipeline = FacePipeline(Settings(detector="cnn"))
    total = 0
    for f in [*labelled_faces(folder), "dogs.jpg"]:
        h, w = decode_image((folder / f).read_bytes()).pixels.shape[:2]
        total += _compare_mmod(mmod_pair, folder / f, pipeline.detection_scale(w, h))
    assert total >= 35  # 43 faces are labelled: most must be found for the check to mean much
