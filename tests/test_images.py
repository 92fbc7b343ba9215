"""DetectFaces and CompareFaces on real faces, in Rekognition's response shapes."""

from __future__ import annotations

from pathlib import Path

import botocore.session
import pytest

from faceledger.service import FaceService


def _shape_members(name: str) -> set[str]:
    model = botocore.session.get_session().get_service_model("rekognition")
    return set(model.shape_for(name).members)


def test_detect_faces_shape(service: FaceService, astronaut_jpeg: bytes) -> None:
    result = service.detect_faces({"Bytes": astronaut_jpeg}, ["ALL"])
    # beyond the model: only the notice of what ALL asked for and is not estimated (issue 26)
    notice = {"AttributesNotReturned", "AttributesNotReturnedReason"}
    assert notice <= set(result) and "AGE_RANGE" in result["AttributesNotReturned"]
    assert set(result) - notice <= set(
        botocore.session.get_session().get_service_model("rekognition")
        .operation_model("DetectFaces").output_shape.members
    )
    # The portrait's face first; any other box (HOG: the mission patch) has lower confidence.
    face = result["FaceDetails"][0]
    assert all(f["Confidence"] < face["Confidence"] for f in result["FaceDetails"][1:])
    assert set(face) <= _shape_members("FaceDetail")
    # Only what is measured: no invented age, gender or emotion even when ALL is asked for.
    assert set(face) == {"BoundingBox", "Confidence", "Landmarks", "Pose", "Quality"}
    box = face["BoundingBox"]
    assert 0 < box["Left"] < 1 and 0 < box["Top"] < 1 and 0 < box["Width"] < 0.5
    assert [lm["Type"] for lm in face["Landmarks"]] == [
        "eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight"]
    for lm in face["Landmarks"]:
        assert box["Left"] <= lm["X"] <= box["Left"] + box["Width"]
    assert face["Confidence"] > 90


def test_detect_faces_finds_every_face_in_a_group_photo(service: FaceService,
                                                        faces_dir: Path) -> None:
    data = (faces_dir / "detection" / "2008_004176.jpg").read_bytes()
    assert len(service.detect_faces({"Bytes": data})["FaceDetails"]) == 7


def lfw(faces_dir: Path, name: str, i: int) -> dict[str, bytes]:
    return {"Bytes": (faces_dir / "lfw" / name / f"{name}_{i:04d}.jpg").read_bytes()}


def test_same_person_matches_at_the_strict_default(service: FaceService, faces_dir: Path) -> None:
    result = service.compare_faces(lfw(faces_dir, "John_Bolton", 3),
                                   lfw(faces_dir, "John_Bolton", 4))
    assert len(result["FaceMatches"]) == 1
    assert result["FaceMatches"][0]["Similarity"] >= result["SimilarityThreshold"]
    assert result["FalseMatchRate"] == pytest.approx(1e-4)
    assert set(result["FaceMatches"][0]["Face"]) <= _shape_members("ComparedFace")
    assert set(result["SourceImageFace"]) == {"BoundingBox", "Confidence"}


def test_different_people_do_not_match(service: FaceService, faces_dir: Path) -> None:
    result = service.compare_faces(lfw(faces_dir, "John_Bolton", 3),
                                   lfw(faces_dir, "Paul_Wolfowitz", 2))
    assert result["FaceMatches"] == []
    assert len(result["UnmatchedFaces"]) == 1


def test_threshold_zero_reports_every_face_with_its_similarity(service: FaceService,
                                                               faces_dir: Path) -> None:
    group = {"Bytes": (faces_dir / "detection" / "2008_004176.jpg").read_bytes()}
    result = service.compare_faces(lfw(faces_dir, "John_Bolton", 3), group,
                                   similarity_threshold=0)
    sims = [m["Similarity"] for m in result["FaceMatches"]]
    assert len(sims) == 7 and result["UnmatchedFaces"] == []
    assert sims == sorted(sims, reverse=True)
    assert all(0 <= s <= 100 for s in sims)


def test_similarity_means_false_match_rate(service: FaceService, faces_dir: Path) -> None:
    """A threshold of S admits a pair exactly when its FMR is at most 1 - S/100."""
    a, b = lfw(faces_dir, "Paul_Wolfowitz", 2), lfw(faces_dir, "Paul_Wolfowitz", 3)
    sim = service.compare_faces(a, b, similarity_threshold=0)["FaceMatches"][0]["Similarity"]
    assert service.compare_faces(a, b, similarity_threshold=sim - 1e-9)["FaceMatches"]
    assert not service.compare_faces(a, b, similarity_threshold=min(100.0, sim + 1e-7))[
        "FaceMatches"]


def test_quality_filter_high_drops_blurred_target(service: FaceService,
                                                  astronaut_jpeg: bytes) -> None:
    import io

    import cv2
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(astronaut_jpeg)))
    blurred = cv2.GaussianBlur(pixels, (0, 0), 2)
    buf = io.BytesIO()
    Image.fromarray(blurred).save(buf, format="JPEG")
    src, tgt = {"Bytes": astronaut_jpeg}, {"Bytes": buf.getvalue()}
    kept = service.compare_faces(src, tgt, similarity_threshold=0, quality_filter="NONE")
    dropped = service.compare_faces(src, tgt, similarity_threshold=0, quality_filter="HIGH")
    assert len(kept["FaceMatches"]) + len(kept["UnmatchedFaces"]) >= 1
    assert dropped["FaceMatches"] == [] and dropped["UnmatchedFaces"] == []
