"""Stored-video jobs through the service: persons, search at the right timestamps, pages,
idempotency, errors, ledger, review, and jobs that survive a stopped server.

The video is generated from LFW photos (tests/videos.py) with ground truth for every frame:
two people moving and changing size, and a cut after which they swap sides. One detection job
and one search job are shared by the module (analysis is the expensive part).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from PIL import Image

from faceledger.context import RequestContext
from faceledger.errors import (
    AccessDeniedException,
    IdempotentParameterMismatchException,
    InvalidParameterException,
    InvalidPaginationTokenException,
    InvalidS3ObjectException,
    LimitExceededException,
    ResourceNotFoundException,
    VideoTooLargeException,
)
from faceledger.server.storage import build_resolver
from faceledger.service import FaceService
from faceledger.settings import Settings
from faceledger.video.jobs import jobs as jobs_table
from faceledger.vision.types import Box

from videos import PEOPLE, Truth, make_video

BUCKET = "videos"
ENROLLED, OTHER = PEOPLE  # ENROLLED is in the collection (from another photo), OTHER is not
RATE = 4.0


@dataclass
class VideoWorld:
    root: Path
    settings: Settings
    service: FaceService
    truth: Truth
    face_ids: dict[str, str]
    detection: dict[str, Any]
    search: dict[str, Any]
    search_job: str


def wait(service: FaceService, job_id: str, kind: str = "search",
         timeout: float = 120.0) -> dict[str, Any]:
    get = service.get_face_search if kind == "search" else service.get_face_detection
    deadline = time.monotonic() + timeout
    while True:
        out: dict[str, Any] = get(job_id)
        if out["JobStatus"] != "IN_PROGRESS":
            return out
        assert time.monotonic() < deadline, f"job {job_id} still IN_PROGRESS"
        time.sleep(0.25)


def all_pages(service: FaceService, job_id: str, kind: str, **kw: Any) -> list[dict[str, Any]]:
    get = service.get_face_search if kind == "search" else service.get_face_detection
    key = "Persons" if kind == "search" else "Faces"
    out: list[dict[str, Any]] = []
    token = None
    while True:
        page = get(job_id, next_token=token, **kw)
        out.extend(page[key])
        token = page.get("NextToken")
        if token is None:
            return out


def truth_person(truth: Truth, t_ms: int, bb: dict[str, float]) -> str | None:
    """Which true person a returned BoundingBox covers (IoU > 0.3), if any."""
    w, h = truth.width, truth.height
    box = Box(bb["Left"] * w, bb["Top"] * h, (bb["Left"] + bb["Width"]) * w,
              (bb["Top"] + bb["Height"]) * h)
    best = max(PEOPLE, key=lambda p: box.iou(Box(*truth.visible(p, t_ms))))
    return best if box.iou(Box(*truth.visible(best, t_ms))) > 0.3 else None


def video_service(root: Path, pipeline_of: FaceService, **extra: Any) -> FaceService:
    settings = Settings(data_dir=root / "data", local_buckets={BUCKET: root / "bucket"},
                        video_sample_rate=RATE, **extra)
    return FaceService(settings, pipeline=pipeline_of.pipeline,
                       resolver=build_resolver(settings))


@pytest.fixture(scope="module")
def video_world(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path,
                service: FaceService) -> Iterator[VideoWorld]:
    root = tmp_path_factory.mktemp("video")
    (root / "bucket").mkdir()
    truth = make_video(faces_dir, root / "bucket" / "two-people.mp4")
    svc = video_service(root, service)
    svc.create_collection("video-search")
    face_ids = {}
    for name in (ENROLLED, "George_W_Bush", "Tony_Blair"):
        photo = sorted((faces_dir / "lfw" / name).glob("*.jpg"))[1]  # not the video's photo
        rec = svc.index_faces("video-search", photo.read_bytes(), external_image_id=name)
        face_ids[name] = rec["FaceRecords"][0]["Face"]["FaceId"]
    ref = {"S3Object": {"Bucket": BUCKET, "Name": "two-people.mp4"}}
    det = svc.start_face_detection(ref, job_tag="detect")["JobId"]
    ctx = RequestContext(principal="analyst", purpose="test", case="CASE-1")
    found = svc.start_face_search(ref, "video-search", job_tag="search", ctx=ctx)["JobId"]
    detection = wait(svc, det, "detection")
    search = wait(svc, found, "search")
    yield VideoWorld(root, svc.settings, svc, truth, face_ids, detection, search, found)
    svc.close()


def test_detection_job(video_world: VideoWorld) -> None:
    out = video_world.detection
    assert out["JobStatus"] == "SUCCEEDED", out.get("StatusMessage")
    assert out["JobTag"] == "detect"
    meta = out["VideoMetadata"]
    assert (meta["Codec"], meta["FrameWidth"], meta["FrameHeight"]) == ("h264", 480, 270)
    assert meta["FrameRate"] == 10.0 and meta["DurationMillis"] == 4000
    faces = out["Faces"]
    stamps = sorted({f["Timestamp"] for f in faces})
    assert len(stamps) >= RATE * 4 - 1  # every sample of the 4 s video
    assert [f["Timestamp"] for f in faces] == sorted(f["Timestamp"] for f in faces)
    for person in PEOPLE:  # every person found in nearly every sample, at the true place
        hits = {f["Timestamp"] for f in faces
                if truth_person(video_world.truth, f["Timestamp"], f["Face"]["BoundingBox"])
                == person}
        assert len(hits) >= 0.8 * len(stamps), (person, len(hits), len(stamps))
    assert all(truth_person(video_world.truth, f["Timestamp"], f["Face"]["BoundingBox"])
               for f in faces), "a face was reported where there is none"


def test_every_person_found_with_a_stable_index(video_world: VideoWorld) -> None:
    persons = all_pages(video_world.service, video_world.search_job, "search")
    by_index: dict[int, set[str | None]] = {}
    for p in persons:
        who = truth_person(video_world.truth, p["Timestamp"], p["Person"]["BoundingBox"])
        by_index.setdefault(p["Person"]["Index"], set()).add(who)
    # one index per true person, across moves, size changes and the cut (sides swap)
    assert sorted(by_index) == [0, 1]
    assert sorted(next(iter(v)) or "" for v in by_index.values()) == sorted(PEOPLE)
    assert all(len(v) == 1 for v in by_index.values()), by_index


def test_search_finds_the_enrolled_person_at_the_right_timestamps(
        video_world: VideoWorld) -> None:
    out = video_world.search
    assert out["JobStatus"] == "SUCCEEDED", out.get("StatusMessage")
    assert out["FacesSearched"] == 3 and out["PersonsSearched"] == 2
    assert out["ExpectedFalseMatches"] == pytest.approx(out["FalseMatchRate"] * 3)
    assert out["FaceMatchThreshold"] >= 99
    persons = all_pages(video_world.service, video_world.search_job, "search")
    matched = [p for p in persons if p["FaceMatches"]]
    for p in persons:
        who = truth_person(video_world.truth, p["Timestamp"], p["Person"]["BoundingBox"])
        ids = {m["Face"]["FaceId"] for m in p["FaceMatches"]}
        if who == ENROLLED:
            assert ids == {video_world.face_ids[ENROLLED]}, p["Timestamp"]
        else:
            assert not ids, (p["Timestamp"], who)
    enrolled_stamps = {p["Timestamp"] for p in persons if truth_person(
        video_world.truth, p["Timestamp"], p["Person"]["BoundingBox"]) == ENROLLED}
    assert {p["Timestamp"] for p in matched} == enrolled_stamps


def test_pages_and_sort_orders(video_world: VideoWorld) -> None:
    svc, job = video_world.service, video_world.search_job
    whole = svc.get_face_search(job)["Persons"]
    paged = all_pages(svc, job, "search", max_results=7)
    assert paged == whole
    by_index = all_pages(svc, job, "search", sort_by="INDEX", max_results=5)
    assert [(p["Person"]["Index"], p["Timestamp"]) for p in by_index] == sorted(
        (p["Person"]["Index"], p["Timestamp"]) for p in whole)
    first = svc.get_face_search(job, max_results=3)
    with pytest.raises(InvalidPaginationTokenException):  # a token of another order
        svc.get_face_search(job, next_token=first["NextToken"], sort_by="INDEX")
    with pytest.raises(InvalidPaginationTokenException):
        svc.get_face_search(job, next_token="not-a-token")
    with pytest.raises(ResourceNotFoundException):
        svc.get_face_search(uuid.uuid4().hex)
    with pytest.raises(ResourceNotFoundException):  # a detection job is not a search job
        svc.get_face_search(video_world.detection["JobId"])
    with pytest.raises(ResourceNotFoundException):  # another principal's job
        svc.get_face_search(job, ctx=RequestContext(principal="someone-else"))


def test_ledger_events_of_the_job(video_world: VideoWorld) -> None:
    events = [e for e in video_world.service.ledger.scan()
              if e.body and "FaceSearchJob" in e.body]
    assert events, "no FaceSearchJob event"
    body = json.loads(events[-1].body)
    assert body["purpose"] == "test" and body["case"] == "CASE-1"
    assert body["principal"] == "analyst"
    assert len(body["images"]) == 1 and len(body["images"][0]) == 64  # the video's SHA-256
    assert body["thresholds"]["FaceMatchThreshold"] >= 99
    assert body["result"]["persons"] == 2 and body["result"]["matched_persons"] == 1
    assert body["result"]["face_ids"] == [video_world.face_ids[ENROLLED]]
    reads = [json.loads(e.body) for e in video_world.service.ledger.scan()
             if e.body and '"GetFaceSearch"' in e.body]
    assert reads and all(r["params"]["JobId"] for r in reads)
    assert all(r["result"]["status"] == "SUCCEEDED" for r in reads)  # polls leave no event


def test_client_request_token(video_world: VideoWorld) -> None:
    svc = video_world.service
    ref = {"S3Object": {"Bucket": BUCKET, "Name": "two-people.mp4"}}
    ctx = RequestContext(principal="tokens")
    first = svc.start_face_detection(ref, client_request_token="tok-1", ctx=ctx)
    again = svc.start_face_detection(ref, client_request_token="tok-1", ctx=ctx)
    assert first == again
    with pytest.raises(IdempotentParameterMismatchException):
        svc.start_face_detection(ref, client_request_token="tok-1", job_tag="other", ctx=ctx)
    wait(svc, first["JobId"], "detection")


def test_bad_requests(video_world: VideoWorld) -> None:
    svc, bucket = video_world.service, video_world.root / "bucket"
    spool = video_world.root / "data" / "video-spool"
    spooled = set(spool.glob("*"))
    (bucket / "notes.mp4").write_text("not a video")
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    frames[0].save(bucket / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    cases: list[tuple[dict[str, Any], type[Exception], str | None]] = [
        ({"Bucket": BUCKET, "Name": "missing.mp4"}, InvalidS3ObjectException, None),
        ({"Bucket": "no-such-bucket", "Name": "x.mp4"}, InvalidS3ObjectException, None),
        ({"Bucket": BUCKET, "Name": "../escape.mp4"}, InvalidS3ObjectException, None),
        ({"Bucket": BUCKET, "Name": "notes.mp4"}, InvalidParameterException, "media file"),
        ({"Bucket": BUCKET, "Name": "anim.gif"}, InvalidParameterException,
         "codec gif is not supported"),
    ]
    for ref, error, text in cases:
        with pytest.raises(error, match=text):
            svc.start_face_detection({"S3Object": ref})
    ref = {"S3Object": {"Bucket": BUCKET, "Name": "two-people.mp4"}}
    with pytest.raises(InvalidParameterException, match="no SNS endpoint"):
        svc.start_face_detection(ref, notification_channel={
            "SNSTopicArn": "arn:aws:sns:us-east-1:123456789012:t",
            "RoleArn": "arn:aws:iam::123456789012:role/r"})
    with pytest.raises(ResourceNotFoundException):
        svc.start_face_search(ref, "no-such-collection")
    with pytest.raises(InvalidParameterException):
        svc.start_face_detection(ref, face_attributes="SOME")
    small = video_service(video_world.root, svc, max_video_bytes=1000)
    with pytest.raises(VideoTooLargeException):
        small.start_face_detection(ref)
    short = video_service(video_world.root, svc, max_video_seconds=1.0)
    with pytest.raises(VideoTooLargeException, match="lasts"):
        short.start_face_detection(ref)
    assert set(spool.glob("*")) <= spooled  # refused requests leave no copy of the video


def _insert_job(svc: FaceService, *, heartbeat: float, attempts: int = 1,
                owner: str = "elsewhere") -> str:
    """A job row as another server (or a killed one) would have left it."""
    job_id = uuid.uuid4().hex
    with svc.engine.begin() as conn:
        svc.video_jobs.insert(conn, {
            "job_id": job_id, "kind": "StartFaceDetection", "status": "IN_PROGRESS",
            "principal": "local", "request_id": str(uuid.uuid4()), "request_hash": "x",
            "video": {"Bucket": BUCKET, "Name": "two-people.mp4"}, "params": {},
            "created_at": time.time(), "owner": owner, "heartbeat": heartbeat,
            "attempts": attempts})
    return job_id


def test_too_many_jobs(video_world: VideoWorld) -> None:
    svc = video_service(video_world.root, video_world.service, video_max_jobs=1,
                        video_job_stale_seconds=3600)
    busy = _insert_job(svc, heartbeat=time.time() + 3600)  # alive elsewhere
    try:
        with pytest.raises(LimitExceededException):
            svc.start_face_detection({"S3Object": {"Bucket": BUCKET, "Name": "two-people.mp4"}})
    finally:
        with svc.engine.begin() as conn:
            conn.execute(sa.delete(jobs_table).where(jobs_table.c.job_id == busy))
        svc.close()


def test_a_stopped_servers_job_is_resumed_or_failed(video_world: VideoWorld) -> None:
    # a server stopped mid-job hands it over: the next one resumes it at once (no stale wait)
    first = video_service(video_world.root, video_world.service)
    ref = {"S3Object": {"Bucket": BUCKET, "Name": "two-people.mp4"}}
    resumed = first.start_face_detection(ref, job_tag="stopped")["JobId"]
    first.close()
    assert first.get_face_detection(resumed)["JobStatus"] == "IN_PROGRESS"
    # a job that already used its attempts (its server died each time): FAILED with the reason
    svc = video_service(video_world.root, video_world.service)
    exhausted = _insert_job(svc, heartbeat=time.time() - 3600, attempts=3)
    try:
        svc.start_video_jobs()
        failed = wait(svc, exhausted, "detection")
        assert failed["JobStatus"] == "FAILED"
        assert "stopped each time" in failed["StatusMessage"]
        done = wait(svc, resumed, "detection")
        assert done["JobStatus"] == "SUCCEEDED", done.get("StatusMessage")
        assert done["Faces"] and done["VideoMetadata"]["Codec"] == "h264"
    finally:
        svc.close()


def test_identification_mode_holds_video_matches_for_review(video_world: VideoWorld,
                                                            faces_dir: Path) -> None:
    svc = video_world.service
    svc.create_collection("video-review")
    svc.index_faces("video-review", _photo(faces_dir, ENROLLED), external_image_id=ENROLLED)
    svc.put_collection_policy("video-review", {"IdentificationMode": True,
                                               "RequirePurpose": True})
    ref = {"S3Object": {"Bucket": BUCKET, "Name": "two-people.mp4"}}
    with pytest.raises(AccessDeniedException, match="purpose"):  # refused before any analysis
        svc.start_face_search(ref, "video-review", ctx=RequestContext(principal="analyst"))
    ctx = RequestContext(principal="analyst", purpose="investigation", case="CASE-2")
    job = svc.start_face_search(ref, "video-review", ctx=ctx)["JobId"]
    out = wait(svc, job)
    assert out["JobStatus"] == "SUCCEEDED"
    assert out["ReviewRequired"] is True and len(out["ReviewCandidates"]) == 1
    assert all(not p["FaceMatches"] for p in out["Persons"])
    held = svc.list_review_candidates("video-review")
    assert any(c["CaseReference"] == "CASE-2" for c in held["Candidates"])


def _photo(faces_dir: Path, name: str) -> bytes:
    return sorted((faces_dir / "lfw" / name).glob("*.jpg"))[1].read_bytes()
