"""The HTTP app in-process (httpx.ASGITransport): requests signed by botocore's SigV4 signer,
the protocol's error paths, limits and the request context. Fast; the boto3-over-TCP tests are
in test_server.py."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from faceledger.context import LOCAL, RequestContext
from faceledger.db import make_engine
from faceledger.server import protocol
from faceledger.server.app import RekognitionApp
from faceledger.server.keys import IssuedKey, KeyStore
from faceledger.service import FaceService
from faceledger.settings import Settings

URL = "http://testserver/"


class Client:
    """Signs with botocore's SigV4Auth and sends through httpx.ASGITransport. Each call signs
    a fresh amz-sdk-invocation-id, as the JS SDK v3 does: a signature is served once, and two
    calls with the same body in the same second would otherwise be one signature."""

    def __init__(self, app: RekognitionApp, key: IssuedKey | None) -> None:
        self.app = app
        self.key = key

    def prepare(self, operation: str | None, body: bytes, headers: dict[str, str] | None,
                sign: bool) -> dict[str, str]:
        base = {"Content-Type": "application/x-amz-json-1.1"}
        if operation is not None:
            base["X-Amz-Target"] = f"RekognitionService.{operation}"
        base["amz-sdk-invocation-id"] = str(uuid.uuid4())
        request = AWSRequest(method="POST", url=URL, data=body, headers={**base, **(headers or {})})
        if sign and self.key is not None:
            creds = Credentials(self.key.info.access_key_id, self.key.secret_access_key)
            SigV4Auth(creds, "rekognition", "us-east-1").add_auth(request)
        return dict(request.headers.items())

    def post(self, operation: str | None, members: Any = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None, sign: bool = True) -> httpx.Response:
        body = raw if raw is not None else json.dumps(members or {}).encode()
        return self.many([(operation, body, headers, sign)])[0]

    def many(self, calls: Sequence[tuple[str | None, bytes, dict[str, str] | None, bool]]
             ) -> list[httpx.Response]:
        prepared = [(self.prepare(op, body, h, s), body) for op, body, h, s in calls]

        async def go() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=URL) as client:
                return list(await asyncio.gather(*(
                    client.post("/", content=body, headers=h) for h, body in prepared)))

        return asyncio.run(go())


def error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert response.headers["x-amzn-errortype"] == body["__type"]
    return response.status_code, body["__type"], body["message"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class RecordingService(FaceService):
    """The real service, with a spy on DetectFaces: records each call's context and can be
    held at a gate (to fill the worker pool) or made to fail like a bug would."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.contexts: list[RequestContext] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.explode = False

    def detect_faces(self, image: Any, attributes: Sequence[str] | None = None, *,
                     ctx: RequestContext = LOCAL) -> dict[str, Any]:
        self.contexts.append(ctx)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30), "test gate never opened"
        if self.explode:
            raise RuntimeError("secret internal detail at /srv/faceledger/x.py")
        return super().detect_faces(image, attributes, ctx=ctx)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, service: FaceService
        ) -> Iterator[tuple[Settings, KeyStore, RecordingService]]:
    data = tmp_path_factory.mktemp("server-protocol")
    settings = Settings(data_dir=data, server_workers=1, server_queue=0,
                        max_request_bytes=8 * 1024 * 1024)
    keys = KeyStore(make_engine(settings.resolved_database_url()), secrets.token_bytes(32))
    svc = RecordingService(settings, pipeline=service.pipeline)
    yield settings, keys, svc


@pytest.fixture(scope="module")
def admin(env: tuple[Settings, KeyStore, RecordingService]) -> IssuedKey:
    return env[1].create("admin", ["*"], ["*"])


@pytest.fixture()
def app(env: tuple[Settings, KeyStore, RecordingService]) -> Iterator[RekognitionApp]:
    settings, keys, svc = env
    svc.contexts.clear()
    svc.gate, svc.explode = None, False
    svc.entered.clear()
    application = RekognitionApp(svc, keys, settings, warm_up=False)
    yield application
    application.close()


@pytest.fixture()
def client(app: RekognitionApp, admin: IssuedKey) -> Client:
    return Client(app, admin)


# --- success and the request context --------------------------------------------------------

def test_detect_faces_in_process_matches_the_service(client: Client, astronaut_jpeg: bytes,
                                                    env: tuple[Settings, KeyStore, Any]) -> None:
    response = client.post("DetectFaces", {"Image": {"Bytes": b64(astronaut_jpeg)}})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-amz-json-1.1"
    uuid.UUID(response.headers["x-amzn-requestid"])
    direct = env[2].detect_faces({"Bytes": astronaut_jpeg})
    assert response.json() == json.loads(json.dumps(direct))
    assert response.json()["FaceDetails"]  # the portrait has a face


def test_context_headers_reach_the_service(client: Client, astronaut_jpeg: bytes,
                                          admin: IssuedKey, env: tuple[Any, Any, RecordingService]
                                          ) -> None:
    response = client.post("DetectFaces", {"Image": {"Bytes": b64(astronaut_jpeg)}}, headers={
        "X-Faceledger-Purpose": "access control", "X-Faceledger-Case": "CASE-7",
        "X-Faceledger-Consent": "consent-42"})
    assert response.status_code == 200, response.text
    (ctx,) = env[2].contexts
    assert ctx.principal == admin.info.access_key_id
    assert (ctx.purpose, ctx.case, ctx.consent) == ("access control", "CASE-7", "consent-42")
    assert ctx.request_id == response.headers["x-amzn-requestid"]
    assert ctx.admin is False


def test_unknown_members_are_ignored_like_aws(client: Client, astronaut_jpeg: bytes) -> None:
    response = client.post("DetectFaces", {"Image": {"Bytes": b64(astronaut_jpeg)},
                                           "SomethingNew": {"x": 1}})
    assert response.status_code == 200, response.text


def test_bad_context_header_value(client: Client) -> None:
    response = client.post("DetectFaces", {}, headers={"X-Faceledger-Purpose": "x" * 300})
    assert error(response)[:2] == (400, "InvalidParameterException")


# --- protocol errors ------------------------------------------------------------------------

def test_malformed_json(client: Client) -> None:
    status, code, message = error(client.post("DetectFaces", raw=b'{"Image": '))
    assert (status, code) == (400, "SerializationException")
    assert "not valid JSON" in message


def test_body_must_be_an_object(client: Client) -> None:
    assert error(client.post("DetectFaces", raw=b"[1, 2]"))[1] == "SerializationException"
    assert error(client.post("DetectFaces", raw=b'{"Image": NaN}'))[1] == "SerializationException"


@pytest.mark.parametrize("raw", [
    b"[" * 100_000, b"\xef\xbb\xbf{}", b"\xff\xfe\x00", b'{"Image": {"Bytes": 1e400}}',
    b'{"Image": {"Bytes": "aGk="}, "Attributes": [' + b"1" * 5000 + b"]}", b"null", b'"x"',
    b'{"Image": {"S3Object": {"Bucket": ["b"], "Name": "n"}}}',
])
def test_hostile_bodies_never_cause_a_server_error(client: Client, raw: bytes) -> None:
    status, code, _ = error(client.post("DetectFaces", raw=raw))
    assert status == 400 and code in ("SerializationException", "ValidationException"), code


def test_missing_required_member(client: Client) -> None:
    status, code, message = error(client.post("DetectFaces", {}))
    assert (status, code) == (400, "ValidationException")
    assert message == ("1 validation error detected: Value null at 'image' failed to satisfy "
                       "constraint: Member must not be null")


def test_two_missing_members_are_both_listed(client: Client) -> None:
    _, code, message = error(client.post("CompareFaces", {}))
    assert code == "ValidationException"
    assert message.startswith("2 validation errors detected: ")
    assert "'sourceImage'" in message and "'targetImage'" in message


@pytest.mark.parametrize(
    ("members", "fragment"),
    [
        ({"Image": "abc"}, "image: expected an object, got a string"),
        ({"Image": {"Bytes": 12}}, "image.bytes: expected a base64 string, got a number"),
        ({"Image": {"Bytes": "***not base64***"}}, "image.bytes: value is not valid base64"),
        ({"Image": {"Bytes": "aGk="}, "Attributes": "ALL"}, "attributes: expected a list"),
    ],
)
def test_wrong_json_types(client: Client, members: dict[str, Any], fragment: str) -> None:
    status, code, message = error(client.post("DetectFaces", members))
    assert (status, code) == (400, "SerializationException")
    assert fragment in message


def test_enum_and_range_constraints(client: Client, astronaut_jpeg: bytes) -> None:
    _, code, message = error(client.post("DetectFaces", {
        "Image": {"Bytes": b64(astronaut_jpeg)}, "Attributes": ["EVERYTHING"]}))
    assert code == "ValidationException"
    assert "Value 'EVERYTHING' at 'attributes.1.member'" in message
    assert "Member must satisfy enum value set: [DEFAULT, ALL" in message
    img = {"Bytes": b64(astronaut_jpeg)}
    _, code, message = error(client.post("CompareFaces", {
        "SourceImage": img, "TargetImage": img, "SimilarityThreshold": 150,
        "QualityFilter": "BEST"}))
    assert code == "ValidationException" and message.startswith("2 validation errors")
    assert "at 'similarityThreshold' failed to satisfy constraint: Member must have value " \
           "less than or equal to 100" in message
    assert "at 'qualityFilter'" in message


def test_integer_member_rejects_a_string(client: Client) -> None:
    if "SearchFacesByImage" not in client.app.operations:
        pytest.skip("SearchFacesByImage is not implemented yet")
    _, code, message = error(client.post("SearchFacesByImage", {
        "CollectionId": "c", "Image": {"Bytes": "aGk="}, "MaxFaces": "ten"}))
    assert code == "SerializationException" and "maxFaces: expected an integer" in message


def test_empty_image_bytes(client: Client) -> None:
    _, code, message = error(client.post("DetectFaces", {"Image": {"Bytes": ""}}))
    assert code == "ValidationException"
    assert "'image.bytes'" in message and "greater than or equal to 1" in message


def test_image_that_is_not_an_image(client: Client) -> None:
    response = client.post("DetectFaces", {"Image": {"Bytes": b64(b"GIF89a" + b"\0" * 100)}})
    assert error(response)[:2] == (400, "InvalidImageFormatException")


def test_wrong_content_type(client: Client) -> None:
    response = client.post("DetectFaces", {}, headers={"Content-Type": "text/plain"})
    assert error(response)[1] == "SerializationException"


def test_missing_or_foreign_target(client: Client) -> None:
    assert error(client.post(None, {}))[1] == "UnknownOperationException"
    response = client.post(None, {}, headers={"X-Amz-Target": "DynamoDB_20120810.ListTables"})
    assert error(response)[1] == "UnknownOperationException"


def test_other_methods_and_paths(app: RekognitionApp) -> None:
    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=URL) as c:
            return [await c.get("/"), await c.post("/admin", content=b"{}")]

    for response in asyncio.run(go()):
        assert error(response)[1] == "UnknownOperationException"


def test_every_unimplemented_model_operation_is_unknown(client: Client) -> None:
    missing = [op for op in protocol.model_operations() if op not in client.app.operations]
    assert missing, "the model has operations faceledger does not implement (video, labels...)"
    for op in missing:  # one at a time: this app admits one request at once
        response = client.post(op, {})
        status, code, message = error(response)
        assert (status, code) == (400, "UnknownOperationException"), op
        assert op in message


def test_every_implemented_operation_is_dispatched(client: Client) -> None:
    """With an empty body each implemented operation is reached: it answers (no required
    members) or names its missing members; never UnknownOperation, never a 500."""
    ops = sorted(client.app.operations)
    assert {"DetectFaces", "CompareFaces"} <= set(ops)
    for op in ops:
        response = client.post(op, {})
        shape = protocol.service_model().operation_model(op).input_shape
        required = [] if shape is None else shape.required_members
        if required:
            status, code, message = error(response)
            assert (status, code) == (400, "ValidationException"), (op, message)
            assert all(f"'{r[:1].lower() + r[1:]}'" in message for r in required), op
        else:
            assert response.status_code < 500, (op, response.text)
            assert response.json().get("__type") != "UnknownOperationException", op


def test_body_over_the_limit(client: Client, env: tuple[Settings, Any, Any]) -> None:
    big = b'{"Image": {"Bytes": "' + b"A" * env[0].max_request_bytes + b'"}}'
    status, code, message = error(client.post("DetectFaces", raw=big))
    assert (status, code) == (400, "ImageTooLargeException")
    assert "limit" in message


# --- bugs, overload, authentication in-process ---------------------------------------------

def test_internal_error_is_generic_and_logged(client: Client, astronaut_jpeg: bytes,
                                              env: tuple[Any, Any, RecordingService],
                                              caplog: pytest.LogCaptureFixture) -> None:
    env[2].explode = True
    with caplog.at_level(logging.ERROR, logger="faceledger.server"):
        response = client.post("DetectFaces", {"Image": {"Bytes": b64(astronaut_jpeg)}})
    status, code, message = error(response)
    assert (status, code) == (500, "InternalServerError")
    assert "secret internal detail" not in response.text and "Traceback" not in response.text
    assert response.headers["x-amzn-requestid"] in message
    assert "secret internal detail" in caplog.text  # the traceback is in the log only


def test_overload_answers_throttling_at_once(client: Client, astronaut_jpeg: bytes,
                                             env: tuple[Any, Any, RecordingService]) -> None:
    """1 worker, queue 0: while one request holds the worker, the next is refused at once."""
    svc = env[2]
    svc.gate = threading.Event()
    body = json.dumps({"Image": {"Bytes": b64(astronaut_jpeg)}}).encode()
    results: list[list[httpx.Response]] = []

    def run() -> None:
        results.append(client.many([("DetectFaces", body, None, True)]))

    first = threading.Thread(target=run)
    first.start()
    assert svc.entered.wait(30)
    throttled = client.post("DetectFaces", raw=body)
    svc.gate.set()
    first.join(60)
    assert error(throttled)[:2] == (400, "ThrottlingException")
    assert results[0][0].status_code == 200
    assert client.app.admission.inside == 0
    # capacity is back: the next request is served
    assert client.post("DetectFaces", raw=body).status_code == 200


def test_unsigned_request_is_refused(client: Client) -> None:
    status, code, _ = error(client.post("DetectFaces", {}, sign=False))
    assert (status, code) == (403, "MissingAuthenticationTokenException")


def test_operation_permission(app: RekognitionApp, env: tuple[Any, KeyStore, Any]) -> None:
    key = env[1].create("detect-only", ["Detect*"], ["*"])
    status, code, message = error(Client(app, key).post("CompareFaces", {}))
    assert (status, code) == (400, "AccessDeniedException")
    assert "not allowed to call CompareFaces" in message


def test_collection_permission(app: RekognitionApp, env: tuple[Any, KeyStore, Any]) -> None:
    scoped = [op for op in ("DescribeCollection", "ListFaces", "SearchFacesByImage")
              if op in app.operations]
    if not scoped:
        pytest.skip("no collection operation is implemented yet")
    key = env[1].create("team-a", ["*"], ["team-a-*"])
    status, code, message = error(Client(app, key).post(
        scoped[0], {"CollectionId": "team-b-staff", "Image": {"Bytes": "aGk="}}))
    assert (status, code) == (400, "AccessDeniedException")
    assert "collection team-b-staff" in message


def test_rate_limited_key(app: RekognitionApp, env: tuple[Any, KeyStore, Any]) -> None:
    key = env[1].create("slow", ["*"], ["*"], rate_limit=0.5)
    c = Client(app, key)
    assert error(c.post("DetectFaces", {}))[1] == "ValidationException"  # admitted
    assert error(c.post("DetectFaces", {}))[1] == "ProvisionedThroughputExceededException"


def test_dev_mode_serves_unsigned_requests(env: tuple[Settings, Any, RecordingService],
                                           astronaut_jpeg: bytes) -> None:
    settings, _, svc = env
    svc.contexts.clear()
    dev = RekognitionApp(svc, None, settings, dev_mode=True, warm_up=False)
    try:
        response = Client(dev, None).post("DetectFaces", {"Image": {"Bytes": b64(astronaut_jpeg)}},
                                          sign=False)
    finally:
        dev.close()
    assert response.status_code == 200, response.text
    assert response.headers["x-faceledger-dev-mode"] == "unauthenticated"
    assert svc.contexts[-1].principal == "anonymous-dev"


def test_call_arguments_refuses_members_a_method_lacks() -> None:
    def index(collection_id: str, image: Any, *, ctx: RequestContext) -> None: ...

    with pytest.raises(Exception) as info:
        protocol.call_arguments("IndexFaces", index,
                                {"CollectionId": "c", "Image": {}, "MaxFaces": 3})
    assert getattr(info.value, "code", "") == "InvalidParameterException"
    assert "MaxFaces" in str(info.value)


def test_call_arguments_drops_auto_filled_idempotency_tokens() -> None:
    def create_user(collection_id: str, user_id: str, *, ctx: RequestContext) -> None: ...

    kwargs = protocol.call_arguments("CreateUser", create_user, {
        "CollectionId": "c", "UserId": "u", "ClientRequestToken": "auto"})
    assert kwargs == {"collection_id": "c", "user_id": "u"}


def test_output_rendering_handles_timestamps_and_numpy() -> None:
    import datetime as dt

    import numpy as np

    rendered = json.loads(protocol.render_output({
        "CreationTimestamp": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        "Similarity": np.float32(99.5), "Count": np.int64(3)}))
    assert rendered == {"CreationTimestamp": 1704067200.0, "Similarity": 99.5, "Count": 3}

