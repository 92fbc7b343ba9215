"""The embedder slot `FACELEDGER_EMBEDDER=onnx:PATH`: a model card beside the weights, a model
version from their SHA-256, collections bound to it, and no comparisons without a calibration
table for it (ResourceNotReadyException) until `faceledger calibration build` has made one.

The operator model here is a small network generated in the test (random weights, 112x112,
ArcFace alignment): it recognises nobody, but exercises every step an ArcFace-class model takes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from faceledger.cli import main
from faceledger.errors import InvalidParameterException, ResourceNotReadyException
from faceledger.imaging import decode_image
from faceledger.service import FaceService
from faceledger.service.core import calibration_path
from faceledger.settings import Settings
from faceledger.vision import FacePipeline
from faceledger.vision.dlibnet import resnet_face_recognition
from faceledger.vision.models import _dlib_model_path
from faceledger.vision.onnx_graphs import cached_graph
from faceledger.vision.operator_model import ModelCardError, arcface_align

CARD = {
    "input_size": [112, 112], "alignment": "arcface-112", "color_order": "RGB",
    "mean": [127.5, 127.5, 127.5], "std": [128.0, 128.0, 128.0], "output_dim": 32,
    "l2_normalize": True, "licence": "test fixture, random weights", "source": "generated in the test",
}  # fmt: skip


def tiny_model(path: Path, seed: int = 0) -> Path:
    """Conv 8x8/8 -> ReLU -> global average -> linear 8 -> 32, random weights."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.1, (8, 3, 8, 8)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 1.0, (8, 32)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["face", "w"], ["c"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("face", TensorProto.FLOAT, ["n", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", 32])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    path.with_name(path.name + ".json").write_text(json.dumps(CARD))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("operator-model") / "tiny.onnx")


@pytest.fixture(scope="module")
def astronaut_pixels(astronaut_jpeg: bytes) -> np.ndarray:
    return decode_image(astronaut_jpeg).pixels


def test_operator_model_embeds_through_the_pipeline(
    tiny: Path, astronaut_pixels: np.ndarray, tmp_path: Path
) -> None:
    pipeline = FacePipeline(Settings(embedder=f"onnx:{tiny}", data_dir=tmp_path))
    sha = hashlib.sha256(tiny.read_bytes()).hexdigest()
    assert pipeline.model_version == f"100.{int(sha[:12], 16)}"
    faces = pipeline.analyze(astronaut_pixels)
    assert len(faces) >= 1
    emb = faces[0].embedding
    assert emb is not None and emb.shape == (32,)
    assert np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)  # the card asks for L2
    # the same face embedded again from its box and landmarks is the same
    again = pipeline.embed_boxes(astronaut_pixels, [faces[0].box], [faces[0].landmarks])[0]
    np.testing.assert_allclose(again, emb, atol=1e-5)


def test_arcface_alignment_puts_the_landmarks_on_the_template(astronaut_pixels: np.ndarray) -> None:
    pipeline = FacePipeline(Settings())
    face = pipeline.analyze(astronaut_pixels, embed=False)[0]
    aligned = arcface_align(astronaut_pixels, face.landmarks, (112, 112))
    assert aligned.shape == (112, 112, 3)
    again = pipeline.landmarker.landmarks(aligned, [pipeline.detect(aligned)[0].box]) \
        if pipeline.detect(aligned) else []
    if again:  # when HOG finds the aligned face, its eyes sit near ArcFace's template eyes
        assert abs(float(again[0][0][1]) - 51.7) < 8 and abs(float(again[0][1][1]) - 51.5) < 8
    # the face fills the chip: its centre is not the constant border
    assert aligned[40:80, 40:80].std() > 10


def test_model_card_is_required_and_checked(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "m.onnx")
    model.with_name("m.onnx.json").unlink()
    with pytest.raises(ModelCardError, match="no model card"):
        FacePipeline(Settings(embedder=f"onnx:{model}", data_dir=tmp_path)).embedder
    model.with_name("m.onnx.json").write_text(json.dumps(CARD | {"alignment": "eyes-only"}))
    with pytest.raises(ModelCardError, match="alignment must be one of"):
        FacePipeline(Settings(embedder=f"onnx:{model}", data_dir=tmp_path)).embedder
    model.with_name("m.onnx.json").write_text(json.dumps({"input_size": [112, 112]}))
    with pytest.raises(ModelCardError, match="lacks alignment"):
        FacePipeline(Settings(embedder=f"onnx:{model}", data_dir=tmp_path)).embedder


def test_cli_refuses_to_compare_with_an_uncalibrated_model(
    tiny: Path, astronaut_jpeg: bytes, tmp_path: Path
) -> None:
    img = tmp_path / "face.jpg"
    img.write_bytes(astronaut_jpeg)
    result = CliRunner().invoke(main, ["compare", str(img), str(img)], env={
        "FACELEDGER_EMBEDDER": f"onnx:{tiny}", "FACELEDGER_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 2, result.output
    assert "ResourceNotReadyException" in result.output and "Traceback" not in result.output


def test_dlib_resnet_graph_through_the_slot_gives_the_default_templates(
    tmp_path: Path, astronaut_pixels: np.ndarray
) -> None:
    graph, _ = cached_graph(Path(_dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")),
                            resnet_face_recognition(), tmp_path / "models")  # fmt: skip
    model = tmp_path / "operator" / "dlib-resnet.onnx"
    model.parent.mkdir()
    shutil.copy(graph, model)
    # the graph normalises its input itself: the card passes pixels through unchanged
    (model.parent / "model-card.json").write_text(json.dumps({
        "input_size": [150, 150], "alignment": "dlib-5point-chip", "color_order": "RGB",
        "mean": [0, 0, 0], "std": [1, 1, 1], "output_dim": 128,
        "licence": "public domain (dlib)", "source": "dlib_face_recognition_resnet_model_v1.dat",
    }))  # fmt: skip
    slot = FacePipeline(Settings(embedder=f"onnx:{model}", data_dir=tmp_path))
    default = FacePipeline(Settings(embedder="dlib", dlib_detector=None, data_dir=tmp_path))
    assert slot.model_version.startswith("100.") and default.model_version == "1.0"
    a = slot.analyze(astronaut_pixels)[0].embedding
    b = default.analyze(astronaut_pixels)[0].embedding
    assert a is not None and b is not None
    assert float(np.linalg.norm(a - b)) <= 1e-5


def test_no_comparison_without_a_calibration_table_then_build_one(
    tiny: Path, astronaut_jpeg: bytes, faces_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(embedder=f"onnx:{tiny}", data_dir=tmp_path / "data")
    service = FaceService(settings)
    with pytest.raises(ResourceNotReadyException, match="no calibration table"):
        service.compare_faces({"Bytes": astronaut_jpeg}, {"Bytes": astronaut_jpeg})

    # `faceledger calibration build` on an LFW-format folder writes the operator's table into
    # the data directory (a small subset here: the command is what is tested, not the model)
    from test_onnx_equivalence import lfw_subset

    lfw = lfw_subset(faces_dir / "lfw", 40, tmp_path)
    monkeypatch.setenv("FACELEDGER_EMBEDDER", f"onnx:{tiny}")
    monkeypatch.setenv("FACELEDGER_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(main, [
        "calibration", "build", "--lfw", str(lfw), "--cache", str(tmp_path / "cache"),
        "--workers", "1", "--replicates", "10",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    table = calibration_path(settings, service.pipeline.model_version)
    assert table.is_file() and str(table) in result.output
    assert json.loads(table.read_text())["model_version"] == service.pipeline.model_version

    # 40 images cannot demonstrate FMR 1e-4 (the default): ask at what they can show
    answer = FaceService(settings).compare_faces(
        {"Bytes": astronaut_jpeg}, {"Bytes": astronaut_jpeg}, similarity_threshold=90.0)
    assert answer["FaceMatches"] and answer["FaceMatches"][0]["Similarity"] > 90


def test_collections_stay_bound_to_their_model(tiny: Path, astronaut_jpeg: bytes, tmp_path: Path) -> None:
    data = tmp_path / "data"
    dlib_service = FaceService(Settings(embedder="dlib", data_dir=data))
    dlib_service.create_collection("staff")
    dlib_service.index_faces("staff", {"Bytes": astronaut_jpeg})
    # a server configured with the operator model still embeds into "staff" with 1.0 ...
    operator = FaceService(Settings(embedder=f"onnx:{tiny}", data_dir=data))
    r = operator.index_faces("staff", {"Bytes": astronaut_jpeg})
    assert r["FaceModelVersion"] == "1.0"
    assert r["FaceRecords"][0]["Face"]["IndexFacesModelVersion"] == "1.0"
    # ... but redaction (and video) run the configured model only: refused, with the way out
    photo = tmp_path / "a.jpg"
    photo.write_bytes(astronaut_jpeg)
    with pytest.raises(InvalidParameterException, match="different models cannot be compared"):
        operator.redact(photo, tmp_path / "out.jpg", ["someone"], "staff")


def test_boto3_gets_resource_not_ready_from_an_uncalibrated_model(
    tiny: Path, astronaut_jpeg: bytes, tmp_path: Path
) -> None:
    """Through the HTTP server, as a boto3 user sees it: Rekognition's own code for a model
    version that is not ready to serve, HTTP 400, no traceback."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    from faceledger.server import RekognitionApp, running

    settings = Settings(embedder=f"onnx:{tiny}", data_dir=tmp_path)
    app = RekognitionApp(FaceService(settings), None, settings, dev_mode=True, warm_up=False)
    with running(app) as url:
        client = boto3.session.Session().client(
            "rekognition", endpoint_url=url, region_name="eu-west-1",
            aws_access_key_id="anything", aws_secret_access_key="anything",
            config=Config(retries={"max_attempts": 1}))  # fmt: skip
        with pytest.raises(ClientError) as exc:
            client.compare_faces(SourceImage={"Bytes": astronaut_jpeg},
                                 TargetImage={"Bytes": astronaut_jpeg})  # fmt: skip
    app.close()
    err = exc.value.response
    assert err["Error"]["Code"] == "ResourceNotReadyException"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "calibration build" in err["Error"]["Message"]
