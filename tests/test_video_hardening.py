"""Stored video, issue 18 §2: each finding reproduced the way a user or an attacker meets it,
with real H.264 clips written in the test by PyAV from LFW photos and a real server on
127.0.0.1 called through the unmodified boto3 client.

- frames whose rows PyAV pads (widths 250, 500, 854, ...) once crashed the embedder;
- a shot cut from one person to another in the same place carried the first one's matches;
- a JPEG (even named .mp4, even 14000x14000) was accepted as a video;
- NextToken offsets of 2^63 and more gave 500; a garbage video's message showed the data dir;
- the job limit was racy and server-wide; a killed inference worker failed the next request.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from PIL import Image

from faceledger.context import RequestContext
from faceledger.errors import LimitExceededException, VideoTooLargeException
from faceledger.sdk import sign_each_call
from faceledger.server import RekognitionApp, running
from faceledger.server.keys import KeyStore
from faceledger.server.storage import build_resolver
from faceledger.service import FaceService
from faceledger.settings import Settings
from faceledger.video.analysis import analyse
from faceledger.video.tracks import link_distance_for

from videos import face_crop

BUCKET = "clips"
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})


def write_clip(out: Path, shots: list[tuple[np.ndarray | None, float]], *, size: tuple[int, int],
               fps: int = 10, face_at: tuple[int, int] = (40, 30), seed: int = 0) -> None:
    """An H.264 clip of `shots` (a face crop, or None for no face, and seconds each) pasted at
    `face_at` on one textured background: a cut changes the face only, not the place."""
    import av

    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    back = np.clip(np.stack([x * 200 / w, y * 200 / h, np.full_like(x, 120)], axis=-1)
                   + rng.normal(0, 5, (h, w, 3)) + 20, 0, 255).astype(np.uint8)
    odd = w % 2 or h % 2
    with av.open(str(out), "w") as container:
        vs = container.add_stream("libx264", rate=fps)
        vs.width, vs.height = w, h
        vs.pix_fmt = "yuv444p" if odd else "yuv420p"  # 4:2:0 needs even sizes
        vs.options = {"crf": "18", "preset": "veryfast"}
        for crop, seconds in shots:
            for _ in range(int(round(seconds * fps))):
                canvas = back.copy()
                if crop is not None:
                    ch, cw = crop.shape[:2]
                    left, top = face_at
                    canvas[top:top + ch, left:left + cw] = crop
                for packet in vs.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                    container.mux(packet)
        for packet in vs.encode():
            container.mux(packet)


def photo(faces_dir: Path, person: str, n: int = 0) -> Path:
    return sorted((faces_dir / "lfw" / person).glob("*.jpg"))[n]


# --- frames of every width ---------------------------------------------------------------------

@pytest.mark.parametrize("size", [(250, 250), (500, 500), (854, 480), (1280, 720),
                                  (1920, 1080), (333, 251), (161, 201)])
def test_frames_of_every_width_are_analysed(size: tuple[int, int], faces_dir: Path,
                                            service: FaceService, tmp_path: Path) -> None:
    w, h = size
    crop = face_crop(photo(faces_dir, "Colin_Powell"), min(140, int(min(w, h) * 0.6)))
    clip = tmp_path / f"{w}x{h}.mp4"
    write_clip(clip, [(crop, 1.0)], size=size, face_at=(w // 8, h // 10))
    import av

    with av.open(str(clip)) as c:  # the premise: PyAV pads these frames' rows
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    if w * 3 % 64:
        assert not frame.flags["C_CONTIGUOUS"], "PyAV no longer pads rows: premise gone"
    found = analyse(clip, service.pipeline, 2.0)
    assert found.samples == 2
    assert len(found.persons) == 1 and len(found.persons[0].sightings) == 2


# --- shot cuts -----------------------------------------------------------------------------------

def _search_table(svc: FaceService, video: str) -> list[tuple[int, int, list[str]]]:
    """(timestamp, person index, matched ExternalImageIds) of each frame of a search job."""
    ref = {"S3Object": {"Bucket": BUCKET, "Name": video}}
    job = svc.start_face_search(ref, "cut", face_match_threshold=95.0)["JobId"]
    deadline = time.monotonic() + 300
    while (out := svc.get_face_search(job, sort_by="TIMESTAMP"))["JobStatus"] == "IN_PROGRESS":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert out["JobStatus"] == "SUCCEEDED", out.get("StatusMessage")
    return [(p["Timestamp"], p["Person"]["Index"],
             sorted({m["Face"]["ExternalImageId"] for m in p["FaceMatches"]}))
            for p in out["Persons"]]


@pytest.fixture(scope="module")
def cut_service(tmp_path_factory: pytest.TempPathFactory, service: FaceService,
                faces_dir: Path) -> Iterator[FaceService]:
    root = tmp_path_factory.mktemp("cuts")
    (root / "bucket").mkdir()
    settings = Settings(data_dir=root / "data", local_buckets={BUCKET: root / "bucket"},
                        video_sample_rate=2.0)
    svc = FaceService(settings, pipeline=service.pipeline, resolver=build_resolver(settings))
    svc.create_collection("cut")
    for person in ("Colin_Powell", "Tony_Blair"):  # another photo than the video's
        svc.index_faces("cut", photo(faces_dir, person, 1).read_bytes(),
                        external_image_id=person)
    yield svc
    svc.close()


def test_a_cut_between_two_people_in_the_same_place(cut_service: FaceService,
                                                    faces_dir: Path) -> None:
    """Colin Powell for 3 s, a hard cut to Tony Blair in the same place for 2 s: no frame of
    Blair carries Powell's match, and Blair is a person of his own."""
    root = cut_service.settings.local_buckets[BUCKET]
    powell = face_crop(photo(faces_dir, "Colin_Powell"), 150)
    blair = face_crop(photo(faces_dir, "Tony_Blair"), 150)
    write_clip(root / "cut.mp4", [(powell, 3.0), (blair, 2.0)], size=(640, 480),
               face_at=(245, 120))
    table = _search_table(cut_service, "cut.mp4")
    print("\ncut Colin_Powell -> Tony_Blair at 3000 ms (timestamp, person, matches):")
    for row in table:
        print(f"  {row[0]:>5} ms  person {row[1]}  {', '.join(row[2]) or '-'}")
    before = [r for r in table if r[0] < 3000]
    after = [r for r in table if r[0] >= 3000]
    assert before and after
    assert all("Tony_Blair" not in r[2] for r in before)
    assert all("Colin_Powell" not in r[2] for r in after)
    assert {r[1] for r in before}.isdisjoint({r[1] for r in after})
    assert any(r[2] == ["Colin_Powell"] for r in before)
    assert any(r[2] == ["Tony_Blair"] for r in after)


def _look_alikes(faces_dir: Path, service: FaceService) -> tuple[str, str, float]:
    """The two most alike of 60 LFW people (by template distance of the crops the video
    shows) whose distance is above the tracker's link distance: with model 1.0, within 0.6, the
    distance at which overlap used to link faces (the pair the old tracker merged)."""
    people = sorted(d.name for d in (faces_dir / "lfw").iterdir()
                    if d.is_dir() and len(list(d.glob("*.jpg"))) >= 2)[:60]
    templates = {}
    for name in people:
        crop = face_crop(photo(faces_dir, name), 150)
        canvas = np.full((300, 300, 3), 128, np.uint8)
        canvas[60:60 + crop.shape[0], 75:75 + crop.shape[1]] = crop
        faces = service.pipeline.analyze(canvas)
        if len(faces) == 1 and faces[0].embedding is not None:
            templates[name] = faces[0].embedding.astype(np.float64)
    pairs = sorted((float(np.linalg.norm(templates[a] - templates[b])), a, b)
                   for a, b in combinations(sorted(templates), 2))
    link = link_distance_for(service.pipeline.model_version)
    close = [p for p in pairs if p[0] > link]  # the most alike pair the tracker must not link
    if not close:
        pytest.skip("no pair of these LFW people lies above the link distance")
    d, a, b = close[0]
    return a, b, d


def test_a_cut_between_look_alikes_splits_the_person(cut_service: FaceService,
                                                      faces_dir: Path) -> None:
    a, b, distance = _look_alikes(faces_dir, cut_service)
    root = cut_service.settings.local_buckets[BUCKET]
    write_clip(root / "alike.mp4", [(face_crop(photo(faces_dir, a), 150), 2.0),
                                    (face_crop(photo(faces_dir, b), 150), 2.0)],
               size=(640, 480), face_at=(245, 120))
    found = analyse(root / "alike.mp4", cut_service.pipeline, 2.0)
    rows = sorted((s.timestamp_ms, p.index) for p in found.persons for s in p.sightings)
    print(f"\ncut {a} -> {b} (distance {distance:.3f}) at 2000 ms: {rows}")
    first = {i for t, i in rows if t < 2000}
    second = {i for t, i in rows if t >= 2000}
    assert first and second and first.isdisjoint(second)


# --- the HTTP findings ---------------------------------------------------------------------------

@dataclass
class Served:
    url: str
    client: Any
    bucket: Path
    data_dir: Path
    service: FaceService
    keys: KeyStore


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, service: FaceService,
           faces_dir: Path) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("video-http")
    bucket = root / "bucket"
    bucket.mkdir()
    settings = Settings(data_dir=root / "data", local_buckets={BUCKET: bucket},
                        video_sample_rate=2.0, video_max_jobs=3, video_max_jobs_total=4)
    svc = FaceService(settings, pipeline=service.pipeline, resolver=build_resolver(settings))
    svc.create_collection("people")
    keys = KeyStore(svc.engine, secrets.token_bytes(32))
    key = keys.create("video", ["*"], ["*"], s3_objects=["*"])
    write_clip(bucket / "short.mp4", [(face_crop(photo(faces_dir, "Colin_Powell"), 120), 1.0)],
               size=(320, 240))
    app = RekognitionApp(svc, keys, settings, warm_up=False)
    with running(app) as url:
        yield Served(url, _client(url, key), bucket, settings.data_dir, svc, keys)
    app.close()
    svc.close()


def _client(url: str, key: Any) -> Any:
    # each call signed anew: polls and repeated calls may fall in one second (SECURITY.md)
    return sign_each_call(boto3.session.Session().client(
        "rekognition", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id=key.info.access_key_id, aws_secret_access_key=key.secret_access_key,
        config=NO_RETRIES))


def _refusal(call: Any, **kw: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as exc:
        call(**kw)
    err = exc.value.response["Error"]
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] < 500
    return str(err["Code"]), str(err["Message"])


def _video(name: str) -> dict[str, Any]:
    return {"S3Object": {"Bucket": BUCKET, "Name": name}}


def test_still_images_are_not_videos(served: Served) -> None:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), np.uint8))
    for name, fmt in (("photo.jpg", "JPEG"), ("photo.mp4", "JPEG"), ("photo.png", "PNG"),
                      ("photo.mov", "PNG")):
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        (served.bucket / name).write_bytes(buf.getvalue())
        for op in (served.client.start_face_detection, served.client.start_face_search):
            extra = {"CollectionId": "people"} if op == served.client.start_face_search else {}
            code, message = _refusal(op, Video=_video(name), **extra)
            assert code == "InvalidParameterException" and "still image" in message, name
    # an MJPEG "video" of one frame (FFmpeg's image2 and piped formats): refused too
    import av

    with av.open(str(served.bucket / "one-frame.avi"), "w") as c:
        s = c.add_stream("mjpeg", rate=1)
        s.width, s.height, s.pix_fmt = 320, 240, "yuvj420p"
        for p in [*s.encode(av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24")),
                  *s.encode()]:
            c.mux(p)
    code, message = _refusal(served.client.start_face_detection, Video=_video("one-frame.avi"))
    assert code == "InvalidParameterException" and "still image" in message


def test_a_huge_jpeg_named_mp4_is_refused_without_decoding(served: Served) -> None:
    import psutil

    buf = io.BytesIO()
    Image.new("L", (14000, 14000), 128).save(buf, format="JPEG", quality=50)
    (served.bucket / "huge.mp4").write_bytes(buf.getvalue())
    rss = psutil.Process().memory_info().rss
    code, _ = _refusal(served.client.start_face_detection, Video=_video("huge.mp4"))
    assert code == "InvalidParameterException"
    # the server runs in this process: 196 megapixels decoded would add 200 MB or more
    assert psutil.Process().memory_info().rss - rss < 100 * 1024 * 1024


def test_video_frames_above_the_image_limit_are_refused(served: Served,
                                                        tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", local_buckets={BUCKET: served.bucket},
                        max_decoded_pixels=320 * 240 - 1)
    svc = FaceService(settings, pipeline=served.service.pipeline,
                      resolver=build_resolver(settings))
    try:
        with pytest.raises(VideoTooLargeException, match="320x240"):
            svc.start_face_detection(_video("short.mp4"))
    finally:
        svc.close()


def test_a_garbage_video_names_no_server_path(served: Served) -> None:
    (served.bucket / "garbage.mp4").write_bytes(secrets.token_bytes(4096))
    (served.bucket / "truncated.mp4").write_bytes((served.bucket / "short.mp4").read_bytes()[:700])
    for name in ("garbage.mp4", "truncated.mp4"):
        code, message = _refusal(served.client.start_face_detection, Video=_video(name))
        assert code == "InvalidParameterException"
        assert str(served.data_dir) not in message and "video-spool" not in message
        assert "/" not in message.replace("H.264 in MP4 or MOV", ""), message


def _wait(client: Any, job: str) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while (out := client.get_face_detection(JobId=job))["JobStatus"] == "IN_PROGRESS":
        assert time.monotonic() < deadline
        time.sleep(1.05 - time.time() % 1.0)  # the same request: signed in a later second
    return dict(out)


def test_huge_page_offsets_are_invalid_tokens(served: Served) -> None:
    job = served.client.start_face_detection(Video=_video("short.mp4"))["JobId"]
    assert _wait(served.client, job)["JobStatus"] == "SUCCEEDED"
    page = served.client.get_face_detection(JobId=job, MaxResults=1)
    assert page["NextToken"]  # two sampled frames, one face each
    for offset in (2 ** 63, 2 ** 64, 10 ** 30, -1, 2 ** 63 - 1):
        for raw in (f"o:{offset}:GetFaceDetection/TIMESTAMP/{job}",
                    json.dumps({"j": job, "s": "TIMESTAMP", "o": offset})):  # the old shape
            token = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
            if offset == 2 ** 63 - 1 and raw.startswith("o:"):
                # the largest offset a token may hold: a valid, empty page
                assert served.client.get_face_detection(JobId=job, NextToken=token)[
                    "Faces"] == []
                continue
            code, _ = _refusal(served.client.get_face_detection, JobId=job, NextToken=token)
            assert code == "InvalidPaginationTokenException", raw
            code, _ = _refusal(served.client.get_face_search, JobId=job, NextToken=token)
            assert code == "InvalidPaginationTokenException", raw
    # a token of one order (or operation) is not one of another
    code, _ = _refusal(served.client.get_face_search, JobId=job, NextToken=page["NextToken"])
    assert code == "InvalidPaginationTokenException"


# --- the job limit -------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_job_limit_is_atomic_and_per_key(backend: str, tmp_path: Path, faces_dir: Path,
                                         service: FaceService, request: Any) -> None:
    """Six concurrent starts by one key with a limit of 3 a key: exactly 3 admitted; another
    key still starts (per key), up to the server-wide cap of 4."""
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    # long enough that no job ends while the starts race (one runner thread, 90 samples)
    write_clip(bucket / "long.mp4", [(None, 45.0)], size=(320, 240), fps=4)
    settings = Settings(data_dir=tmp_path / "data", database_url=url,
                        local_buckets={BUCKET: bucket}, video_max_jobs=3,
                        video_max_jobs_total=4)
    svc = FaceService(settings, pipeline=service.pipeline, resolver=build_resolver(settings))
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def start(principal: str) -> None:
        barrier.wait()
        try:
            svc.start_face_detection(_video("long.mp4"),
                                     ctx=RequestContext(principal=principal))
            outcomes.append("admitted")
        except LimitExceededException:
            outcomes.append("limited")

    try:
        threads = [threading.Thread(target=start, args=("key-a",)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["admitted"] * 3 + ["limited"] * 3
        svc.start_face_detection(_video("long.mp4"), ctx=RequestContext(principal="key-b"))
        with pytest.raises(LimitExceededException, match="server"):
            svc.start_face_detection(_video("long.mp4"), ctx=RequestContext(principal="key-c"))
    finally:
        svc.close()
        svc.engine.dispose()  # before the database is dropped


# --- worker death --------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_killed_workers_are_replaced(tmp_path: Path, faces_dir: Path) -> None:
    """`faceledger serve --workers 2`: its workers killed mid-job, and the job still SUCCEEDS
    (its frame is sent again); an idle worker killed, then the next request succeeds."""
    import psutil

    data = tmp_path / "data"
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    write_clip(bucket / "clip.mp4", [(face_crop(photo(faces_dir, "Colin_Powell"), 120), 6.0)],
               size=(320, 240))
    kek = base64.b64encode(secrets.token_bytes(32)).decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACELEDGER_")}
    env.update(FACELEDGER_DATA_DIR=str(data), FACELEDGER_KEY_ENCRYPTION_KEY=kek,
               FACELEDGER_LOCAL_BUCKETS=json.dumps({BUCKET: str(bucket)}),
               FACELEDGER_VIDEO_SAMPLE_RATE="4",
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    settings = Settings(data_dir=data, key_encryption_key=kek)
    from faceledger.db import make_engine

    engine = make_engine(settings.resolved_database_url())
    key = KeyStore.open(settings, engine, create_kek=True).create("w", ["*"], ["*"], s3_objects=["*"])
    engine.dispose()
    held: list[psutil.Process] = []  # workers stopped by the test

    def dead(w: psutil.Process) -> bool:
        try:
            return bool(w.status() == psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return True

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from faceledger.cli import main; main()", "serve", "--host",
         "127.0.0.1", "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        client = _client(f"http://127.0.0.1:{port}", key)
        jpeg = photo(faces_dir, "Colin_Powell").read_bytes()
        deadline = time.monotonic() + 180
        while True:
            try:
                client.detect_faces(Image={"Bytes": jpeg})
                break
            except Exception:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.5)

        def workers() -> list[psutil.Process]:
            """The server's live inference processes (not multiprocessing's resource tracker)."""
            found = []
            for c in psutil.Process(proc.pid).children(recursive=True):
                try:
                    cmd = " ".join(c.cmdline())
                except psutil.Error:  # gone, or dead and not yet reaped by the server
                    continue
                if "multiprocessing" in cmd and "resource_tracker" not in cmd:
                    found.append(c)
            return found

        assert len(workers()) == 2  # both started by the warm-up
        # mid-job, whatever the machine's speed: the workers are stopped before the job starts,
        # so its first frame waits in them until they are killed
        held.extend(workers())
        for w in held:
            w.suspend()
        job = client.start_face_detection(Video=_video("clip.mp4"))["JobId"]
        spool = data / "video-spool" / job
        deadline = time.monotonic() + 120
        while not any(Path(f.path) == spool for f in psutil.Process(proc.pid).open_files()):
            assert time.monotonic() < deadline, "the job did not start its analysis"
            time.sleep(0.1)  # until the job's runner is decoding the video
        for w in held:
            os.kill(w.pid, signal.SIGKILL)  # mid-job: every worker
        out = _wait(client, job)
        assert out["JobStatus"] == "SUCCEEDED", out.get("StatusMessage")
        assert len({f["Timestamp"] for f in out["Faces"]}) >= 20  # 6 s at 4 samples a second
        # an idle worker of the pool that replaced them, killed between requests
        idle = workers()[0]
        os.kill(idle.pid, signal.SIGKILL)
        while not dead(idle):  # dead (not yet reaped by the server) before the next request
            time.sleep(0.05)
        time.sleep(1.05 - time.time() % 1.0)  # the same request: signed in a later second
        assert client.detect_faces(Image={"Bytes": jpeg})["FaceDetails"]
    finally:
        for w in held:  # never left stopped, whatever failed
            if not dead(w):
                w.kill()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
