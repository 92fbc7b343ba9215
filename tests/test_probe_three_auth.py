"""Regression tests for the third security probe (issue 24, items 5-9), each made the way the
attack was: signed raw requests and the unmodified boto3 client against a real server on
127.0.0.1, moto's S3 server and local buckets, the CLI as a subprocess, under umask 022.

Replayed signed requests of every operation (and a real boto3 retry that must still be served),
S3 objects limited by per-key grants with one answer for missing and forbidden, X-Forwarded-For
believed only from configured proxies, private files outside the data directory, and `..` in
S3 object names.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from botocore.model import Shape, StructureShape
from sqlalchemy import func, select, update

from faceledger.context import LOCAL, RequestContext
from faceledger.errors import InvalidParameterException, InvalidS3ObjectException
from faceledger.evaluation.enrolment import EmbeddingCache, Enrolment
from faceledger.ledger import schema as ledger_schema
from faceledger.ledger.export import write_bundle
from faceledger.server import RekognitionApp, running
from faceledger.server.keys import IssuedKey, KeyStore, api_keys
from faceledger.server.protocol import implemented_operations, service_model
from faceledger.server.run import build_app, uvicorn_config
from faceledger.server.storage import build_resolver
from faceledger.service import FaceService
from faceledger.settings import Settings
from faceledger.sources import NOT_READABLE

REGION = "us-east-1"
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})


def _client(url: str, key: IssuedKey, config: Config = NO_RETRIES) -> Any:
    return boto3.session.Session().client(
        "rekognition", endpoint_url=url, region_name=REGION,
        aws_access_key_id=key.info.access_key_id, aws_secret_access_key=key.secret_access_key,
        config=config)


def _signed(url: str, key: IssuedKey, operation: str, body: bytes,
            **headers: str) -> dict[str, str]:
    """Headers of a SigV4-signed POST of `body` (with `headers` signed too): what a capture
    holds, sent again unchanged by a replay."""
    request = AWSRequest(method="POST", url=url + "/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": f"RekognitionService.{operation}", **headers})
    SigV4Auth(Credentials(key.info.access_key_id, key.secret_access_key), "rekognition",
              REGION).add_auth(request)
    return dict(request.headers.items())


def _count(svc: FaceService, table: Any, **where: str) -> int:
    q = select(func.count()).select_from(table)
    for column, value in where.items():
        q = q.where(table.c[column] == value)
    with svc.engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _refused_as_repeat(answer: httpx.Response) -> bool:
    """Refused as a signature already received: ThrottlingException, so that an SDK retries
    it signed anew (replay.py)."""
    return (answer.status_code == 400 and answer.json()["__type"] == "ThrottlingException"
            and "already received" in answer.json()["message"])


# --- the world: a server, moto's S3 and local buckets ------------------------------------------

STAFF_BUCKET, SECRET_BUCKET = "staff-photos", "secret"
LOCAL_STAFF, LOCAL_SECRET = "local-staff", "local-secret"


@dataclass
class World:
    url: str
    settings: Settings
    service: FaceService
    keys: KeyStore
    s3: Any
    staff: IssuedKey  # collection `staff`, may read staff-photos/staff/* and local-staff/*
    bare: IssuedKey  # collection `staff`, every operation, no --s3


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, service: FaceService,
          moto_endpoint: str, astronaut_jpeg: bytes) -> Iterator[World]:
    root = tmp_path_factory.mktemp("probe-three")
    s3 = boto3.session.Session().client(
        "s3", endpoint_url=moto_endpoint, region_name=REGION, aws_access_key_id="moto",
        aws_secret_access_key="moto", config=Config(s3={"addressing_style": "path"}))
    for bucket in (STAFF_BUCKET, SECRET_BUCKET):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=STAFF_BUCKET, Key="staff/astronaut.jpg", Body=astronaut_jpeg)
    s3.put_object(Bucket=STAFF_BUCKET, Key="other/astronaut.jpg", Body=astronaut_jpeg)
    s3.put_object(Bucket=SECRET_BUCKET, Key="s.jpg", Body=astronaut_jpeg)
    s3.put_object(Bucket=SECRET_BUCKET, Key="clip.mp4", Body=b"\0" * 4096)
    local = {LOCAL_STAFF: root / "local-staff", LOCAL_SECRET: root / "local-secret"}
    for folder in local.values():
        folder.mkdir()
        (folder / "astronaut.jpg").write_bytes(astronaut_jpeg)
    settings = Settings(
        data_dir=root / "data", config_dir=root / "config", server_workers=1,
        local_buckets=local, s3_buckets=[STAFF_BUCKET, SECRET_BUCKET],
        s3_endpoint_url=moto_endpoint, s3_region=REGION, s3_access_key_id="moto",
        s3_secret_access_key="moto")
    svc = FaceService(settings, pipeline=service.pipeline, resolver=build_resolver(settings))
    svc.create_collection("staff")
    keys = KeyStore(svc.engine, secrets.token_bytes(32))
    staff = keys.create("staff-app", ["*"], ["staff"],
                        s3_objects=[f"{STAFF_BUCKET}/staff/*", f"{LOCAL_STAFF}/*"])
    bare = keys.create("no-grants", ["*"], ["staff"])
    app = RekognitionApp(svc, keys, settings, warm_up=False)
    with running(app) as url:
        yield World(url, settings, svc, keys, s3, staff, bare)
    app.close()
    svc.close()


# --- 5. replayed signed requests ---------------------------------------------------------------

def test_a_replayed_identification_search_is_one_search(world: World,
                                                        astronaut_jpeg: bytes) -> None:
    """The probe replayed a captured SearchFacesByImage 10 times: 10 events and 10 review
    candidates under the victim's key, purpose and case. Now the copies are refused, by this
    server and by another on the same database."""
    svc = world.service
    svc.create_collection("wanted")
    svc.put_collection_policy("wanted", {"IdentificationMode": True, "ReviewersRequired": 1},
                              ctx=LOCAL)
    svc.index_faces("wanted", {"Bytes": astronaut_jpeg})
    key = world.keys.create("officer", ["SearchFacesByImage"], ["wanted"])
    body = json.dumps({"CollectionId": "wanted", "Image": {"Bytes": _b64(astronaut_jpeg)},
                       "FaceMatchThreshold": 90.0}).encode()
    headers = _signed(world.url, key, "SearchFacesByImage", body,
                      **{"X-Faceledger-Purpose": "missing person", "X-Faceledger-Case": "MP-9"})
    host = {**headers, "Host": world.url.removeprefix("http://")}  # one name, two servers
    first = httpx.post(world.url + "/", content=body, headers=headers, timeout=60)
    assert first.status_code == 200, first.text
    assert first.json()["ReviewCandidates"], "the match is held for review"
    other = RekognitionApp(svc, world.keys, world.settings, warm_up=False)
    with running(other) as url2, ThreadPoolExecutor(9) as pool:
        replays = list(pool.map(lambda target: httpx.post(
            target + "/", content=body, headers=host, timeout=60), [world.url, url2] * 4 + [url2]))
    other.close()
    for replay in replays:
        assert _refused_as_repeat(replay), replay.text
    assert _count(svc, ledger_schema.events, operation="SearchFacesByImage",
                  principal=key.info.access_key_id) == 1
    assert _count(svc, ledger_schema.candidates, collection="wanted") == 1


def test_a_failed_delete_user_cannot_be_replayed_once_the_user_exists(world: World) -> None:
    """The probe captured a DeleteUser answered 404 (boto3 fills its ClientRequestToken, which
    exempted it) and replayed it after the user had been created: the user was deleted."""
    svc = world.service
    svc.create_collection("users")
    key = world.keys.create("hr", ["*User*"], ["users"])
    body = json.dumps({"CollectionId": "users", "UserId": "alice",
                       "ClientRequestToken": "3f6b9a52-0d5e-4c4f-9a55-2c4c1a7e0b11"}).encode()
    headers = _signed(world.url, key, "DeleteUser", body)
    first = httpx.post(world.url + "/", content=body, headers=headers, timeout=60)
    assert first.status_code == 400 and first.json()["__type"] == "ResourceNotFoundException"
    svc.create_user("users", "alice")
    replay = httpx.post(world.url + "/", content=body, headers=headers, timeout=60)
    assert _refused_as_repeat(replay), replay.text
    assert [u["UserId"] for u in svc.list_users("users")["Users"]] == ["alice"]


def test_every_operation_is_served_once_per_signature(world: World) -> None:
    """Not decided by operation name any more: every implemented operation (listed from the
    service and the model, so one added later is covered too), whatever its first answer."""
    key = world.keys.create("everything", ["*"], ["*"])
    signed = {operation: _signed(world.url, key, operation, b"{}")
              for operation in sorted(implemented_operations(FaceService))}
    for operation, headers in signed.items():
        first = httpx.post(world.url + "/", content=b"{}", headers=headers, timeout=60)
        assert first.status_code < 500, (operation, first.text)
    with ThreadPoolExecutor(len(signed)) as pool:  # each repeat is answered after a second
        again = dict(zip(signed, pool.map(lambda h: httpx.post(
            world.url + "/", content=b"{}", headers=h, timeout=60), signed.values())))
    for operation, answer in again.items():
        assert _refused_as_repeat(answer), (operation, answer.text)


class LosesFirstAnswer:
    """A TCP relay in front of the server that forwards every request but loses the server's
    answer to the first one (the connection closes instead): a response lost in the network,
    after which an SDK retries a request the server already served."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.exchanges: list[tuple[bytes, bytes | None]] = []  # (request, answer relayed)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    @staticmethod
    def _message(conn: socket.socket, buffered: bytes = b"") -> tuple[bytes, bytes]:
        """One HTTP message (headers and Content-Length body) and what followed it."""
        data = buffered
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return b"", b""
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        assert length is not None
        while len(rest) < int(length.group(1)):
            rest += conn.recv(65536)
        return head + b"\r\n\r\n" + rest[:int(length.group(1))], rest[int(length.group(1)):]

    def _relay(self, client: socket.socket) -> None:
        left = b""
        with client, socket.create_connection(self.upstream) as upstream:
            while True:
                request, left = self._message(client, left)
                if not request:
                    return
                upstream.sendall(request)
                answer, _ = self._message(upstream)
                lost = not self.exchanges
                self.exchanges.append((request, None if lost else answer))
                if lost:
                    return  # the server answered; the client never hears it
                client.sendall(answer)

    def close(self) -> None:
        self.sock.close()


def _header(message: bytes, name: str) -> str:
    found = re.search(rb"(?im)^" + name.encode() + rb":[ \t]*(.*?)\r$", message)
    assert found is not None, name
    return found.group(1).decode()


def test_a_boto3_retry_after_a_lost_answer_is_served(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server served CreateUser but its answer was lost; botocore retries. Its signer adds
    `amz-sdk-invocation-id` and `amz-sdk-request: attempt=N` only after signing (botocore
    1.43: the signer runs first), so a retry signed in the same second is the same signature:
    it is refused as a repeat - ThrottlingException, a second later - and botocore's next
    attempt, signed in a later second, is served and answered from the ClientRequestToken
    like the first. Nothing is done twice. The lost first copy, sent again by someone who
    captured it, is refused too."""
    # retry at once, as botocore's backoff may (it draws 0 to 1 s): within the same second
    monkeypatch.setattr("botocore.retries.standard.ExponentialBackoff.delay_amount",
                        lambda self, context: 0.0)
    world.service.create_collection("retried")
    key = world.keys.create("retrying", ["CreateUser"], ["retried"])
    relay = LosesFirstAnswer(world.url)
    try:
        client = _client(relay.url, key, Config(retries={"total_max_attempts": 4,
                                                         "mode": "standard"}))
        time.sleep(1.02 - time.time() % 1.0)  # the first two attempts in one second
        out = client.create_user(CollectionId="retried", UserId="bob")
    finally:
        relay.close()
    assert [u["UserId"] for u in world.service.list_users("retried")["Users"]] == ["bob"]
    (first, lost), (second, repeat), (third, served) = relay.exchanges
    assert out["ResponseMetadata"]["RetryAttempts"] == 2 and lost is None
    for request, attempt in ((first, 1), (second, 2), (third, 3)):
        assert f"attempt={attempt};" in _header(request, "amz-sdk-request") + ";"
        signed = _header(request, "Authorization").split("SignedHeaders=")[1].split(",")[0]
        assert not {"amz-sdk-invocation-id", "amz-sdk-request"} & set(signed.split(";")), (
            "botocore now signs its retry headers: its retries never repeat a signature")
    assert _header(first, "Authorization") == _header(second, "Authorization")
    assert repeat is not None and b"already received" in repeat
    assert _header(repeat, "x-amzn-ErrorType") == "ThrottlingException"
    assert _header(third, "X-Amz-Date") > _header(first, "X-Amz-Date")
    assert served is not None and served.startswith(b"HTTP/1.1 200")
    head, _, body = first.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    assert _refused_as_repeat(httpx.post(world.url + "/", content=body, headers=headers,
                                         timeout=60))


def test_a_boto3_client_that_repeats_itself(world: World) -> None:
    """The same DescribeCollection twice in one second is one signature (botocore signs no
    per-call header): with retries off the copy is refused; with boto3's default retries it
    is served a second later; with a signed nonce (SECURITY.md's recipe) both at once."""
    world.service.create_collection("polled")
    key = world.keys.create("poller", ["DescribeCollection"], ["polled"])

    def twice(client: Any) -> list[Any]:
        time.sleep(1.02 - time.time() % 1.0)  # both signed within one second
        out = [client.describe_collection(CollectionId="polled")]
        try:
            out.append(client.describe_collection(CollectionId="polled"))
        except ClientError as exc:
            out.append(exc.response)
        return out

    no_retries = twice(_client(world.url, key))
    assert no_retries[1]["Error"]["Code"] == "ThrottlingException"
    assert "already received" in no_retries[1]["Error"]["Message"]
    defaults = twice(_client(world.url, key, Config()))
    assert defaults[1]["FaceCount"] == 0 and defaults[1]["ResponseMetadata"]["RetryAttempts"] >= 1
    nonced = _client(world.url, key)
    nonced.meta.events.register("before-sign.rekognition", lambda request, **_:
                                request.headers.__setitem__("x-nonce", uuid.uuid4().hex))
    assert [a["ResponseMetadata"]["RetryAttempts"] for a in twice(nonced)] == [0, 0]


# --- 6. S3 objects only where the key's grants reach -------------------------------------------

def _s3_paths() -> dict[str, set[str]]:
    """Every Image/Video S3Object path in the inputs of the operations this server implements,
    from botocore's model: {operation: {"Image", "SourceImage", ...}}."""
    model = service_model()

    def walk(shape: Shape, prefix: str) -> Iterator[str]:
        if isinstance(shape, StructureShape):
            for name, member in shape.members.items():
                if member.name == "S3Object":
                    yield prefix + name
                else:
                    yield from walk(member, f"{prefix}{name}.")

    paths = {}
    for operation in implemented_operations(FaceService):
        shape = model.operation_model(operation).input_shape
        found = set() if shape is None else {p.rsplit(".", 1)[0] for p in walk(shape, "")}
        if found:
            paths[operation] = found
    return paths


def _calls(client: Any, granted: dict[str, str], ref: dict[str, str]) -> dict[
        tuple[str, str], Any]:
    """One call per (operation, S3Object path), reading `ref` there (and `granted` elsewhere)."""
    image, good = {"S3Object": ref}, {"S3Object": granted}
    return {
        ("DetectFaces", "Image"): lambda: client.detect_faces(Image=image),
        ("IndexFaces", "Image"): lambda: client.index_faces(CollectionId="staff", Image=image),
        ("SearchFacesByImage", "Image"): lambda: client.search_faces_by_image(
            CollectionId="staff", Image=image),
        ("SearchUsersByImage", "Image"): lambda: client.search_users_by_image(
            CollectionId="staff", Image=image),
        ("CompareFaces", "SourceImage"): lambda: client.compare_faces(
            SourceImage=image, TargetImage=good),
        ("CompareFaces", "TargetImage"): lambda: client.compare_faces(
            SourceImage=good, TargetImage=image),
        ("StartFaceDetection", "Video"): lambda: client.start_face_detection(Video=image),
        ("StartFaceSearch", "Video"): lambda: client.start_face_search(
            Video=image, CollectionId="staff"),
    }


def _refusal(call: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as exc:
        call()
    return exc.value.response["Error"]["Code"], exc.value.response["Error"]["Message"]


def test_every_s3_object_path_reads_only_what_the_key_is_granted(world: World) -> None:
    """The probe: a key for collection `staff` read s3://secret/s.jpg and indexed its faces,
    and existing and missing objects answered differently. Now, on every S3Object path of every
    operation, an object outside the key's grants - in S3 (moto) or a local bucket, existing or
    not - gets the one answer AWS gives a missing or forbidden object, and nothing is indexed."""
    client = _client(world.url, world.staff)
    granted = {"Bucket": STAFF_BUCKET, "Name": "staff/astronaut.jpg"}
    calls = _calls(client, granted, {"Bucket": SECRET_BUCKET, "Name": "s.jpg"})
    covered: dict[str, set[str]] = {}
    for operation, path in calls:
        covered.setdefault(operation, set()).add(path)
    assert covered == _s3_paths()  # an S3Object path added later must be added here
    elsewhere = [{"Bucket": SECRET_BUCKET, "Name": "s.jpg"},  # exists, not granted
                 {"Bucket": SECRET_BUCKET, "Name": "missing.jpg"},
                 {"Bucket": STAFF_BUCKET, "Name": "other/astronaut.jpg"},  # outside the prefix
                 {"Bucket": STAFF_BUCKET, "Name": "staff/missing.jpg"},  # granted, missing
                 {"Bucket": LOCAL_SECRET, "Name": "astronaut.jpg"},
                 {"Bucket": LOCAL_STAFF, "Name": "missing.jpg"}]
    for ref in elsewhere:
        for (operation, path), call in _calls(client, granted, ref).items():
            assert _refusal(call) == ("InvalidS3ObjectException", NOT_READABLE), (
                operation, path, ref)
    assert world.service.list_faces("staff")["Faces"] == []
    # what the grants name is read, from S3 and from a local bucket alike
    for ref in (granted, {"Bucket": LOCAL_STAFF, "Name": "astronaut.jpg"}):
        assert client.detect_faces(Image={"S3Object": ref})["FaceDetails"]


def test_a_key_without_grants_reads_no_object(world: World) -> None:
    """A key made without --s3 reads nothing, and so does a key made before grants existed
    (its column is NULL)."""
    old = world.keys.create("made-before", ["*"], ["staff"], s3_objects=["*"])
    with world.service.engine.begin() as conn:
        conn.execute(update(api_keys).where(api_keys.c.access_key_id == old.info.access_key_id)
                     .values(s3_objects=None))
    for key in (world.bare, old):
        client = _client(world.url, key)
        for ref in ({"Bucket": STAFF_BUCKET, "Name": "staff/astronaut.jpg"},
                    {"Bucket": LOCAL_STAFF, "Name": "astronaut.jpg"}):
            assert _refusal(lambda: client.detect_faces(Image={"S3Object": ref})) == (
                "InvalidS3ObjectException", NOT_READABLE)


def test_s3_grants_are_checked_when_a_key_is_made(world: World) -> None:
    for bad in ("staff-photos", "/staff/*", "staff\n/*"):
        with pytest.raises(InvalidParameterException):
            world.keys.create("bad", ["*"], ["*"], s3_objects=[bad])
    made = world.keys.create("ok", ["*"], ["*"], s3_objects=["b/x*", "b/x*", "*"])
    assert made.info.s3_objects == ("*", "b/x*")
    assert world.keys.get(made.info.access_key_id).s3_objects == ("*", "b/x*")  # type: ignore[union-attr]


def test_keys_create_s3_on_the_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "FACELEDGER_DATA_DIR": str(tmp_path / "data"),
           "FACELEDGER_CONFIG_DIR": str(tmp_path / "config")}
    made = _cli(env, "keys", "create", "door", "-o", "DetectFaces", "-c", "staff",
                "--s3", "photos/staff/*", "--s3", "archive/2026,*", "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["S3Objects"] == ["archive/2026,*", "photos/staff/*"]
    listed = _cli(env, "keys", "list", "--json")
    assert json.loads(listed.stdout)[0]["S3Objects"] == ["archive/2026,*", "photos/staff/*"]
    bare = _cli(env, "keys", "create", "x", "-o", "*", "-c", "*", "--s3", "photos")
    assert bare.returncode != 0 and "photos/*" in bare.stderr


# --- 9. `..` in S3 object names ----------------------------------------------------------------

def test_dot_dot_segments_are_refused_before_object_storage_is_asked(
        world: World, astronaut_jpeg: bytes) -> None:
    """Object names were sent to S3 as is: `staff/../x` matches a grant's `staff/*` glob, and
    an S3-compatible server or proxy that normalises the URL path reads `x` (or another
    bucket). moto stores such a key literally, so the old code served it. Now S3 and local
    buckets refuse it alike, with one check."""
    world.s3.put_object(Bucket=STAFF_BUCKET, Key="staff/../secret.jpg", Body=astronaut_jpeg)
    client = _client(world.url, world.staff)
    for bucket, name in ((STAFF_BUCKET, "staff/../secret.jpg"),
                         (STAFF_BUCKET, "staff/./astronaut.jpg"),
                         (LOCAL_STAFF, "x/../astronaut.jpg")):
        code, message = _refusal(lambda: client.detect_faces(
            Image={"S3Object": {"Bucket": bucket, "Name": name}}))
        assert code == "InvalidS3ObjectException"
        assert "not a plain relative name" in message, message
    # the resolvers refuse too (bulk indexing reads through them with no key)
    resolver = build_resolver(world.settings)
    for bucket in (STAFF_BUCKET, LOCAL_STAFF):
        with pytest.raises(InvalidS3ObjectException, match="plain relative"):
            resolver.fetch(bucket, "staff/../secret.jpg", None)
        with pytest.raises(InvalidS3ObjectException, match="plain relative"):
            resolver.list_objects(bucket, "staff/../")  # type: ignore[attr-defined]


# --- 7. X-Forwarded-For only from configured proxies -------------------------------------------

def _console(root: Path, service: FaceService, **settings: Any) -> tuple[
        RekognitionApp, IssuedKey]:
    s = Settings(data_dir=root / "data", config_dir=root / "config", server_workers=1,
                 console_signin_burst=3, console_signin_failures_per_minute=1.0, **settings)
    svc = FaceService(s, pipeline=service.pipeline)
    key = KeyStore.open(s, svc.engine, create_kek=True).create("auditor", ["*"], ["*"],
                                                               roles=["auditor"])
    return build_app(s, service=svc, warm_up=False), key


def _sign_in(client: httpx.Client, key: IssuedKey, secret: str, forwarded_for: str) -> int:
    form = client.get("/console/signin")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    return client.post("/console/signin", headers={"X-Forwarded-For": forwarded_for}, data={
        "csrf": token.group(1), "access_key_id": key.info.access_key_id,
        "secret": secret}).status_code


def test_forwarded_for_from_loopback_does_not_escape_sign_in_throttling(
        tmp_path: Path, service: FaceService) -> None:
    """The probe: 25 failed sign-ins with a new X-Forwarded-For each were all 401, none 429
    (uvicorn believes the header from 127.0.0.1 by default). Now the address is the peer's."""
    app, key = _console(tmp_path, service)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        statuses = [_sign_in(client, key, f"wrong-{i}", f"198.51.100.{i}") for i in range(25)]
    app.close()
    app.service.close()
    assert statuses[:3] == [401] * 3
    assert set(statuses[3:]) == {429}


def test_forwarded_for_is_believed_from_a_configured_proxy(
        tmp_path: Path, service: FaceService, monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind a proxy the operator names (here on loopback), each forwarded client has its own
    throttle: one address failing is throttled, another is not. Nothing else (not even
    uvicorn's FORWARDED_ALLOW_IPS) makes the header believed."""
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    plain, _ = _console(tmp_path / "plain", service)
    config = uvicorn_config(plain, "127.0.0.1", 0)
    config.load()
    assert config.proxy_headers is False and config.forwarded_allow_ips == ""
    plain.service.close()
    app, key = _console(tmp_path / "proxied", service, forwarded_allow_ips="127.0.0.1")
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        chosen = [_sign_in(client, key, "wrong", "203.0.113.7") for _ in range(5)]
        other = _sign_in(client, key, "wrong", "203.0.113.8")
    app.close()
    app.service.close()
    assert chosen == [401, 401, 401, 429, 429] and other == 401


# --- 8. private files outside the data directory -----------------------------------------------

def _loose(root: Path) -> dict[str, str]:
    """Files and folders under `root` that are not owner-only."""
    return {str(p.relative_to(root)): oct(stat.S_IMODE(p.stat().st_mode))
            for p in [root, *root.rglob("*")]
            if stat.S_IMODE(p.stat().st_mode) & 0o077}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from faceledger.cli import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=300, check=False)


def test_embedding_cache_templates_are_owner_only(tmp_path: Path, umask_022: None) -> None:
    """The evaluation cache held face templates in 0644 `.npz` files."""
    cache = EmbeddingCache(tmp_path / "cache", "model-key")
    vector = np.random.default_rng(0).standard_normal(128).astype(np.float32)
    cache.put(Enrolment("ab" * 32, 1, 64, 64, np.zeros(12), vector))
    assert _loose(tmp_path / "cache") == {}
    got = cache.get("ab" * 32, need_embedding=True)
    assert got is not None and np.array_equal(got.embedding, vector)  # type: ignore[arg-type]


def test_case_bundles_are_owner_only(tmp_path: Path, umask_022: None) -> None:
    """`export --case` wrote the case's events world-readable (in-process: the CLI's code)."""
    svc = FaceService(Settings(data_dir=tmp_path / "data", config_dir=tmp_path / "config"))
    svc.create_collection("c", ctx=RequestContext(case="INC-24", admin=True))
    bundle = svc.export_case("INC-24")
    svc.close()
    paths = write_bundle(bundle, tmp_path / "bundle")
    assert [p.name for p in paths] == ["case-INC-24.json", "verify.py", "README.txt"]
    assert _loose(tmp_path / "bundle") == {"verify.py": "0o644"}  # the public verifier
    # into a folder that already exists (the operator's), the files naming the case are private
    (tmp_path / "shared").mkdir()
    paths = write_bundle(bundle, tmp_path / "shared")
    assert [stat.S_IMODE(p.stat().st_mode) for p in paths] == [0o600, 0o644, 0o600]


def test_bulk_reports_are_owner_only(tmp_path: Path, umask_022: None) -> None:
    """`collection index --report` wrote each image's path and face ids in a 0644 file; one
    left by an earlier run is tightened as the run appends to it."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    earlier = tmp_path / "earlier.jsonl"
    earlier.write_text('{"earlier": true}\n')
    env = {**os.environ, "FACELEDGER_DATA_DIR": str(tmp_path / "data"),
           "FACELEDGER_CONFIG_DIR": str(tmp_path / "config")}
    assert _cli(env, "collection", "create", "c").returncode == 0
    for report in (tmp_path / "run.jsonl", earlier):
        done = _cli(env, "collection", "index", "c", str(photos), "--workers", "1",
                    "--no-progress", "--report", str(report))
        assert done.returncode == 1, done.stderr  # the broken file failed, and is reported
        assert stat.S_IMODE(report.stat().st_mode) == 0o600
        assert '"failed"' in report.read_text()
    assert earlier.read_text().startswith('{"earlier": true}\n')
