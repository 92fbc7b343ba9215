"""The four stored-video operations with the unmodified boto3 client against a real server:
video from a real S3-protocol server (moto), completion published to an SNS topic with an SQS
queue subscribed (moto), and a `faceledger serve` process killed with SIGKILL mid-job."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psutil
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from faceledger.server import RekognitionApp, running
from faceledger.server.keys import KeyStore
from faceledger.server.storage import build_resolver
from faceledger.service import FaceService
from faceledger.settings import Settings

from videos import PEOPLE, make_video

REGION = "us-east-1"
S3_BUCKET = "faceledger-videos"
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})
MOTO = {"aws_access_key_id": "moto", "aws_secret_access_key": "moto", "region_name": REGION}


@dataclass
class Served:
    url: str
    rekognition: Any
    sqs: Any
    queue_url: str
    topic_arn: str
    face_id: str


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path, service: FaceService,
           moto_endpoint: str) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("video-server")
    video = root / "two-people.mp4"
    make_video(faces_dir, video, seconds=3.0)
    session = boto3.session.Session()
    s3 = session.client("s3", endpoint_url=moto_endpoint,
                        config=Config(s3={"addressing_style": "path"}), **MOTO)
    s3.create_bucket(Bucket=S3_BUCKET)
    s3.upload_file(str(video), S3_BUCKET, "clips/two-people.mp4")
    sns = session.client("sns", endpoint_url=moto_endpoint, **MOTO)
    sqs = session.client("sqs", endpoint_url=moto_endpoint, **MOTO)
    topic = sns.create_topic(Name="AmazonRekognition-jobs")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="rekognition-done")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    settings = Settings(
        data_dir=root / "data", s3_buckets=[S3_BUCKET], s3_endpoint_url=moto_endpoint,
        s3_region=REGION, s3_access_key_id="moto", s3_secret_access_key="moto",
        sns_endpoint_url=moto_endpoint, sns_access_key_id="moto", sns_secret_access_key="moto",
        video_sample_rate=3.0)
    svc = FaceService(settings, pipeline=service.pipeline, resolver=build_resolver(settings))
    svc.create_collection("people")
    photo = sorted((faces_dir / "lfw" / PEOPLE[0]).glob("*.jpg"))[1]
    face_id = svc.index_faces("people", photo.read_bytes())["FaceRecords"][0]["Face"]["FaceId"]
    keys = KeyStore(svc.engine, secrets.token_bytes(32))
    key = keys.create("video", ["*"], ["*"], sns_topics=[topic],  # may notify this topic only
                      s3_objects=["*"])
    app = RekognitionApp(svc, keys, settings, warm_up=False)
    with running(app) as url:
        client = session.client(
            "rekognition", endpoint_url=url, region_name=REGION,
            aws_access_key_id=key.info.access_key_id,
            aws_secret_access_key=key.secret_access_key, config=NO_RETRIES)
        yield Served(url, client, sqs, queue_url, topic, face_id)
    app.close()
    svc.close()


def poll(get: Any, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        out: dict[str, Any] = get(JobId=job_id)
        if out["JobStatus"] != "IN_PROGRESS":
            return out
        assert time.monotonic() < deadline, f"job {job_id} did not end"
        # the same request again: signed in a later second (a signature is served once)
        time.sleep(1.05 - time.time() % 1.0)


VIDEO = {"S3Object": {"Bucket": S3_BUCKET, "Name": "clips/two-people.mp4"}}
ROLE = "arn:aws:iam::123456789012:role/rekognition-sns"


def test_the_four_operations_with_boto3(served: Served) -> None:
    rk = served.rekognition
    channel = {"SNSTopicArn": served.topic_arn, "RoleArn": ROLE}
    det = rk.start_face_detection(Video=VIDEO, FaceAttributes="ALL", JobTag="clip-1",
                                  NotificationChannel=channel)["JobId"]
    search = rk.start_face_search(Video=VIDEO, CollectionId="people", FaceMatchThreshold=99.0,
                                  JobTag="clip-1", NotificationChannel=channel)["JobId"]
    done = poll(rk.get_face_detection, det)
    assert done["JobStatus"] == "SUCCEEDED", done.get("StatusMessage")
    assert done["VideoMetadata"]["Codec"] == "h264" and done["JobTag"] == "clip-1"
    assert done["Faces"] and all(0 <= f["Face"]["BoundingBox"]["Left"] <= 1
                                 for f in done["Faces"])
    page = rk.get_face_detection(JobId=det, MaxResults=2)
    assert len(page["Faces"]) == 2 and page["NextToken"]
    # MaxResults above 1000 is capped at 1000, as by Rekognition
    rest = rk.get_face_detection(JobId=det, MaxResults=5000, NextToken=page["NextToken"])
    assert page["Faces"] + rest["Faces"] == done["Faces"]
    found = poll(rk.get_face_search, search)
    assert found["JobStatus"] == "SUCCEEDED", found.get("StatusMessage")
    persons = rk.get_face_search(JobId=search, SortBy="INDEX")["Persons"]
    assert {p["Person"]["Index"] for p in persons} == {0, 1}
    matched = {p["Person"]["Index"] for p in persons if p.get("FaceMatches")}
    assert len(matched) == 1
    assert all(m["Face"]["FaceId"] == served.face_id and m["Similarity"] >= 99.0
               for p in persons for m in p.get("FaceMatches", []))
    # both completions reach the SQS queue subscribed to the topic, in Rekognition's format
    messages: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 30
    while len(messages) < 2 and time.monotonic() < deadline:
        got = served.sqs.receive_message(QueueUrl=served.queue_url, MaxNumberOfMessages=10,
                                         WaitTimeSeconds=1)
        for msg in got.get("Messages", []):
            body = json.loads(json.loads(msg["Body"])["Message"])
            messages[body["JobId"]] = body
    assert set(messages) == {det, search}
    assert messages[det]["Status"] == "SUCCEEDED" and messages[det]["API"] == "StartFaceDetection"
    assert messages[search]["API"] == "StartFaceSearch" and messages[search]["JobTag"] == "clip-1"
    assert messages[det]["Video"] == {"S3ObjectName": "clips/two-people.mp4",
                                      "S3Bucket": S3_BUCKET}


def test_errors_with_boto3(served: Served) -> None:
    rk = served.rekognition
    cases: list[tuple[Any, str]] = [
        (lambda: rk.start_face_detection(
            Video={"S3Object": {"Bucket": S3_BUCKET, "Name": "missing.mp4"}}),
         "InvalidS3ObjectException"),
        (lambda: rk.start_face_search(Video=VIDEO, CollectionId="nope"),
         "ResourceNotFoundException"),
        (lambda: rk.get_face_detection(JobId="0" * 32), "ResourceNotFoundException"),
        (lambda: rk.get_face_search(JobId="0" * 32, NextToken="garbage"),
         "InvalidPaginationTokenException"),
    ]
    for call, code in cases:
        with pytest.raises(ClientError) as exc:
            call()
        assert code_of(exc) == code
    first = rk.start_face_detection(Video=VIDEO, ClientRequestToken="same-request")["JobId"]
    time.sleep(1.05 - time.time() % 1.0)  # a retry is signed anew (the same bytes: a repeat)
    again = rk.start_face_detection(Video=VIDEO, ClientRequestToken="same-request")["JobId"]
    assert first == again
    with pytest.raises(ClientError) as exc:
        rk.start_face_detection(Video=VIDEO, ClientRequestToken="same-request", JobTag="x")
    assert code_of(exc) == "IdempotentParameterMismatchException"
    poll(rk.get_face_detection, first)


# --- a `faceledger serve` process killed mid-job ------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    """`faceledger serve` with two inference worker processes, in a process group of its own
    (a SIGKILL of the group leaves no worker behind, stopped or not)."""
    return subprocess.Popen(
        [sys.executable, "-c", "from faceledger.cli import main; main()", "serve", "--dev",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True)


def _group(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    """The server process and every process it started."""
    server = psutil.Process(proc.pid)
    return [server, *server.children(recursive=True)]


def _opened(proc: subprocess.Popen[str], path: Path) -> bool:
    """Whether the server (or a process of its) has `path` open."""
    for p in _group(proc):
        try:
            if any(Path(f.path) == path for f in p.open_files()):
                return True
        except psutil.NoSuchProcess:
            pass
    return False


def _client(port: int, proc: subprocess.Popen[str]) -> Any:
    client = boto3.session.Session().client(
        "rekognition", endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION,
        aws_access_key_id="dev", aws_secret_access_key="dev", config=NO_RETRIES)
    deadline = time.monotonic() + 90
    while True:
        try:
            client.get_face_detection(JobId="0" * 32)
        except ClientError:
            return client  # answering (ResourceNotFoundException)
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.3)


@pytest.mark.slow
def test_killed_server_mid_job(tmp_path: Path, faces_dir: Path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    make_video(faces_dir, bucket / "long.mp4", seconds=8.0, audio=False)
    env = {**os.environ, "FACELEDGER_DATA_DIR": str(tmp_path / "data"),
           "FACELEDGER_LOCAL_BUCKETS": json.dumps({"clips": str(bucket)}),
           "FACELEDGER_VIDEO_SAMPLE_RATE": "5", "FACELEDGER_VIDEO_JOB_STALE_SECONDS": "2"}
    port = _free_port()
    proc = _serve(env, port)
    try:
        rk = _client(port, proc)  # answering: its inference workers have loaded their models
        # The job is held inside its analysis, however fast the machine: the inference workers
        # are stopped (SIGSTOP), so the first frame sent to them is never answered.
        for worker in _group(proc)[1:]:
            if "resource_tracker" not in " ".join(worker.cmdline()):
                worker.suspend()
        job = rk.start_face_detection(
            Video={"S3Object": {"Bucket": "clips", "Name": "long.mp4"}})["JobId"]
        spool = tmp_path / "data" / "video-spool" / job
        deadline = time.monotonic() + 120
        while not _opened(proc, spool):  # the job's runner is decoding the video
            assert time.monotonic() < deadline, "the job did not start its analysis"
            time.sleep(0.1)
        assert rk.get_face_detection(JobId=job)["JobStatus"] == "IN_PROGRESS"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the server and its (stopped) workers
        proc.wait(timeout=30)
    assert spool.is_file()  # what the killed server left: the job is resumed from it
    proc = _serve(env, port)
    try:
        rk = _client(port, proc)
        out = poll(rk.get_face_detection, job, timeout=180)
        # resumed from the start by the restarted server (the first start was killed)
        assert out["JobStatus"] == "SUCCEEDED", out.get("StatusMessage")
        stamps = {f["Timestamp"] for f in out["Faces"]}
        assert max(stamps) >= 7000  # the whole video, not the part before the kill
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert not list((tmp_path / "data" / "video-spool").glob("*"))


def test_s3_video_download_limits(served: Served, moto_endpoint: str, tmp_path: Path) -> None:
    from faceledger.errors import InvalidS3ObjectException, VideoTooLargeException
    from faceledger.server.storage import S3Buckets

    s3 = S3Buckets.from_settings(Settings(
        data_dir=tmp_path, s3_buckets=[S3_BUCKET], s3_endpoint_url=moto_endpoint,
        s3_region=REGION, s3_access_key_id="moto", s3_secret_access_key="moto"))
    dest = tmp_path / "video"
    with pytest.raises(VideoTooLargeException):  # refused from its size, before the download
        s3.download(S3_BUCKET, "clips/two-people.mp4", None, dest, max_bytes=1000)
    assert not dest.exists()
    with pytest.raises(InvalidS3ObjectException):
        s3.download(S3_BUCKET, "clips/none.mp4", None, dest, max_bytes=10**9)
    s3.download(S3_BUCKET, "clips/two-people.mp4", None, dest, max_bytes=10**9)
    assert dest.stat().st_size > 1000
