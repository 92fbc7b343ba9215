"""Model versions side by side (issue 17, item 4): versions follow botocore's `[0-9.]+`, old
databases are renumbered on open, one server answers for collections of model 1.0 (dlib) and
2.0 (reid-0095) at once, each with its own model and table, an operator-built table serves
`faceledger calibration` and `faceledger evaluate`, and a collection is re-enrolled into 2.0
from its photos with the ledger linking the two.

Until the shipped 2.0 table lands, the searches of model 2.0 here use a throwaway table that
`faceledger calibration build` makes from 120 LFW images in a temporary data directory (once
shipped, the package's table is used instead; the assertions hold for either: they ask for
matches at Similarity 90, far from either table's measured range).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from faceledger.api import FaceLedger
from faceledger.calibration import find_calibration
from faceledger.cli import main
from faceledger.context import LOCAL
from faceledger.db import make_engine
from faceledger.errors import ResourceNotReadyException
from faceledger.imaging import decode_image, file_sha256
from faceledger.ledger import schema
from faceledger.model_versions import (
    BUILT_IN,
    canonical,
    describe,
    is_valid,
    legacy_names,
    operator_version,
)
from faceledger.server.protocol import service_model
from faceledger.service import FaceService
from faceledger.settings import Settings
from faceledger.store.catalog import Catalog
from faceledger.vision import FacePipeline
from faceledger.vision.embedders import embedder_version, settings_for_version
from faceledger.vision.pool import PipelinePool

# people with enough LFW photos for enrolment, probes and re-enrolment
PEOPLE = ("Ricardo_Lagos", "Jennifer_Lopez", "Paul_Wolfowitz")


def botocore_pattern() -> re.Pattern[str]:
    shape = service_model().shape_for("IndexFacesModelVersion")
    return re.compile(str(shape.metadata["pattern"]))


def test_every_version_follows_botocores_pattern() -> None:
    pattern = botocore_pattern()
    versions = [*BUILT_IN, operator_version("0" * 64), operator_version("f" * 64),
                operator_version("0123456789ab" + "0" * 52)]
    assert {"1.0", "1.1", "1.2", "2.0", "3.0"} <= set(BUILT_IN)
    for v in versions:
        assert pattern.fullmatch(v) and is_valid(v), v
    assert len(set(versions)) == len(versions)  # unique
    assert operator_version("f" * 64) == f"100.{0xFFFFFFFFFFFF}"  # stable: from the weights
    # every name stored before the numbering maps to its number, and back
    assert canonical("dlib-resnet-v1") == "1.0" and canonical("dlib-resnet-v1-flip") == "1.1"
    assert canonical("dlib-resnet-v1-jitter") == "1.2" and canonical("2.0") == "2.0"
    assert canonical("onnx-0123456789ab") == f"100.{0x0123456789AB}"
    assert legacy_names(f"100.{0x0123456789AB}") == ("onnx-0123456789ab",)
    assert legacy_names("1.0") == ("dlib-resnet-v1",) and legacy_names("2.0") == ()


def test_model_3_is_two_networks_fused_and_its_card_says_what_is_not_known(tmp_path: Path) -> None:
    card = BUILT_IN["3.0"]
    assert card.embedder == "reid-0095+sface" and card.dim == 256 + 128
    assert embedder_version(Settings(embedder="reid-0095+sface")) == "3.0"
    assert settings_for_version(Settings(embedder="reid-0095"), "3.0").embedder == "reid-0095+sface"
    # the Zoo does not name SFace's training data, as Intel does not name reid-0095's: say so
    assert "not named by the OpenCV Zoo" in card.training_data
    assert "#124" in card.training_data and "#313" in card.training_data
    assert "not named by Intel" in card.training_data
    assert dict(card.checksums)["face_recognition_sface_2021dec_int8bq.onnx"] == (
        "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee")
    assert describe("3.0") == "3.0 (reid-0095 + SFace, fused)"


def test_an_old_database_is_renumbered_on_open(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    catalog = Catalog(engine)
    with catalog.begin() as conn:  # rows as an older faceledger wrote them
        for cid, model, dim in (("old", "dlib-resnet-v1", 128),
                                ("flip", "dlib-resnet-v1-flip", 128),
                                ("slot", "onnx-0123456789ab", 32), ("new", "2.0", 256)):
            catalog.create_collection(conn, cid, model, dim)
    reopened = Catalog(engine)
    with reopened.read() as conn:
        got = {c.collection_id: c.face_model_version
               for c in reopened.list_collections(conn, None, 10)}
    assert got == {"old": "1.0", "flip": "1.1", "slot": f"100.{0x0123456789AB}", "new": "2.0"}
    Catalog(engine)  # idempotent
    # an operator table built under the old name is still found, under the new one
    shipped = json.loads((Path(__file__).parents[1] / "src/faceledger/calibration/tables/1.0.json")
                         .read_text())
    (tmp_path / "calibration").mkdir()
    (tmp_path / "calibration" / "onnx-0123456789ab.json").write_text(
        json.dumps(shipped | {"model_version": "onnx-0123456789ab"}))
    table = find_calibration(f"100.{0x0123456789AB}", tmp_path)
    assert table.model_version == f"100.{0x0123456789AB}"
    assert find_calibration("dlib-resnet-v1").model_version == "1.0"


def _bodies(service: FaceService) -> list[dict[str, Any]]:
    with service.ledger.engine.connect() as conn:
        rows = conn.execute(sa.select(schema.events.c.body).order_by(schema.events.c.seq)).all()
    return [json.loads(r[0]) for r in rows]


def test_reports_count_old_event_names_as_the_same_model(tmp_path: Path) -> None:
    service = FaceService(Settings(data_dir=tmp_path, embedder="dlib"))
    with service.audit("DetectFaces", LOCAL) as op:
        op.model_version = "dlib-resnet-v1"  # an event written before the numbering
        op.record(faces=0)
    with service.audit("DetectFaces", LOCAL) as op:
        op.record(faces=0)
    bodies = _bodies(service)
    assert [b["model_version"] for b in bodies] == ["dlib-resnet-v1", "1.0"]  # immutable
    report = service.transparency_report("2000-01-01", "2100-01-01")
    (model,) = report["models"]
    assert model["model_version"] == "1.0" and model["events"] == 2
    assert model["recorded_as"] == ["1.0", "dlib-resnet-v1"] and model["available"]
    assert "dlib ResNet v1" in model["name"]


# ---- real models on real faces -----------------------------------------------------------------


@pytest.fixture(scope="module")
def lfw(faces_dir: Path) -> Path:
    return faces_dir / "lfw"


@pytest.fixture(scope="module")
def data_dir(lfw: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data directory whose 2.0 table (unless one ships) is built from 120 LFW images."""
    from test_onnx_equivalence import lfw_subset

    tmp = tmp_path_factory.mktemp("versions")
    data = tmp / "data"
    try:
        find_calibration("2.0")
    except LookupError:
        subset = lfw_subset(lfw, 120, tmp)
        env = {k: v for k, v in os.environ.items() if k.startswith("FACELEDGER_")}
        result = CliRunner().invoke(main, [
            "calibration", "build", "--lfw", str(subset), "--cache", str(tmp / "cache"),
            "--workers", "1", "--replicates", "10",
            "--out", str(data / "calibration" / "2.0.json"),
        ], env={**env, "FACELEDGER_DATA_DIR": str(data), "FACELEDGER_EMBEDDER": "reid-0095"})
        assert result.exit_code == 0, result.output
    yield data


def photos(lfw: Path, person: str) -> list[Path]:
    return sorted((lfw / person).glob("*.jpg"))


def test_collections_of_models_1_and_2_answer_side_by_side(data_dir: Path, lfw: Path) -> None:
    """One server, configured for 2.0: a 1.0 collection is indexed and searched with dlib's
    ResNet and the 1.0 table, a 2.0 one with reid-0095 and the 2.0 table, through boto3."""
    import boto3
    from botocore.config import Config

    from faceledger.server import RekognitionApp, running

    settings = Settings(data_dir=data_dir)
    service = FaceService(settings)
    assert service.pipeline.model_version == "2.0"
    service.create_collection("side-1", face_model_version="1.0")  # CLI/API only: not on the wire
    app = RekognitionApp(service, None, settings, dev_mode=True, warm_up=False)
    pattern = botocore_pattern()
    with running(app) as url:
        client = boto3.session.Session().client(
            "rekognition", endpoint_url=url, region_name="eu-west-1",
            aws_access_key_id="anything", aws_secret_access_key="anything",
            config=Config(retries={"max_attempts": 1}))  # fmt: skip
        assert client.create_collection(CollectionId="side-2")["FaceModelVersion"] == "2.0"
        for cid, model in (("side-1", "1.0"), ("side-2", "2.0")):
            for person in PEOPLE:
                for p in photos(lfw, person)[:2]:
                    r = client.index_faces(CollectionId=cid, Image={"Bytes": p.read_bytes()},
                                           ExternalImageId=person, MaxFaces=1,
                                           QualityFilter="NONE")
                    assert r["FaceModelVersion"] == model
                    face = r["FaceRecords"][0]["Face"]
                    assert face["IndexFacesModelVersion"] == model
                    assert pattern.fullmatch(face["IndexFacesModelVersion"])
        listed = client.list_collections()
        assert dict(zip(listed["CollectionIds"], listed["FaceModelVersions"])) == {
            "side-1": "1.0", "side-2": "2.0"}
        for cid, model in (("side-1", "1.0"), ("side-2", "2.0")):
            assert client.describe_collection(CollectionId=cid)["FaceModelVersion"] == model
            faces = client.list_faces(CollectionId=cid)
            assert faces["FaceModelVersion"] == model
            probe = photos(lfw, PEOPLE[0])[3].read_bytes()  # not enrolled
            found = client.search_faces_by_image(CollectionId=cid, Image={"Bytes": probe},
                                                 FaceMatchThreshold=90.0)
            assert found["FaceModelVersion"] == model
            assert found["FaceMatches"], cid
            assert found["FaceMatches"][0]["Face"]["ExternalImageId"] == PEOPLE[0]
            stored = faces["Faces"][0]
            by_id = client.search_faces(CollectionId=cid, FaceId=stored["FaceId"],
                                        FaceMatchThreshold=90.0)
            assert by_id["FaceModelVersion"] == model
            assert by_id["FaceMatches"][0]["Face"]["ExternalImageId"] == stored["ExternalImageId"]
    app.close()
    with service.catalog.read() as conn:  # each collection holds its own model's templates
        assert service.catalog.collection(conn, "side-1").dim == 128
        assert service.catalog.collection(conn, "side-2").dim == 256
    # CompareFaces uses the configured model
    a, b = (p.read_bytes() for p in photos(lfw, PEOPLE[1])[:2])
    assert service.compare_faces({"Bytes": a}, {"Bytes": b})["FaceModelVersion"] == "2.0"
    # each search's event names the collection's model
    searches = [e for e in _bodies(service) if e["operation"] == "SearchFacesByImage"]
    assert {(e["collection"], e["model_version"]) for e in searches} == {
        ("side-1", "1.0"), ("side-2", "2.0")}


def test_the_pool_runs_each_model_in_its_workers(astronaut_jpeg: bytes, tmp_path: Path) -> None:
    px = decode_image(astronaut_jpeg).pixels
    local = FacePipeline(Settings(data_dir=tmp_path))
    face = local.analyze(px, embed=False)[0]
    pool = PipelinePool(Settings(data_dir=tmp_path), 2)
    default_dim = BUILT_IN[local.model_version].dim  # the configured (default) model's
    try:
        assert pool.embedder_for("1.0").dim == 128 and pool.embedder_for(None).dim == default_dim
        assert pool.embedder_for("dlib-resnet-v1") is pool.embedder_for("1.0")  # once
        for version, dim in (("1.0", 128), ("2.0", 256), ("3.0", 384), (None, default_dim)):
            remote = pool.embed_boxes(px, [face.box], [face.landmarks], model_version=version)
            near = local.embed_boxes(px, [face.box], [face.landmarks], model_version=version)
            assert remote.shape == (1, dim)
            np.testing.assert_allclose(remote, near, atol=1e-5)
            analysed = pool.analyze(px, model_version=version)[0].embedding
            assert analysed is not None and analysed.shape == (dim,)
    finally:
        pool.close()


def test_a_collection_whose_model_is_gone_is_not_ready(astronaut_jpeg: bytes,
                                                        tmp_path: Path) -> None:
    from test_embedder_slot import tiny_model

    (tmp_path / "models").mkdir()
    model = tiny_model(tmp_path / "models" / "tiny.onnx")
    data = tmp_path / "data"
    slot = FaceService(Settings(data_dir=data, embedder=f"onnx:{model}"))
    version = slot.create_collection("slot")["FaceModelVersion"]
    assert version.startswith("100.") and botocore_pattern().fullmatch(version)
    slot.index_faces("slot", {"Bytes": astronaut_jpeg})

    default = FaceService(Settings(data_dir=data, embedder="dlib"))
    with pytest.raises(ResourceNotReadyException, match="FACELEDGER_EXTRA_EMBEDDERS"):
        default.index_faces("slot", {"Bytes": astronaut_jpeg})
    assert default.describe_collection("slot")["FaceModelVersion"] == version  # reads still work
    # named among the extra embedders, the operator model serves its collection again
    extra = FaceService(Settings(data_dir=data, embedder="dlib",
                                 extra_embedders=[f"onnx:{model}"]))
    assert extra.index_faces("slot", {"Bytes": astronaut_jpeg})["FaceModelVersion"] == version
    model.unlink()  # the file removed: the collection is not ready, with the reason
    gone = FaceService(Settings(data_dir=data, embedder="dlib", extra_embedders=[f"onnx:{model}"]))
    with pytest.raises(ResourceNotReadyException, match=r"Collection slot is bound to face model"):
        gone.search_faces_by_image("slot", {"Bytes": astronaut_jpeg})


def test_calibration_and_evaluate_use_an_operator_built_table(
    lfw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_embedder_slot import tiny_model
    from test_onnx_equivalence import lfw_subset

    model = tiny_model(tmp_path / "tiny.onnx")
    version = operator_version(file_sha256(model))
    monkeypatch.setenv("FACELEDGER_EMBEDDER", f"onnx:{model}")
    monkeypatch.setenv("FACELEDGER_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    before = runner.invoke(main, ["calibration"])
    assert before.exit_code != 0 and f"no calibration table for model '{version}'" in before.output
    subset = lfw_subset(lfw, 40, tmp_path)
    cache = str(tmp_path / "cache")
    built = runner.invoke(main, ["calibration", "build", "--lfw", str(subset), "--cache", cache,
                                 "--workers", "1", "--replicates", "10"])
    assert built.exit_code == 0, built.output
    assert str(tmp_path / "data" / "calibration" / f"{version}.json") in built.output
    shown = runner.invoke(main, ["calibration"])
    assert shown.exit_code == 0, shown.output
    assert f"Calibration of {version}" in shown.output and "operator model" in shown.output
    as_json = runner.invoke(main, ["calibration", "--json", "--model", version])
    assert json.loads(as_json.output)["model_version"] == version
    evaluated = runner.invoke(main, ["evaluate", "folders", str(subset), "--cache", cache,
                                     "--workers", "1", "--replicates", "0", "--quiet",
                                     "--out", str(tmp_path / "report")])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["model_version"] == version


def _photo_folders(lfw: Path, root: Path, people: tuple[str, ...], n: int) -> Path:
    """A folder per person holding their first `n` LFW photos."""
    for person in people:
        (root / person).mkdir(parents=True)
        for p in photos(lfw, person)[:n]:
            shutil.copy(p, root / person / p.name)
    return root


def _index_into(runner: CliRunner, cid: str, model: str, photos_dir: Path) -> None:
    """`collection create CID --model MODEL`, then `collection index` of the folders."""
    assert runner.invoke(main, ["collection", "create", cid, "--model", model]).exit_code == 0
    r = runner.invoke(main, ["collection", "index", cid, str(photos_dir), "--external-id-from",
                             "parent", "--workers", "1", "--no-progress"])
    assert r.exit_code == 0, r.output


def _faces(client: FaceLedger, cid: str) -> list[dict[str, Any]]:
    return list(client.list_faces(cid)["Faces"])


def test_reenrol_a_collection_into_model_2(data_dir: Path, lfw: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1.0 collection (with a user) re-enrolled into 2.0 from its photos: faces, ids and
    users carried over, photos and faces that do not correspond reported, the ledger linking
    both collections and every new face to its source face; a second run resumes."""
    enrol = _photo_folders(lfw, tmp_path / "photos", PEOPLE, 3)
    monkeypatch.setenv("FACELEDGER_DATA_DIR", str(data_dir))
    monkeypatch.delenv("FACELEDGER_EMBEDDER", raising=False)
    runner = CliRunner()
    _index_into(runner, "old", "1.0", enrol)
    api = FaceLedger(Settings(data_dir=data_dir))
    source = _faces(api, "old")
    assert len(source) == 3 * len(PEOPLE)
    lagos = [f["FaceId"] for f in source if f["ExternalImageId"] == PEOPLE[0]]
    api.create_user("old", "lagos")
    joined = api.associate_faces("old", "lagos", lagos, user_match_threshold=50.0)
    assert len(joined["AssociatedFaces"]) == 3

    # one photo is not found any more; one photo given never was in the collection
    gone = sorted((enrol / PEOPLE[2]).glob("*.jpg"))[0]
    gone_sha = file_sha256(gone)
    gone.unlink()
    stranger = photos(lfw, PEOPLE[1])[5]
    report = tmp_path / "reenrol.jsonl"
    r = runner.invoke(main, ["collection", "reenrol", "old", "--into", "new", "--model", "2.0",
                             str(enrol), str(stranger), "--workers", "1", "--no-progress",
                             "--json", "--report", str(report)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["source"] == {"collection": "old", "model": "1.0"}
    assert out["target"] == {"collection": "new", "model": "2.0", "created": True}
    assert out["photos_not_in_source"] == [str(stranger)]
    missing = [f["FaceId"] for f in source if f["ExternalImageId"] == PEOPLE[2]]
    with api.service.catalog.read() as conn:
        old = api.service.catalog.collection(conn, "old")
        by_sha = {f.face_id: f.image_sha256 for f in
                  api.service.catalog.list_faces(conn, old.pk, 0, 100)}
    assert out["source_faces_without_photo"] == [f for f in missing if by_sha[f] == gone_sha]
    assert out["faces_linked"] == len(source) - 1 and out["indexing"]["failed"] == 0
    assert out["source_faces_not_found_in_photo"] == []

    new = _faces(api, "new")
    assert api.describe_collection("new")["FaceModelVersion"] == "2.0"
    assert sorted(f["ExternalImageId"] for f in new) == sorted(
        f["ExternalImageId"] for f in source if by_sha[f["FaceId"]] != gone_sha)
    assert sorted(f["FaceId"] for f in new if f.get("UserId") == "lagos") == sorted(
        f["FaceId"] for f in new if f["ExternalImageId"] == PEOPLE[0])
    lines = [json.loads(x) for x in report.read_text().splitlines()]
    linked = {k: v for x in lines for k, v in x.get("source_face_ids", {}).items()}
    assert set(linked) == {f["FaceId"] for f in new} and set(linked.values()) <= set(by_sha)

    # the ledger: the run names both collections and models; each IndexFaces its source faces
    bodies = _bodies(api.service)
    (run,) = [b for b in bodies if b["operation"] == "ReenrolCollection"]
    assert run["collection"] == "new" and run["model_version"] == "2.0"
    assert run["params"]["SourceCollectionId"] == "old"
    assert run["params"]["SourceFaceModelVersion"] == "1.0"
    assert run["params"]["TargetCollectionId"] == "new"
    assert run["params"]["TargetFaceModelVersion"] == "2.0"
    indexed = [b for b in bodies if b["operation"] == "IndexFaces"
               and b["params"].get("ReenrolRun") == run["request_id"]]
    assert len(indexed) == len(new) and all(b["model_version"] == "2.0" for b in indexed)
    assert {k: v for b in indexed for k, v in b["result"]["source_face_ids"].items()} == linked
    # the retention clock is the source face's, not the re-enrolment's
    r_ = schema.retention
    with api.service.ledger.engine.connect() as conn:
        since = dict(conn.execute(sa.select(r_.c.face_id, r_.c.since)).all())
    assert all(since[new_id] == since[old_id] for new_id, old_id in linked.items())

    # the new collection answers with model 2.0; a second run has nothing left to do
    probe = photos(lfw, PEOPLE[0])[4].read_bytes()
    hits = api.search_faces_by_image("new", probe, face_match_threshold=90.0)
    assert hits["FaceMatches"] and hits["FaceMatches"][0]["Face"]["UserId"] == "lagos"
    again = api.reenrol_collection("old", "new", [enrol], "2.0")
    assert again["indexing"]["indexed"] == 0
    assert again["indexing"]["skipped_already_indexed"] == len(new)
    assert not again["target"]["created"]
    api.close()


def test_dlib_models_embed_the_faces_of_their_own_detector(tmp_path: Path) -> None:
    """1.x templates were made from HOG's boxes (dlib's aligner starts from the box): a 1.x
    collection's photos are detected by `dlib_detector`, whatever the configured detector."""
    from faceledger.evaluation.enrolment import cache_key

    pipeline = FacePipeline(Settings(data_dir=tmp_path))
    assert pipeline.settings.detector == "yunet" and pipeline.settings.dlib_detector == "hog"
    for version in ("1.0", "1.1", "dlib-resnet-v1"):
        assert pipeline.detector_for(version).name == "hog"
    assert pipeline.detector_for("1.0") is pipeline.detector_for("1.2")  # loaded once
    assert pipeline.detector_for("2.0") is pipeline.detector is pipeline.detector_for(None)
    same = FacePipeline(Settings(data_dir=tmp_path, dlib_detector=None))
    assert same.detector_for("1.0") is same.detector
    # evaluation caches of 1.0 keep the directory they had before the numbering
    assert cache_key(Settings(), "1.0").startswith("dlib-resnet-v1/hog-min40-")
    assert cache_key(Settings(), "2.0").startswith("2.0/yunet_n0.6c2-min40-")


def test_reenrol_a_2_0_collection_into_model_3(data_dir: Path, lfw: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`collection reenrol --model 3.0` moves a 2.0 collection to the fused model: 384-d
    templates from the same photos, every face linked, searches scored by 3.0's table."""
    enrol = _photo_folders(lfw, tmp_path / "photos", PEOPLE[:2], 2)
    monkeypatch.setenv("FACELEDGER_DATA_DIR", str(data_dir))
    monkeypatch.delenv("FACELEDGER_EMBEDDER", raising=False)
    runner = CliRunner()
    _index_into(runner, "two", "2.0", enrol)
    r = runner.invoke(main, ["collection", "reenrol", "two", "--into", "three", "--model", "3.0",
                             str(enrol), "--workers", "1", "--no-progress", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["target"] == {"collection": "three", "model": "3.0", "created": True}
    api = FaceLedger(Settings(data_dir=data_dir))
    assert out["faces_linked"] == len(_faces(api, "two")) == len(_faces(api, "three")) == 4
    assert api.describe_collection("three")["FaceModelVersion"] == "3.0"
    with api.service.catalog.read() as conn:
        assert api.service.catalog.collection(conn, "three").dim == 384
    probe = photos(lfw, PEOPLE[0])[3].read_bytes()
    hits = api.search_faces_by_image("three", probe, face_match_threshold=99.0)
    assert hits["FaceModelVersion"] == "3.0"
    assert {m["Face"]["ExternalImageId"] for m in hits["FaceMatches"]} == {PEOPLE[0]}
    indexed = [b for b in _bodies(api.service) if b["operation"] == "IndexFaces"
               and b["collection"] == "three"]
    assert len(indexed) == 4 and all(b["model_version"] == "3.0" for b in indexed)
    api.close()
