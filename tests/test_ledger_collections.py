"""Every collection operation writes the audit ledger: real LFW photos through the real pipeline,
a real SQLite catalog + embedded index + ledger in a temp dir, a real HTTP server for boto3.

Each operation appends exactly one event (operation, collection, principal, image digests,
thresholds, result summary), policy refusals are logged as refused and change nothing, validation
errors leave no event, identification mode holds search matches for review (Python API and HTTP),
and a failure after the catalog write leaves neither the face, nor its event, nor an index entry.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
from botocore.config import Config
from click.testing import CliRunner

from faceledger.api import FaceLedger
from faceledger.cli import main
from faceledger.context import RequestContext
from faceledger.errors import (
    IdempotentParameterMismatchException,
    InternalServerError,
    InvalidImageFormatException,
    InvalidParameterException,
    PolicyRefusedException,
    ResourceNotFoundException,
)
from faceledger.ledger import schema
from faceledger.ledger.events import format_time, utc_now
from faceledger.server import RekognitionApp, running
from faceledger.server.keys import KeyStore
from faceledger.service import FaceService
from faceledger.settings import Settings
from faceledger.vision.embedders import embedder_version

ADMIN = RequestContext(principal="admin", admin=True)
MODEL = embedder_version(Settings())  # the configured model (what new collections get)
PROBE = ("Ricardo_Lagos", "0022")  # never indexed
MISSING_FACE = "11111111-2222-3333-4444-555555555555"


def photo(faces_dir: Path, person: str, n: str) -> bytes:
    return (faces_dir / "lfw" / person / f"{person}_{n}.jpg").read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bodies(svc: FaceService) -> list[dict[str, Any]]:
    return [json.loads(e.body) for e in svc.ledger.scan()]


class Recorder:
    """Runs one call and returns its result with the events it appended (exactly one, checked)."""

    def __init__(self, svc: FaceService) -> None:
        self.svc = svc

    def one(self, call: Any) -> tuple[Any, dict[str, Any]]:
        before = self.svc.ledger.count()
        out = call()
        new = bodies(self.svc)[before:]
        assert len(new) == 1, [e["operation"] for e in new]
        return out, new[0]

    def none(self, call: Any, error: type[Exception]) -> None:
        before = self.svc.ledger.count()
        with pytest.raises(error):
            call()
        assert self.svc.ledger.count() == before


@pytest.fixture
def svc(service: FaceService, tmp_path: Path) -> Iterator[FaceService]:
    """A service on its own data dir, sharing the session's loaded models."""
    s = FaceService(Settings(data_dir=tmp_path / "data"), pipeline=service.pipeline)
    yield s
    s.close()
    s.engine.dispose()


def face_count(svc: FaceService, cid: str) -> int:
    with svc.catalog.read() as conn:
        return svc.catalog.collection(conn, cid).face_count


def retained(svc: FaceService) -> int:
    with svc.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(schema.retention))
                   .scalar_one())


def index_keys(svc: FaceService, cid: str) -> tuple[list[int], list[int]]:
    """(keys the vector index holds, keys the catalog holds) for a collection."""
    with svc.catalog.read() as conn:
        coll = svc.catalog.collection(conn, cid)
        live = svc.catalog.live_keys(conn, coll.pk).tolist()
    return svc.index.keys(coll.pk, coll.version).tolist(), live


def assert_search_event(ev: dict[str, Any], r: dict[str, Any], key: str, name: str) -> None:
    """The event states the threshold the response used and what came back."""
    assert ev["thresholds"][name] == r[name]
    assert ev["thresholds"]["FalseMatchRate"] == r["FalseMatchRate"]
    assert ev["result"]["compared"] == r["FacesSearched"]
    assert ev["result"]["expected_false_matches"] == pytest.approx(r["ExpectedFalseMatches"],
                                                                   rel=1e-12, abs=1e-15)
    assert ev["result"]["similarities"] == [m["Similarity"] for m in r[key]]
    ids = "face_ids" if key == "FaceMatches" else "user_ids"
    inner = "Face" if key == "FaceMatches" else "User"
    field = "FaceId" if key == "FaceMatches" else "UserId"
    assert ev["result"][ids] == [m[inner][field] for m in r[key]]


# --- one event per operation --------------------------------------------------------------------


def test_every_collection_operation_appends_one_event(svc: FaceService, faces_dir: Path,
                                                      tmp_path: Path) -> None:
    fl = FaceLedger(service=svc).with_context(principal="desk-7", purpose="access control",
                                               case="AC-1", consent="form-9")
    rec = Recorder(svc)
    c = "lobby"

    out, ev = rec.one(lambda: fl.create_collection(c, tags={"site": "north"}))
    assert (ev["operation"], ev["collection"], ev["outcome"]) == ("CreateCollection", c, "done")
    assert (ev["principal"], ev["purpose"], ev["case"]) == ("desk-7", "access control", "AC-1")
    assert ev["model_version"] == MODEL and ev["params"]["TagKeys"] == ["site"]
    assert ev["result"]["collection_arn"] == out["CollectionArn"]

    faces: dict[str, str] = {}
    for person, n in (("Ricardo_Lagos", "0001"), ("Ricardo_Lagos", "0002"),
                      ("Paul_Wolfowitz", "0002")):
        data = photo(faces_dir, person, n)
        ext = f"{person}_{n}"
        out, ev = rec.one(lambda d=data, e=ext: fl.index_faces(
            c, d, external_image_id=e, max_faces=1, quality_filter="NONE"))
        (record,) = out["FaceRecords"]
        faces[f"{person}_{n}"] = record["Face"]["FaceId"]
        assert ev["operation"] == "IndexFaces" and ev["images"] == [sha(data)]
        assert ev["result"]["face_ids"] == [record["Face"]["FaceId"]]
        assert ev["result"]["image_id"] == record["Face"]["ImageId"]
        assert ev["params"] == {"MaxFaces": 1, "QualityFilter": "NONE",
                                "ExternalImageId": f"{person}_{n}"}
        assert ev["consent"] == "form-9" and ev["model_version"] == MODEL
    dogs = (faces_dir / "detection" / "dogs.jpg").read_bytes()
    out, ev = rec.one(lambda: fl.index_faces(c, dogs))  # no face: still an audited look
    assert out["FaceRecords"] == [] and ev["result"]["face_ids"] == []
    assert ev["images"] == [sha(dogs)] and ev["params"]["QualityFilter"] == "AUTO"
    assert retained(svc) == 3  # IndexFaces started the retention clock of each face

    out, ev = rec.one(lambda: fl.describe_collection(c))
    assert ev["operation"] == "DescribeCollection" and ev["model_version"] is None
    assert ev["result"] == {"face_count": 3, "user_count": 0} and out["FaceCount"] == 3
    out, ev = rec.one(lambda: fl.list_collections())
    assert (ev["operation"], ev["collection"], ev["result"]) == (
        "ListCollections", None, {"collections": 1})
    out, ev = rec.one(lambda: fl.list_faces(c, max_results=2))
    assert ev["operation"] == "ListFaces" and ev["result"]["more"] is True
    assert ev["result"]["face_ids"] == [f["FaceId"] for f in out["Faces"]]

    lagos1, lagos2 = faces["Ricardo_Lagos_0001"], faces["Ricardo_Lagos_0002"]
    out, ev = rec.one(lambda: fl.search_faces(c, lagos1))
    assert ev["operation"] == "SearchFaces" and ev["params"]["FaceId"] == lagos1
    assert [m["Face"]["FaceId"] for m in out["FaceMatches"]] == [lagos2]
    assert_search_event(ev, out, "FaceMatches", "FaceMatchThreshold")
    assert ev["model_version"] == MODEL and ev["images"] == []

    probe = photo(faces_dir, *PROBE)
    out, ev = rec.one(lambda: fl.search_faces_by_image(c, probe, face_match_threshold=99.0))
    assert ev["operation"] == "SearchFacesByImage" and ev["images"] == [sha(probe)]
    found = {m["Face"]["FaceId"] for m in out["FaceMatches"]}
    assert found and found <= {lagos1, lagos2}  # Ricardo Lagos, not Paul Wolfowitz
    assert ev["thresholds"]["FaceMatchThreshold"] == 99.0
    assert_search_event(ev, out, "FaceMatches", "FaceMatchThreshold")

    out, ev = rec.one(lambda: fl.create_user(c, "lagos", client_request_token="u-1"))
    assert (ev["operation"], ev["result"]) == ("CreateUser", {"user_ids": ["lagos"]})
    assert ev["params"] == {"UserId": "lagos", "ClientRequestToken": "u-1"}
    # a retry with the same token returns the stored answer and is logged as a replay
    out, ev = rec.one(lambda: fl.create_user(c, "lagos", client_request_token="u-1"))
    assert out == {} and ev["result"] == {"user_ids": ["lagos"], "replay": True}
    rec.none(lambda: fl.create_user(c, "other", client_request_token="u-1"),
             IdempotentParameterMismatchException)

    out, ev = rec.one(lambda: fl.associate_faces(c, "lagos", [lagos1, lagos2, MISSING_FACE],
                                                 client_request_token="a-1"))
    assert ev["operation"] == "AssociateFaces" and ev["model_version"] == MODEL
    assert ev["result"]["face_ids"] == [lagos1, lagos2] and ev["result"]["user_ids"] == ["lagos"]
    assert ev["result"]["unsuccessful"] == [{"FaceId": MISSING_FACE,
                                             "Reasons": ["FACE_NOT_FOUND"]}]
    assert ev["thresholds"]["UserMatchThreshold"] == pytest.approx(99.99)
    again, ev = rec.one(lambda: fl.associate_faces(c, "lagos", [lagos1, lagos2, MISSING_FACE],
                                                   client_request_token="a-1"))
    assert again == out and ev["result"]["replay"] is True
    assert ev["result"]["face_ids"] == [lagos1, lagos2]

    out, ev = rec.one(lambda: fl.list_users(c))
    assert (ev["operation"], ev["result"]) == ("ListUsers", {"user_ids": ["lagos"],
                                                              "more": False})
    out, ev = rec.one(lambda: fl.search_users(c, face_id=lagos1, user_match_threshold=90.0))
    assert [m["User"]["UserId"] for m in out["UserMatches"]] == ["lagos"]
    assert ev["operation"] == "SearchUsers" and ev["params"]["FaceId"] == lagos1
    assert_search_event(ev, out, "UserMatches", "UserMatchThreshold")
    out, ev = rec.one(lambda: fl.search_users_by_image(c, probe, user_match_threshold=99.0))
    assert [m["User"]["UserId"] for m in out["UserMatches"]] == ["lagos"]
    assert ev["operation"] == "SearchUsersByImage" and ev["images"] == [sha(probe)]
    assert_search_event(ev, out, "UserMatches", "UserMatchThreshold")

    out, ev = rec.one(lambda: fl.disassociate_faces(c, "lagos", [lagos2]))
    assert ev["operation"] == "DisassociateFaces" and ev["result"]["face_ids"] == [lagos2]
    assert ev["result"]["user_status"] == "ACTIVE"
    out, ev = rec.one(lambda: fl.delete_user(c, "lagos"))
    assert ev["operation"] == "DeleteUser"
    assert ev["result"] == {"user_ids": ["lagos"], "disassociated": 1}
    out, ev = rec.one(lambda: fl.delete_faces(c, [lagos2, MISSING_FACE]))
    assert ev["operation"] == "DeleteFaces" and out["DeletedFaces"] == [lagos2]
    assert ev["result"]["face_ids"] == [lagos2] and ev["result"]["deleted"] == 1
    assert ev["result"]["unsuccessful"] == [{"FaceId": MISSING_FACE,
                                             "Reasons": ["FACE_NOT_FOUND"]}]
    assert retained(svc) == 2  # the deleted face's retention clock stopped
    out, ev = rec.one(lambda: fl.delete_collection(c))
    assert ev["operation"] == "DeleteCollection" and ev["result"] == {"deleted": 2, "users": 0}
    assert retained(svc) == 0

    events = bodies(svc)
    assert all(e["outcome"] == "done" and e["principal"] == "desk-7" for e in events)
    # the Python API gives each call its own request id (one event, one id)
    assert len({e["request_id"] for e in events}) == len(events)
    assert "Bytes" not in json.dumps(events)

    runner = CliRunner()
    verified = runner.invoke(main, ["ledger", "verify"],
                             env={"FACELEDGER_DATA_DIR": str(tmp_path / "data")})
    assert verified.exit_code == 0, verified.output
    assert f"OK: {len(events)} events intact" in verified.output


def test_validation_errors_keep_their_codes_and_leave_no_event(svc: FaceService,
                                                               faces_dir: Path) -> None:
    rec = Recorder(svc)
    svc.create_collection(collection_id="v")
    img = {"Bytes": photo(faces_dir, *PROBE)}
    for call in (
        lambda: svc.describe_collection(collection_id="nope"),
        lambda: svc.delete_collection(collection_id="nope"),
        lambda: svc.index_faces(collection_id="nope", image=img),
        lambda: svc.list_faces(collection_id="nope"),
        lambda: svc.delete_faces(collection_id="nope", face_ids=[MISSING_FACE]),
        lambda: svc.search_faces(collection_id="nope", face_id=MISSING_FACE),
        lambda: svc.search_faces_by_image(collection_id="nope", image=img),
        lambda: svc.create_user(collection_id="nope", user_id="u"),
        lambda: svc.delete_user(collection_id="v", user_id="ghost"),
        lambda: svc.list_users(collection_id="nope"),
        lambda: svc.associate_faces(collection_id="v", user_id="ghost",
                                    face_ids=[MISSING_FACE]),
        lambda: svc.disassociate_faces(collection_id="nope", user_id="u",
                                       face_ids=[MISSING_FACE]),
        lambda: svc.search_users(collection_id="v", user_id="ghost"),
        lambda: svc.search_users_by_image(collection_id="nope", image=img),
    ):
        rec.none(call, ResourceNotFoundException)
    for call in (
        lambda: svc.create_collection(collection_id="bad id"),
        lambda: svc.index_faces(collection_id="v", image=img, max_faces=0),
        lambda: svc.search_faces(collection_id="v", face_id=MISSING_FACE),
        lambda: svc.search_faces_by_image(collection_id="v", image=img,
                                          face_match_threshold=101),
        lambda: svc.list_faces(collection_id="v", max_results=4097),
        lambda: svc.search_faces_by_image(  # a photo without a face
            collection_id="v", image={"Bytes": (faces_dir / "detection" / "dogs.jpg")
                                      .read_bytes()}),
    ):
        rec.none(call, InvalidParameterException)
    rec.none(lambda: svc.index_faces(collection_id="v", image={"Bytes": b"not an image"}),
             InvalidImageFormatException)
    assert [e["operation"] for e in bodies(svc)] == ["CreateCollection"]


# --- policies: refused, logged, nothing changed -------------------------------------------------


def test_policy_refusals_are_logged_and_change_nothing(svc: FaceService, faces_dir: Path) -> None:
    svc.create_collection(collection_id="strict")
    svc.put_collection_policy("strict", {"RequirePurpose": True, "RequireConsent": True,
                                         "MinSimilarityThreshold": 99.9}, ctx=ADMIN)
    rec = Recorder(svc)
    data = photo(faces_dir, "Ricardo_Lagos", "0001")
    anonymous = RequestContext(principal="walk-in")
    no_consent = RequestContext(principal="clerk", purpose="enrolment")
    allowed = RequestContext(principal="clerk", purpose="enrolment", consent="form-3")

    for ctx, rule in ((anonymous, "purpose_required"), (no_consent, "consent_required")):
        with pytest.raises(PolicyRefusedException) as err:
            svc.index_faces(collection_id="strict", image={"Bytes": data}, ctx=ctx)
        assert err.value.code == "AccessDeniedException"
        ev = bodies(svc)[-1]
        assert (ev["operation"], ev["outcome"], ev["rule"]) == ("IndexFaces", "refused", rule)
        assert ev["principal"] == ctx.principal and ev["collection"] == "strict"
        assert ev["result"] == {} and ev["images"] == []  # refused before the photo was read
        assert face_count(svc, "strict") == 0 and retained(svc) == 0
    assert svc.list_faces(collection_id="strict", ctx=allowed)["Faces"] == []
    with pytest.raises(PolicyRefusedException):
        svc.list_faces(collection_id="strict", ctx=anonymous)
    assert bodies(svc)[-1]["rule"] == "purpose_required"

    out, ev = rec.one(lambda: svc.index_faces(collection_id="strict", image={"Bytes": data},
                                              max_faces=1, ctx=allowed))
    assert ev["outcome"] == "done" and ev["consent"] == "form-3"
    assert face_count(svc, "strict") == 1 and retained(svc) == 1

    probe = {"Bytes": photo(faces_dir, *PROBE)}
    with pytest.raises(PolicyRefusedException, match="below"):
        svc.search_faces_by_image(collection_id="strict", image=probe, face_match_threshold=80,
                                  ctx=allowed)
    ev = bodies(svc)[-1]
    assert (ev["outcome"], ev["rule"]) == ("refused", "threshold_floor")
    assert ev["thresholds"]["FaceMatchThreshold"] == 80 and ev["images"] == []
    with pytest.raises(PolicyRefusedException, match="below"):
        svc.search_faces(collection_id="strict", face_id=out["FaceRecords"][0]["Face"]["FaceId"],
                         face_match_threshold=99.0, ctx=allowed)
    # without a threshold: the stricter of the default for one face (99.99) and the floor;
    # a threshold at or above the floor is honoured
    r, ev = rec.one(lambda: svc.search_faces_by_image(collection_id="strict", image=probe,
                                                      ctx=allowed))
    assert r["FaceMatchThreshold"] == pytest.approx(99.99)
    assert all(m["Similarity"] >= r["FaceMatchThreshold"] for m in r["FaceMatches"])
    assert_search_event(ev, r, "FaceMatches", "FaceMatchThreshold")
    r, ev = rec.one(lambda: svc.search_faces_by_image(collection_id="strict", image=probe,
                                                      face_match_threshold=99.95, ctx=allowed))
    assert r["FaceMatchThreshold"] == 99.95 and ev["thresholds"]["FaceMatchThreshold"] == 99.95
    assert face_count(svc, "strict") == 1
    refused = [e for e in bodies(svc) if e["outcome"] == "refused"]
    assert [e["rule"] for e in refused] == ["purpose_required", "consent_required",
                                            "purpose_required", "threshold_floor",
                                            "threshold_floor"]
    assert svc.verify_ledger()["ok"]


def test_a_policy_floor_above_the_default_raises_the_search_threshold(
        svc: FaceService, faces_dir: Path) -> None:
    svc.create_collection(collection_id="floor")
    svc.put_collection_policy("floor", {"MinSimilarityThreshold": 99.999}, ctx=ADMIN)
    svc.index_faces(collection_id="floor", image={"Bytes": photo(faces_dir, "Ricardo_Lagos",
                                                                 "0001")}, max_faces=1)
    r = svc.search_faces_by_image(collection_id="floor",
                                  image={"Bytes": photo(faces_dir, *PROBE)})
    ev = bodies(svc)[-1]
    assert r["FaceMatchThreshold"] == 99.999  # not the 99.99 default for one face
    assert r["FalseMatchRate"] == pytest.approx(1e-5)
    assert all(m["Similarity"] >= 99.999 for m in r["FaceMatches"])
    assert_search_event(ev, r, "FaceMatches", "FaceMatchThreshold")


# --- identification mode ------------------------------------------------------------------------


def _identification_gallery(svc: FaceService, faces_dir: Path, cid: str) -> set[str]:
    svc.create_collection(collection_id=cid)
    ids = set()
    for n in ("0001", "0002"):
        r = svc.index_faces(collection_id=cid, image={"Bytes": photo(faces_dir, "Ricardo_Lagos",
                                                                     n)}, max_faces=1)
        ids.add(r["FaceRecords"][0]["Face"]["FaceId"])
    svc.put_collection_policy(cid, {"IdentificationMode": True}, ctx=ADMIN)
    return ids


def test_identification_mode_holds_matches_over_the_python_api(svc: FaceService,
                                                              faces_dir: Path) -> None:
    lagos = _identification_gallery(svc, faces_dir, "wanted")
    fl = FaceLedger(service=svc).with_context(principal="officer", purpose="missing person",
                                               case="MP-4")
    probe = photo(faces_dir, *PROBE)
    out = fl.search_faces_by_image("wanted", probe, face_match_threshold=99.0)
    assert out["FaceMatches"] == [] and out["ReviewRequired"] is True
    ev = bodies(svc)[-1]
    held = [c["CandidateId"] for c in out["ReviewCandidates"]]
    assert ev["result"]["held_for_review"] == held and len(held) == 2
    assert set(ev["result"]["face_ids"]) == lagos
    assert ev["result"]["compared"] == out["FacesSearched"] == 2
    listed = svc.list_review_candidates("wanted", request_id=ev["request_id"])["Candidates"]
    assert {c["FaceId"] for c in listed} == lagos
    assert all(c["ProbeImageSha256"] == sha(probe) and c["RequestedBy"] == "officer"
               and c["CaseReference"] == "MP-4" and c["Similarity"] >= 99.0 for c in listed)
    # searching by a stored face or for users is held the same way
    by_face = fl.search_faces("wanted", min(lagos), face_match_threshold=99.0)
    assert by_face["FaceMatches"] == [] and len(by_face["ReviewCandidates"]) == 1
    # its probe photo is the stored face's, as its IndexFaces recorded it, so a reviewer can
    # show which photos they compared (every answer needs both)
    (held_by_face,) = svc.list_review_candidates(
        "wanted", request_id=bodies(svc)[-1]["request_id"])["Candidates"]
    indexed = next(b for b in bodies(svc) if b["operation"] == "IndexFaces"
                   and min(lagos) in b["result"]["face_ids"])
    assert held_by_face["ProbeImageSha256"] == indexed["images"][0] in {
        sha(photo(faces_dir, "Ricardo_Lagos", n)) for n in ("0001", "0002")}
    svc.create_user(collection_id="wanted", user_id="lagos")
    svc.associate_faces(collection_id="wanted", user_id="lagos", face_ids=sorted(lagos))
    users = fl.search_users_by_image("wanted", probe, user_match_threshold=99.0)
    assert users["UserMatches"] == [] and len(users["ReviewCandidates"]) == 1
    (cand,) = svc.list_review_candidates("wanted", request_id=bodies(svc)[-1]["request_id"])[
        "Candidates"]
    assert cand["UserId"] == "lagos" and cand["Operation"] == "SearchUsersByImage"


def test_identification_mode_holds_matches_over_http_with_boto3(svc: FaceService,
                                                               faces_dir: Path) -> None:
    lagos = _identification_gallery(svc, faces_dir, "wanted")
    keys = KeyStore(svc.engine, secrets.token_bytes(32))
    key = keys.create("officer", ["*"], ["*"])
    app = RekognitionApp(svc, keys, svc.settings)
    raw: dict[str, Any] = {}
    with running(app) as url:
        client = boto3.session.Session().client(
            "rekognition", endpoint_url=url, region_name="us-east-1",
            aws_access_key_id=key.info.access_key_id,
            aws_secret_access_key=key.secret_access_key,
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))

        def add_context(request: Any, **_: Any) -> None:
            request.headers["X-Faceledger-Purpose"] = "missing person"
            request.headers["X-Faceledger-Case"] = "MP-5"

        def keep_body(http_response: Any, **_: Any) -> None:
            raw.update(json.loads(http_response.content))

        client.meta.events.register("before-sign.rekognition.*", add_context)
        client.meta.events.register("after-call.rekognition.SearchFacesByImage", keep_body)
        out = client.search_faces_by_image(CollectionId="wanted",
                                           Image={"Bytes": photo(faces_dir, *PROBE)},
                                           FaceMatchThreshold=99.0)
    app.close()
    assert out["FaceMatches"] == []  # boto3 sees no match: they wait for review
    assert raw["ReviewRequired"] is True and len(raw["ReviewCandidates"]) == 2
    ev = bodies(svc)[-1]
    assert ev["operation"] == "SearchFacesByImage"
    assert ev["request_id"] == out["ResponseMetadata"]["RequestId"]
    assert ev["principal"] == key.info.access_key_id
    assert (ev["purpose"], ev["case"]) == ("missing person", "MP-5")
    assert ev["result"]["held_for_review"] == [c["CandidateId"] for c in raw["ReviewCandidates"]]
    listed = svc.list_review_candidates("wanted", request_id=ev["request_id"])["Candidates"]
    assert {c["FaceId"] for c in listed} == lagos
    assert all(c["RequestedBy"] == key.info.access_key_id for c in listed)


# --- failures after the catalog write -----------------------------------------------------------


def test_a_failure_after_the_catalog_write_leaves_no_face_no_event_no_index_entry(
        svc: FaceService, faces_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    svc.create_collection(collection_id="f")
    svc.index_faces(collection_id="f", image={"Bytes": photo(faces_dir, "Ricardo_Lagos", "0001")},
                    max_faces=1)
    before_events, before_keys = svc.ledger.count(), index_keys(svc, "f")
    assert before_keys[0] == before_keys[1] and len(before_keys[1]) == 1
    data = photo(faces_dir, "Paul_Wolfowitz", "0002")
    real_add = svc.catalog.add_faces
    written: list[list[int]] = []

    def add_then_fail(conn: Any, coll: Any, new: Any) -> list[int]:
        keys = real_add(conn, coll, new)  # the faces are in the transaction ...
        written.append(keys)
        raise RuntimeError("disk full")  # ... and then the operation fails

    monkeypatch.setattr(svc.catalog, "add_faces", add_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        svc.index_faces(collection_id="f", image={"Bytes": data}, max_faces=1)
    monkeypatch.undo()
    assert written and len(written[0]) == 1
    assert svc.ledger.count() == before_events
    assert face_count(svc, "f") == 1 and retained(svc) == 1
    assert index_keys(svc, "f") == before_keys and written[0][0] not in before_keys[0]

    # the ledger itself failing to append rolls the face back too (InternalServerError)
    def append_fails(conn: Any, event: Any) -> Any:
        raise sa.exc.OperationalError("INSERT INTO ledger_events", {}, Exception("disk I/O"))

    monkeypatch.setattr(svc.ledger, "append", append_fails)
    with pytest.raises(InternalServerError, match="could not record IndexFaces"):
        svc.index_faces(collection_id="f", image={"Bytes": data}, max_faces=1)
    monkeypatch.undo()
    assert svc.ledger.count() == before_events
    assert face_count(svc, "f") == 1 and retained(svc) == 1
    assert index_keys(svc, "f") == before_keys
    listed = svc.list_faces(collection_id="f")["Faces"]
    assert len(listed) == 1
    r = svc.search_faces_by_image(collection_id="f", image={"Bytes": data},
                                  face_match_threshold=0)
    assert [m["Face"]["FaceId"] for m in r["FaceMatches"]] == [listed[0]["FaceId"]]
    # and the next IndexFaces works normally
    done = svc.index_faces(collection_id="f", image={"Bytes": data}, max_faces=1)
    assert face_count(svc, "f") == 2
    assert bodies(svc)[-1]["result"]["face_ids"] == [done["FaceRecords"][0]["Face"]["FaceId"]]
    keys, live = index_keys(svc, "f")
    assert keys == live and len(keys) == 2
    assert svc.verify_ledger()["ok"]


# --- retention through the real face store ------------------------------------------------------


def test_retention_sweep_expires_indexed_faces_from_catalog_and_index(
        svc: FaceService, faces_dir: Path) -> None:
    svc.create_collection(collection_id="short")
    svc.put_collection_policy("short", {"RetentionDays": 30}, ctx=ADMIN)
    data = photo(faces_dir, "Ricardo_Lagos", "0001")
    old = svc.index_faces(collection_id="short", image={"Bytes": data},
                          max_faces=1)["FaceRecords"][0]["Face"]["FaceId"]
    new = svc.index_faces(collection_id="short", image={"Bytes": photo(
        faces_dir, "Ricardo_Lagos", "0002")}, max_faces=1)["FaceRecords"][0]["Face"]["FaceId"]
    r = schema.retention
    with svc.engine.begin() as conn:  # 31 days pass for the first face only
        conn.execute(r.update().where(r.c.face_id == old).values(
            since=format_time(utc_now() - timedelta(days=31))))
    swept = svc.sweep_retention()
    assert swept["ExpiredFaces"] == {"short": [old]}
    assert [f["FaceId"] for f in svc.list_faces(collection_id="short")["Faces"]] == [new]
    keys, live = index_keys(svc, "short")
    assert keys == live and len(keys) == 1
    expired = [e for e in bodies(svc) if e["operation"] == "ExpireFaces"]
    assert expired[0]["result"]["face_ids"] == [old]


# --- API keys -----------------------------------------------------------------------------------


def test_key_changes_are_ledger_events_without_the_secret(tmp_path: Path) -> None:
    env = {"FACELEDGER_DATA_DIR": str(tmp_path / "data")}
    runner = CliRunner()
    created = runner.invoke(main, ["keys", "create", "kiosk", "-o", "DetectFaces",
                                   "-c", "lobby-*", "--json"], env=env)
    assert created.exit_code == 0, created.output
    issued = json.loads(created.stdout)
    revoked = runner.invoke(main, ["keys", "revoke", issued["AccessKeyId"]], env=env)
    assert revoked.exit_code == 0, revoked.output
    bad = runner.invoke(main, ["keys", "create", "x", "-o", "Nope", "-c", "*"], env=env)
    assert bad.exit_code == 2 and "InvalidParameterException" in bad.output
    svc = FaceService(Settings(data_dir=tmp_path / "data"))
    try:
        events = bodies(svc)
        assert [e["operation"] for e in events] == ["CreateAccessKey", "RevokeAccessKey"]
        made, gone = events
        assert made["result"] == {"access_key_id": issued["AccessKeyId"], "name": "kiosk",
                                  "operations": ["DetectFaces"], "collections": ["lobby-*"],
                                  "rate_limit": None, "admin": False}
        assert gone["result"] == {"access_key_id": issued["AccessKeyId"], "name": "kiosk"}
        assert all(e["principal"] == "local" and e["model_version"] is None for e in events)
        assert issued["SecretAccessKey"] not in json.dumps(events)
        assert svc.verify_ledger()["ok"]
    finally:
        svc.engine.dispose()
