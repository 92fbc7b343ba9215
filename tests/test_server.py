"""The unmodified boto3 Rekognition client against a real faceledger server on 127.0.0.1
(uvicorn in a thread; one test starts `faceledger serve` as a process), the way a user calls it:
every operation on real faces, images from a real S3-protocol server (moto) and from local
buckets, and every way authentication and permissions can refuse a request."""

from __future__ import annotations

import io
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from PIL import Image

from faceledger.sdk import sign_each_call
from faceledger.server import RekognitionApp, running
from faceledger.server.keys import IssuedKey, KeyStore
from faceledger.server.protocol import snake_case
from faceledger.server.storage import build_resolver
from faceledger.service import FaceService
from faceledger.settings import Settings

REGION = "us-east-1"
S3_BUCKET = "faceledger-photos"
LOCAL_BUCKET = "local-photos"
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})


@dataclass
class World:
    url: str
    settings: Settings
    service: FaceService
    keys: KeyStore
    admin: IssuedKey
    s3: Any  # boto3 S3 client of the moto server
    outside_file: Path

    def client(self, key: IssuedKey | None = None, *, secret: str | None = None,
               key_id: str | None = None, validate: bool = True) -> Any:
        key = key or self.admin
        # tests repeat calls, maybe within one second (the lifecycle's DescribeCollection, the
        # same call in two tests): each is signed anew, as SECURITY.md's "Replayed requests"
        # tells such programs to; an unsigned repeat is refused (test_probe_three_auth.py)
        return sign_each_call(boto3.session.Session().client(
            "rekognition", endpoint_url=self.url, region_name=REGION,
            aws_access_key_id=key_id or key.info.access_key_id,
            aws_secret_access_key=secret or key.secret_access_key,
            config=NO_RETRIES.merge(Config(parameter_validation=validate)),
        ))


def jpeg(pixels: np.ndarray, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


@pytest.fixture(scope="module")
def moto_s3(moto_endpoint: str) -> tuple[str, Any]:
    """moto's S3 (conftest's `moto_endpoint`): the stand-in for MinIO or AWS S3."""
    s3 = boto3.session.Session().client(
        "s3", endpoint_url=moto_endpoint, region_name=REGION, aws_access_key_id="moto",
        aws_secret_access_key="moto", config=Config(s3={"addressing_style": "path"}))
    s3.create_bucket(Bucket=S3_BUCKET)
    return moto_endpoint, s3


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, service: FaceService,
          moto_s3: tuple[str, Any], astronaut_jpeg: bytes) -> Iterator[World]:
    root = tmp_path_factory.mktemp("server")
    bucket_dir = root / "bucket"
    (bucket_dir / "people").mkdir(parents=True)
    (bucket_dir / "people" / "astronaut.jpg").write_bytes(astronaut_jpeg)
    outside = root / "outside.jpg"
    outside.write_bytes(astronaut_jpeg)
    (bucket_dir / "escape.jpg").symlink_to(outside)
    endpoint, s3 = moto_s3
    settings = Settings(
        data_dir=root / "data", local_buckets={LOCAL_BUCKET: bucket_dir},
        s3_buckets=[S3_BUCKET], s3_endpoint_url=endpoint, s3_region=REGION,
        s3_access_key_id="moto", s3_secret_access_key="moto",
    )
    svc = FaceService(settings, pipeline=service.pipeline, resolver=build_resolver(settings))
    keys = KeyStore(svc.engine, secrets.token_bytes(32))
    admin = keys.create("admin", ["*"], ["*"], s3_objects=["*"])
    app = RekognitionApp(svc, keys, settings)
    with running(app) as url:
        yield World(url, settings, svc, keys, admin, s3, outside)
    app.close()


# --- the operations -------------------------------------------------------------------------

def test_detect_faces(world: World, astronaut_jpeg: bytes) -> None:
    result = world.client().detect_faces(Image={"Bytes": astronaut_jpeg}, Attributes=["ALL"])
    direct = world.service.detect_faces({"Bytes": astronaut_jpeg}, ["ALL"])
    assert result["FaceDetails"] == json.loads(json.dumps(direct["FaceDetails"]))
    assert result["FaceDetails"], "the astronaut portrait has a face"
    assert result["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_compare_faces(world: World, faces_dir: Path) -> None:
    powell = sorted((faces_dir / "lfw" / "Colin_Powell").glob("*.jpg"))
    lopez = sorted((faces_dir / "lfw" / "Jennifer_Lopez").glob("*.jpg"))
    client = world.client()
    same = client.compare_faces(SourceImage={"Bytes": powell[0].read_bytes()},
                                TargetImage={"Bytes": powell[1].read_bytes()},
                                SimilarityThreshold=90)
    assert same["FaceMatches"] and same["FaceMatches"][0]["Similarity"] >= 90
    direct = world.service.compare_faces({"Bytes": powell[0].read_bytes()},
                                         {"Bytes": powell[1].read_bytes()}, 90)
    assert same["FaceMatches"][0]["Similarity"] == pytest.approx(
        direct["FaceMatches"][0]["Similarity"])
    other = client.compare_faces(SourceImage={"Bytes": powell[0].read_bytes()},
                                 TargetImage={"Bytes": lopez[0].read_bytes()})
    assert other["FaceMatches"] == [] and len(other["UnmatchedFaces"]) == 1


def test_collection_lifecycle(world: World, faces_dir: Path) -> None:
    """Every collection and user operation, in the order an application uses them."""
    powell = [p.read_bytes() for p in sorted((faces_dir / "lfw" / "Colin_Powell").glob("*.jpg"))]
    lopez = [p.read_bytes() for p in sorted((faces_dir / "lfw" / "Jennifer_Lopez").glob("*.jpg"))]
    c = world.client()
    cid = "http-lifecycle"
    created = c.create_collection(CollectionId=cid)
    assert created["StatusCode"] == 200
    assert c.describe_collection(CollectionId=cid)["FaceCount"] == 0
    assert cid in c.list_collections()["CollectionIds"]
    with pytest.raises(ClientError) as exc:
        c.create_collection(CollectionId=cid)
    assert code_of(exc) == "ResourceAlreadyExistsException"

    ids: dict[str, list[str]] = {"powell": [], "lopez": []}
    for who, images in (("powell", powell[:2]), ("lopez", lopez[:2])):
        for i, data in enumerate(images):
            r = c.index_faces(CollectionId=cid, Image={"Bytes": data},
                              ExternalImageId=f"{who}-{i}", MaxFaces=1)
            assert len(r["FaceRecords"]) == 1
            ids[who].append(r["FaceRecords"][0]["Face"]["FaceId"])
    assert c.describe_collection(CollectionId=cid)["FaceCount"] == 4
    listed = c.list_faces(CollectionId=cid)["Faces"]
    assert {f["FaceId"] for f in listed} == set(ids["powell"] + ids["lopez"])

    found = c.search_faces_by_image(CollectionId=cid, Image={"Bytes": powell[2]},
                                    FaceMatchThreshold=90)
    assert {m["Face"]["FaceId"] for m in found["FaceMatches"]} == set(ids["powell"])
    by_id = c.search_faces(CollectionId=cid, FaceId=ids["lopez"][0], FaceMatchThreshold=90)
    assert [m["Face"]["FaceId"] for m in by_id["FaceMatches"]] == [ids["lopez"][1]]

    c.create_user(CollectionId=cid, UserId="colin")  # ClientRequestToken: filled by boto3
    assoc = c.associate_faces(CollectionId=cid, UserId="colin", FaceIds=ids["powell"])
    assert {f["FaceId"] for f in assoc["AssociatedFaces"]} == set(ids["powell"])
    assert [u["UserId"] for u in c.list_users(CollectionId=cid)["Users"]] == ["colin"]
    users = c.search_users(CollectionId=cid, FaceId=ids["powell"][0], UserMatchThreshold=90)
    assert [m["User"]["UserId"] for m in users["UserMatches"]] == ["colin"]
    users = c.search_users_by_image(CollectionId=cid, Image={"Bytes": powell[3]},
                                    UserMatchThreshold=90)
    assert [m["User"]["UserId"] for m in users["UserMatches"]] == ["colin"]
    nobody = c.search_users_by_image(CollectionId=cid, Image={"Bytes": lopez[2]},
                                     UserMatchThreshold=90)
    assert nobody["UserMatches"] == []
    dis = c.disassociate_faces(CollectionId=cid, UserId="colin", FaceIds=ids["powell"][:1])
    assert [f["FaceId"] for f in dis["DisassociatedFaces"]] == ids["powell"][:1]
    c.delete_user(CollectionId=cid, UserId="colin")
    deleted = c.delete_faces(CollectionId=cid, FaceIds=ids["lopez"])
    assert set(deleted["DeletedFaces"]) == set(ids["lopez"])
    assert c.describe_collection(CollectionId=cid)["FaceCount"] == 2
    assert c.delete_collection(CollectionId=cid)["StatusCode"] == 200
    with pytest.raises(ClientError) as exc:
        c.describe_collection(CollectionId=cid)
    assert code_of(exc) == "ResourceNotFoundException"


def _implemented() -> list[str]:
    from faceledger.server.protocol import implemented_operations

    return sorted(implemented_operations(FaceService))


@pytest.mark.parametrize("operation", _implemented())
def test_every_operation_answers_boto3_with_model_errors(world: World, operation: str) -> None:
    """Listed from the service and the model, so an operation added later is covered too:
    called with no members, it names what is missing, as boto3 parses it."""
    from faceledger.server.protocol import service_model

    shape = service_model().operation_model(operation).input_shape
    required = [] if shape is None else list(shape.required_members)
    call = getattr(world.client(validate=False), snake_case(operation))
    if not required:
        assert call()["ResponseMetadata"]["HTTPStatusCode"] == 200
        return
    with pytest.raises(ClientError) as exc:
        call()
    assert code_of(exc) == "ValidationException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert f"'{required[0][:1].lower() + required[0][1:]}'" in str(exc.value)


def test_unimplemented_operation(world: World) -> None:
    with pytest.raises(ClientError) as exc:
        world.client().detect_labels(Image={"Bytes": b"x"})
    assert code_of(exc) == "UnknownOperationException"


def test_purpose_and_case_headers_reach_the_context(world: World, astronaut_jpeg: bytes) -> None:
    client = world.client()

    def add_context(request: Any, **_: Any) -> None:
        request.headers["X-Faceledger-Purpose"] = "building access"
        request.headers["X-Faceledger-Case"] = "INC-2024-17"

    client.meta.events.register("before-sign.rekognition.*", add_context)
    response = client.detect_faces(Image={"Bytes": astronaut_jpeg})
    event = list(world.service.ledger.scan())[-1].event
    assert event.operation == "DetectFaces"
    assert event.principal == world.admin.info.access_key_id
    assert (event.purpose, event.case) == ("building access", "INC-2024-17")
    assert event.request_id == response["ResponseMetadata"]["RequestId"]


# --- images from object storage ---------------------------------------------------------------

def test_s3_object_from_an_s3_server(world: World, astronaut_jpeg: bytes) -> None:
    world.s3.put_object(Bucket=S3_BUCKET, Key="people/astronaut.jpg", Body=astronaut_jpeg)
    result = world.client().detect_faces(
        Image={"S3Object": {"Bucket": S3_BUCKET, "Name": "people/astronaut.jpg"}})
    direct = world.service.detect_faces({"Bytes": astronaut_jpeg})
    assert result["FaceDetails"] == json.loads(json.dumps(direct["FaceDetails"]))


def test_s3_object_version(world: World, astronaut_jpeg: bytes) -> None:
    bucket = "faceledger-versioned"
    world.s3.create_bucket(Bucket=bucket)
    world.s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = world.s3.put_object(Bucket=bucket, Key="p.jpg", Body=astronaut_jpeg)["VersionId"]
    world.s3.put_object(Bucket=bucket, Key="p.jpg", Body=b"not an image any more")
    settings = world.settings.model_copy(update={"s3_buckets": [bucket]})
    resolver = build_resolver(settings)
    assert resolver.fetch(bucket, "p.jpg", v1) == astronaut_jpeg
    assert resolver.fetch(bucket, "p.jpg", None) == b"not an image any more"


@pytest.mark.parametrize(
    ("ref", "code"),
    [
        ({"Bucket": S3_BUCKET, "Name": "missing.jpg"}, "InvalidS3ObjectException"),
        ({"Bucket": "not-configured", "Name": "a.jpg"}, "InvalidS3ObjectException"),
        ({"Bucket": S3_BUCKET, "Name": "people/astronaut.jpg", "Version": "no-such-version"},
         "InvalidS3ObjectException"),
        ({"Bucket": LOCAL_BUCKET, "Name": "../outside.jpg"}, "InvalidS3ObjectException"),
        ({"Bucket": LOCAL_BUCKET, "Name": "/etc/passwd"}, "InvalidS3ObjectException"),
        ({"Bucket": LOCAL_BUCKET, "Name": "escape.jpg"}, "InvalidS3ObjectException"),
        ({"Bucket": LOCAL_BUCKET, "Name": "people/missing.jpg"}, "InvalidS3ObjectException"),
    ],
)
def test_s3_object_refusals(world: World, ref: dict[str, str], code: str) -> None:
    with pytest.raises(ClientError) as exc:
        world.client().detect_faces(Image={"S3Object": ref})
    assert code_of(exc) == code
    # the answer never reveals where the server keeps its files
    assert str(world.outside_file.parent) not in str(exc.value)


def test_s3_object_over_15_mb(world: World) -> None:
    limit = world.settings.max_s3_image_bytes
    world.s3.put_object(Bucket=S3_BUCKET, Key="huge.jpg", Body=b"\xff" * (limit + 1))
    with pytest.raises(ClientError) as exc:
        world.client().detect_faces(Image={"S3Object": {"Bucket": S3_BUCKET,
                                                        "Name": "huge.jpg"}})
    assert code_of(exc) == "ImageTooLargeException"
    assert str(limit) in str(exc.value)


def test_local_bucket(world: World, astronaut_jpeg: bytes) -> None:
    result = world.client().detect_faces(
        Image={"S3Object": {"Bucket": LOCAL_BUCKET, "Name": "people/astronaut.jpg"}})
    direct = world.service.detect_faces({"Bytes": astronaut_jpeg})
    assert result["FaceDetails"] == json.loads(json.dumps(direct["FaceDetails"]))


# --- authentication and permissions -------------------------------------------------------

def test_wrong_secret(world: World) -> None:
    with pytest.raises(ClientError) as exc:
        world.client(secret="x" * 40).detect_faces(Image={"Bytes": b"x"})
    assert code_of(exc) == "InvalidSignatureException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_unknown_key(world: World) -> None:
    with pytest.raises(ClientError) as exc:
        world.client(key_id="FLKNOSUCHKEY00000000").detect_faces(Image={"Bytes": b"x"})
    assert code_of(exc) == "UnrecognizedClientException"


def test_revoked_key(world: World, astronaut_jpeg: bytes) -> None:
    key = world.keys.create("soon-revoked", ["*"], ["*"])
    client = world.client(key)
    assert client.detect_faces(Image={"Bytes": astronaut_jpeg})["FaceDetails"]
    world.keys.revoke(key.info.access_key_id)
    with pytest.raises(ClientError) as exc:
        client.detect_faces(Image={"Bytes": astronaut_jpeg})
    assert code_of(exc) == "UnrecognizedClientException"


def test_expired_request(world: World) -> None:
    eleven_minutes_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=11)
    client = world.client()
    with (mock.patch("botocore.auth.get_current_datetime", return_value=eleven_minutes_ago),
          pytest.raises(ClientError) as exc):
        client.detect_faces(Image={"Bytes": b"x"})
    assert code_of(exc) == "InvalidSignatureException"
    assert exc.value.response["Error"]["Message"].startswith("Signature expired:")


def test_body_tampered_after_signing(world: World, astronaut_jpeg: bytes) -> None:
    client = world.client()

    def tamper(request: Any, **_: Any) -> None:
        body = bytearray(request.body)
        i = body.index(b'"Bytes": "') + 20
        body[i] = ord("A") if body[i] != ord("A") else ord("B")
        request.body = bytes(body)

    client.meta.events.register("before-send.rekognition.DetectFaces", tamper)
    with pytest.raises(ClientError) as exc:
        client.detect_faces(Image={"Bytes": astronaut_jpeg})
    assert code_of(exc) == "InvalidSignatureException"
    assert "does not match the signature you provided" in str(exc.value)


def test_operation_not_permitted(world: World, astronaut_jpeg: bytes) -> None:
    key = world.keys.create("detector", ["DetectFaces"], ["*"])
    client = world.client(key)
    assert client.detect_faces(Image={"Bytes": astronaut_jpeg})["FaceDetails"]
    with pytest.raises(ClientError) as exc:
        client.compare_faces(SourceImage={"Bytes": astronaut_jpeg},
                             TargetImage={"Bytes": astronaut_jpeg})
    assert code_of(exc) == "AccessDeniedException"
    assert "not allowed to call CompareFaces" in str(exc.value)


def test_collection_not_permitted(world: World) -> None:
    key = world.keys.create("team-a", ["*Collection*"], ["team-a-*"])
    client = world.client(key)
    client.create_collection(CollectionId="team-a-staff")
    world.client().create_collection(CollectionId="team-b-staff")
    with pytest.raises(ClientError) as exc:
        client.create_collection(CollectionId="team-b-visitors")
    assert code_of(exc) == "AccessDeniedException"
    with pytest.raises(ClientError) as exc:
        client.describe_collection(CollectionId="team-b-staff")
    assert code_of(exc) == "AccessDeniedException"
    # listing shows only what the key may name
    assert client.list_collections()["CollectionIds"] == ["team-a-staff"]
    assert "team-b-staff" in world.client().list_collections()["CollectionIds"]


def test_dev_mode_needs_no_credentials(world: World, astronaut_jpeg: bytes,
                                       caplog: pytest.LogCaptureFixture) -> None:
    app = RekognitionApp(world.service, None, world.settings, dev_mode=True, warm_up=False)
    with caplog.at_level("WARNING", logger="faceledger.server"), running(app) as url:
        client = boto3.session.Session().client(
            "rekognition", endpoint_url=url, region_name="eu-central-1",
            aws_access_key_id="anything", aws_secret_access_key="anything", config=NO_RETRIES)
        response = client.detect_faces(Image={"Bytes": astronaut_jpeg})
    app.close()
    assert response["FaceDetails"]
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-faceledger-dev-mode"] == \
        "unauthenticated"
    assert "DEVELOPMENT MODE: NO AUTHENTICATION" in caplog.text
    assert list(world.service.ledger.scan())[-1].event.principal == "anonymous-dev"


# --- `faceledger serve` as its own process ------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(env: dict[str, str], *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from faceledger.cli import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=120, check=False, **kw)


def test_faceledger_serve_process(tmp_path: Path, astronaut_jpeg: bytes) -> None:
    env = {**os.environ, "FACELEDGER_DATA_DIR": str(tmp_path / "data")}
    created = _cli(env, "keys", "create", "ci", "-o", "DetectFaces", "-c", "*", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from faceledger.cli import main; main()", "serve",
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = boto3.session.Session().client(
            "rekognition", endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION,
            aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
            config=NO_RETRIES)
        deadline = time.monotonic() + 90
        while True:
            try:
                result = client.detect_faces(Image={"Bytes": astronaut_jpeg})
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.3)
        assert result["FaceDetails"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "faceledger server stopped" in out
    assert key["SecretAccessKey"] not in out
    assert "DetectFaces" in out  # the request log line names the operation


def test_dev_mode_refuses_a_public_address(tmp_path: Path) -> None:
    env = {**os.environ, "FACELEDGER_DATA_DIR": str(tmp_path / "data")}
    done = _cli(env, "serve", "--dev", "--host", "0.0.0.0")
    assert done.returncode == 2
    assert "loopback" in done.stderr



def test_bucket_configuration_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both as local and S3"):
        build_resolver(Settings(data_dir=tmp_path, local_buckets={"b": tmp_path},
                                s3_buckets=["b"]))
    with pytest.raises(ValueError, match="not a directory"):
        build_resolver(Settings(data_dir=tmp_path, local_buckets={"b": tmp_path / "none"}))
    with pytest.raises(Exception) as exc:
        build_resolver(Settings(data_dir=tmp_path)).fetch("any", "x.jpg", None)
    assert getattr(exc.value, "code", "") == "InvalidS3ObjectException"
