"""Property-based fuzzing of the HTTP API: request bodies generated from botocore's Rekognition
input shapes (valid, then mutated) for every operation the server serves, pagination tokens,
and image bytes of every mode and bit depth Pillow writes (plus mutations).

The invariant, for every request: never a 5xx; a refusal carries a Rekognition error code (in
the body and in X-Amzn-ErrorType); and a refused request stores nothing - the catalog is
byte-for-byte unchanged and the ledger gains no event (except `refused` events, which is how
the ledger records policy refusals by design).

Bounded by default (a few hundred examples, derandomized so CI is reproducible; in-process
through httpx.ASGITransport, plus a smaller part against a real server on 127.0.0.1). A longer,
randomized run: FACELEDGER_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz.py
(examples per test; the summary line printed at the end gives cases run and 5xx found).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from faceledger import errors
from faceledger.ledger import schema as ledger_schema
from faceledger.server import RekognitionApp, protocol, running
from faceledger.server.keys import IssuedKey, KeyStore
from faceledger.server.storage import build_resolver
from faceledger.service import FaceService, paging
from faceledger.settings import Settings
from faceledger.store import catalog as catalog_tables

REGION = "us-east-1"
LONG_RUN = int(os.environ.get("FACELEDGER_FUZZ_EXAMPLES", "0"))
SEED = "fuzz"  # the collection every valid request aims at (holds a face and a user)
SCRATCH = ["fuzz-scratch", "fuzz-other"]  # names writes may create and delete
VIDEO_BUCKET = "fuzz-videos"


def examples(default: int) -> Any:
    """Hypothesis settings: `default` examples, derandomized; FACELEDGER_FUZZ_EXAMPLES=N runs N,
    randomized (a real fuzzing run)."""
    return settings(
        max_examples=LONG_RUN or default, derandomize=not LONG_RUN, deadline=None,
        database=None, suppress_health_check=list(HealthCheck), print_blob=True)


def _codes(cls: type[errors.FaceledgerError]) -> set[str]:
    found = {cls.code}
    for sub in cls.__subclasses__():
        found |= _codes(sub)
    return found


KNOWN_CODES = _codes(errors.FaceledgerError) - {"InternalServerError"}


@dataclass
class Tally:
    """What the fuzzing did, printed at the end of the session (the figure for the report)."""

    cases: int = 0
    server_errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


TALLY = Tally()


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print(f"\nfuzz: {TALLY.cases} requests, {TALLY.server_errors} 5xx, statuses "
          f"{dict(sorted(TALLY.statuses.items()))}")


# --- the world: a real service, a seed collection with a face and a user ------------------

@dataclass
class World:
    app: RekognitionApp
    service: FaceService
    keys: KeyStore
    key: IssuedKey
    face_ids: list[str]
    user_ids: list[str]

    def sign(self, url: str, operation: str, body: bytes) -> dict[str, str]:
        # a fresh signed invocation id, as the JS SDK v3 sends: a signature is served once, and
        # hypothesis may send the same body twice within a second
        request = AWSRequest(method="POST", url=url, data=body, headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"RekognitionService.{operation}",
            "amz-sdk-invocation-id": str(uuid.uuid4())})
        SigV4Auth(Credentials(self.key.info.access_key_id, self.key.secret_access_key),
                  "rekognition", REGION).add_auth(request)
        return dict(request.headers.items())

    def in_process(self, operation: str, body: bytes) -> httpx.Response:
        headers = self.sign("http://testserver/", operation, body)

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://testserver") as client:
                return await client.post("/", content=body, headers=headers)

        return asyncio.run(go())

    def state(self) -> tuple[str, int]:
        """A digest of everything the catalog holds, and the ledger's last seq."""
        digest = hashlib.sha256()
        with self.service.engine.connect() as conn:
            for table in (catalog_tables.collections, catalog_tables.users,
                          catalog_tables.faces, catalog_tables.tombstones,
                          catalog_tables.request_tokens):
                for row in conn.execute(sa.select(table).order_by(*table.primary_key.columns)):
                    digest.update(repr(tuple(row)).encode())
        return digest.hexdigest(), self.service.ledger.head().seq

    def new_outcomes(self, after_seq: int) -> list[str]:
        e = ledger_schema.events
        with self.service.engine.connect() as conn:
            return [str(o) for o in conn.execute(
                sa.select(e.c.outcome).where(e.c.seq > after_seq)).scalars()]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, service: FaceService,
          astronaut_jpeg: bytes) -> Iterator[World]:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "videos").mkdir()
    cfg = Settings(data_dir=root / "data", config_dir=root / "config", server_workers=1,
                   server_queue=8, local_buckets={VIDEO_BUCKET: root / "videos"},
                   video_sample_rate=1.0)
    svc = FaceService(cfg, pipeline=service.pipeline, resolver=build_resolver(cfg))
    keys = KeyStore(svc.engine, secrets.token_bytes(32))
    key = keys.create("fuzzer", ["*"], ["*"], admin=True, s3_objects=["*"])
    svc.create_collection(SEED)
    indexed = svc.index_faces(SEED, {"Bytes": astronaut_jpeg}, external_image_id="astronaut")
    face_ids = [r["Face"]["FaceId"] for r in indexed["FaceRecords"]]
    svc.create_user(SEED, "eileen")
    svc.associate_faces(SEED, "eileen", face_ids, user_match_threshold=0)
    app = RekognitionApp(svc, keys, cfg, warm_up=False)
    yield World(app, svc, keys, key, face_ids, ["eileen"])
    app.close()
    svc.close()


def check(world: World, operation: str, body: bytes,
          send: Callable[[str, bytes], httpx.Response] | None = None) -> httpx.Response:
    """Send one request and assert the invariant."""
    before, seq = world.state()
    response = (send or world.in_process)(operation, body)
    TALLY.cases += 1
    TALLY.statuses[response.status_code] = TALLY.statuses.get(response.status_code, 0) + 1
    if response.status_code >= 500:
        TALLY.server_errors += 1
    assert response.status_code < 500, (operation, body[:500], response.text)
    if response.status_code != 200:
        payload = response.json()
        assert payload["__type"] in KNOWN_CODES, payload
        assert response.headers["x-amzn-errortype"] == payload["__type"]
        assert isinstance(payload["message"], str) and payload["message"].isprintable()
        after, _ = world.state()
        assert after == before, f"{operation} was refused but changed the catalog"
        assert set(world.new_outcomes(seq)) <= {"refused"}, "a refused request left an event"
    return response


# --- strategies ----------------------------------------------------------------------------

PNG_MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"]
JPEG_MODES = ["L", "RGB", "CMYK"]


@st.composite
def images(draw: st.DrawFn, faces: bytes | None = None) -> bytes:
    """Valid image bytes of any mode and bit depth Pillow writes as PNG, JPEG or MPO."""
    fmt = draw(st.sampled_from(["PNG", "JPEG", "MPO"]))
    mode = draw(st.sampled_from(PNG_MODES if fmt == "PNG" else JPEG_MODES))
    width = draw(st.integers(1, 160))
    height = draw(st.integers(1, 160))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    if faces is not None and draw(st.booleans()):
        picture = Image.open(io.BytesIO(faces)).convert("RGB").resize((max(width, 80) * 2,
                                                                       max(height, 80) * 2))
    else:
        picture = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode == "I;16":
        image = Image.fromarray(
            np.asarray(picture.convert("L"), dtype=np.uint16) * draw(st.sampled_from([1, 257])))
    elif mode == "P":
        image = picture.convert("P", palette=Image.Palette.ADAPTIVE,
                                colors=draw(st.sampled_from([2, 16, 256])))
    else:
        image = picture.convert(mode)
    options: dict[str, Any] = {}
    if fmt == "PNG":
        if mode == "P":
            options["bits"] = draw(st.sampled_from([1, 2, 4, 8]))
            if draw(st.booleans()):
                options["transparency"] = 0
        if mode == "RGB" and draw(st.booleans()):
            options["transparency"] = (0, 0, 0)
        options["compress_level"] = draw(st.integers(0, 9))
    else:
        options["quality"] = draw(st.integers(1, 95))
        if fmt == "MPO":
            options.update(save_all=True, append_images=[image.copy()])
        elif draw(st.booleans()):
            options["progressive"] = True
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


@st.composite
def mutated_bytes(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """Valid bytes, then truncated, bit-flipped, spliced or padded."""
    data = bytearray(draw(valid))
    how = draw(st.sampled_from(["truncate", "flip", "splice", "pad", "header"]))
    if how == "truncate":
        return bytes(data[: draw(st.integers(0, max(len(data) - 1, 0)))])
    if how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if how == "splice":
        i = draw(st.integers(0, len(data)))
        return bytes(data[:i] + draw(st.binary(max_size=64)) + data[i:])
    if how == "pad":
        return bytes(data + draw(st.binary(min_size=1, max_size=64)))
    return draw(st.binary(max_size=16)) + bytes(data[16:])


def image_bytes(world_faces: bytes) -> st.SearchStrategy[bytes]:
    valid = images(world_faces)
    return st.one_of(valid, mutated_bytes(valid), st.binary(max_size=64))


def tokens(world: World | None = None) -> st.SearchStrategy[str]:
    """NextTokens: genuine ones, their neighbours, and forgeries of every shape."""
    fields = st.tuples(st.sampled_from(["c", "f", "u", "x", ""]),
                       st.integers(-2, 2 ** 64), st.integers(-2, 2 ** 64),
                       st.text(alphabet="abcdefghij-_.:\n", max_size=130))
    forged = fields.map(lambda f: base64.urlsafe_b64encode(
        f"{f[0]}:{f[1]}:{f[2]}:{f[3]}".encode()).decode().rstrip("="))
    legacy = st.builds(lambda t, c, a: base64.urlsafe_b64encode(json.dumps(
        {"t": t, "c": c, "a": a}).encode()).decode(),
        st.sampled_from(["faces", "users", "collections"]),
        st.integers(-1, 2 ** 64), st.one_of(st.integers(-1, 2 ** 64), st.text(max_size=40)))
    genuine = st.builds(lambda k, c, r, p: paging.make_token(k, c, r, p),
                        st.sampled_from(paging.KINDS), st.integers(0, paging.MAX_PK),
                        st.integers(1, paging.MAX_PK),
                        st.from_regex(r"[a-zA-Z0-9_.\-]{0,300}", fullmatch=True))
    return st.one_of(forged, legacy, genuine, st.text(max_size=300))


JSON_JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
    st.sampled_from(["", "\n\x00\u2028\x1b[2J", "a" * 300, "9" * 40, "-1", "NaN"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                         max_size=2))


class Shapes:
    """Strategies for botocore shapes, aimed at the world's seed data where names matter."""

    def __init__(self, world: World, faces: bytes, *, valid_images: bool = False) -> None:
        self.world = world
        self.faces = faces
        # valid bodies carry decodable images, so they reach the models and the store
        self.images = images(faces) if valid_images else image_bytes(faces)

    def value(self, shape: Any, name: str, operation: str) -> st.SearchStrategy[Any]:
        kind = shape.type_name
        meta = shape.metadata
        if kind == "structure":
            members = shape.members
            required = {n: self.value(members[n], n, operation) for n in shape.required_members}
            optional = {n: self.value(m, n, operation) for n, m in members.items()
                        if n not in required}
            return st.fixed_dictionaries(required, optional=optional)
        if kind == "list":
            low = meta.get("min", 0)
            return st.lists(self.value(shape.member, name, operation), min_size=low,
                            max_size=max(low, min(meta.get("max", 4), 4)))
        if kind == "map":
            return st.dictionaries(self.value(shape.key, name, operation),
                                   self.value(shape.value, name, operation), max_size=3)
        if kind == "string":
            return self.string(shape, name, operation)
        if kind in ("integer", "long"):
            return st.integers(meta.get("min", -(2 ** 31)),
                               meta.get("max", 2 ** 31 - 1 if kind == "integer" else 2 ** 63 - 1))
        if kind in ("float", "double"):
            return st.floats(meta.get("min", -1e6), meta.get("max", 1e6), allow_nan=False)
        if kind == "boolean":
            return st.booleans()
        if kind == "blob":
            return self.images.map(lambda b: base64.b64encode(b).decode())
        if kind == "timestamp":
            return st.integers(0, 2 ** 31)
        return st.none()  # pragma: no cover - no other kinds in the model

    def string(self, shape: Any, name: str, operation: str) -> st.SearchStrategy[str]:
        meta = shape.metadata
        if shape.enum:
            return st.sampled_from(list(shape.enum))
        if name == "CollectionId":
            safe = operation not in ("DeleteCollection",)
            return st.sampled_from(([SEED] if safe else []) + SCRATCH)
        if name in ("FaceId", "FaceIds", "TargetImageFaceId"):
            return st.one_of(st.sampled_from(self.world.face_ids), st.uuids().map(str))
        if name == "UserId":
            return st.sampled_from([*self.world.user_ids, "someone-else"])
        if name == "NextToken":
            return tokens()
        low, high = meta.get("min", 0), min(meta.get("max", 64), 64)
        pattern = meta.get("pattern")
        if pattern and protocol._pattern(pattern) is not None:
            return st.from_regex(pattern.strip("^$"), fullmatch=True).filter(
                lambda s: low <= len(s) <= meta.get("max", 10 ** 6))
        return st.text(min_size=low, max_size=max(low, high))


@st.composite
def mutate(draw: st.DrawFn, body: dict[str, Any]) -> Any:
    """One structural mutation of a valid body."""
    how = draw(st.sampled_from(["drop", "junk", "extra", "nest", "replace"]))
    leaves: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                leaves.append((node, k))
                walk(v)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                leaves.append((node, i))
                walk(v)

    walk(body)
    if how == "replace":
        return draw(JSON_JUNK)
    if how == "extra" or not leaves:
        body[draw(st.text(min_size=1, max_size=10))] = draw(JSON_JUNK)
        return body
    parent, key = draw(st.sampled_from(leaves))
    if how == "drop" and isinstance(parent, dict):
        del parent[key]
    elif how == "nest":
        parent[key] = [parent[key]]
    else:
        parent[key] = draw(JSON_JUNK)
    return body


def request_bodies(shapes: Shapes, operation: str) -> st.SearchStrategy[bytes]:
    """Bodies for `operation`: valid by the model (with decodable images), or one mutation of
    a valid body (whose images may be mutated too)."""
    shape = protocol.service_model().operation_model(operation).input_shape
    valid = Shapes(shapes.world, shapes.faces, valid_images=True).value(shape, operation,
                                                                        operation)
    mutated = shapes.value(shape, operation, operation).flatmap(mutate)
    return st.one_of(valid, mutated).map(lambda v: json.dumps(v).encode())


# --- the properties ------------------------------------------------------------------------

@pytest.mark.parametrize("operation", protocol.implemented_operations(FaceService))
def test_every_operation_holds_the_invariant(world: World, operation: str,
                                             astronaut_jpeg: bytes) -> None:
    shapes = Shapes(world, astronaut_jpeg)

    @examples(10)
    @given(body=request_bodies(shapes, operation))
    def run(body: bytes) -> None:
        check(world, operation, body)

    run()


def test_pagination_tokens_never_break_a_listing(world: World) -> None:
    @examples(40)
    @given(operation=st.sampled_from(["ListCollections", "ListFaces", "ListUsers"]),
           token=tokens(), max_results=st.one_of(st.none(), st.integers(0, 3)))
    def run(operation: str, token: str, max_results: int | None) -> None:
        body: dict[str, Any] = {"NextToken": token}
        if operation != "ListCollections":
            body["CollectionId"] = SEED
        if max_results is not None and not (operation == "ListUsers" and max_results == 0):
            body["MaxResults"] = max_results
        response = check(world, operation, json.dumps(body).encode())
        if response.status_code != 200:
            assert response.json()["__type"] in ("InvalidPaginationTokenException",
                                                 "ValidationException")

    run()


def test_image_bytes_of_every_mode_and_mutation(world: World, astronaut_jpeg: bytes) -> None:
    @examples(60)
    @given(data=image_bytes(astronaut_jpeg))
    def run(data: bytes) -> None:
        body = json.dumps({"Image": {"Bytes": base64.b64encode(data).decode()}}).encode()
        response = check(world, "DetectFaces", body)
        if response.status_code != 200:
            assert response.json()["__type"] in (
                "InvalidImageFormatException", "InvalidParameterException",
                "ImageTooLargeException", "ValidationException")

    run()


def test_a_real_server_holds_the_invariant(world: World, astronaut_jpeg: bytes) -> None:
    """The same properties over TCP (uvicorn on 127.0.0.1), fewer examples."""
    shapes = Shapes(world, astronaut_jpeg)
    ops = protocol.implemented_operations(FaceService)
    app = RekognitionApp(world.service, world.keys, world.service.settings, warm_up=False)
    with running(app) as url:
        def send(operation: str, body: bytes) -> httpx.Response:
            headers = world.sign(url + "/", operation, body)
            return httpx.post(url + "/", content=body, headers=headers, timeout=60)

        @examples(30)
        @given(data=st.data(), operation=st.sampled_from(ops))
        def run(data: st.DataObject, operation: str) -> None:
            check(world, operation, data.draw(request_bodies(shapes, operation)), send)

        run()


def test_unique_request_ids_are_uuids(world: World) -> None:
    """Sanity check of the harness: a plain valid request succeeds in-process."""
    response = check(world, "DescribeCollection", json.dumps({"CollectionId": SEED}).encode())
    assert response.status_code == 200, response.text
    assert uuid.UUID(response.headers["x-amzn-requestid"])


# --- what the long fuzzing run found (kept as fixed examples) -------------------------------

# A 1x1 CMYK JPEG whose MPF index is malformed: Pillow warns and reads it as a plain JPEG; the
# warning (an error under pytest's filterwarnings) used to escape as a 500.
MALFORMED_MPO = (
    "/9j/7gAOQWRvYmUAZAAAAAAA/+IAaE1QRgAgIElJKgAIAAAAAwAAsAcABAAAADAxMDABsAQAAQAAAAIAAAACsAcAIA"
    "AAADIAAAAAAAAAAAADAMYBAAAAAAAAAAAAAAAAAABcAQAAqgEAAAAAAAAgICAgICAgICAgICAgIP/bAEMA////////"
    "///////////////////////////////////////////////////////////////////////////////AABQIAAEAAQ"
    "RDEQBNEQBZEQBLEQD/xAAfAAABBQEBAQEBAQAAAAAAAAAAAQIDBAUGBwgJCgv/xAC1EAACAQMDAgQDBQUEBAAAAX0B"
    "AgMABBEFEiExQQYTUWEHInEUMoGRoQgjQrHBFVLR8CQzYnKCCQoWFxgZGiUmJygpKjQ1Njc4OTpDREVGR0hJSlNUVV"
    "ZXWFlaY2RlZmdoaWpzdHV2d3h5eoOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU"
    "1dbX2Nna4eLj5OXm5+jp6vHy8/T19vf4+fr/2gAOBEMATQBZAEsAAD8ASinVJX//2Q=="
)


@pytest.mark.parametrize(("operation", "body"), [
    ("DetectFaces", json.dumps({"Image": {"Bytes": MALFORMED_MPO}})),
    # a map key with a control character used to be echoed raw in the error message
    ("CreateCollection", '{"CollectionId": "fuzz", "Tags": {"\\u001f": null}}'),
    # a no-break space is not printable either: it was echoed raw
    ("DeleteCollection", '{"CollectionId": "\\u00a0"}'),
])
def test_fuzz_findings(world: World, operation: str, body: str) -> None:
    response = check(world, operation, body.encode())
    assert response.status_code == 400


# --- the console (issue 18): never a 5xx, never a traceback, state unchanged after a refusal ---

CONSOLE_PAGES = ["/console/", "/console/queue", "/console/ledger", "/console/ledger/verify",
                 "/console/report", "/console/collections"]


@dataclass
class ConsoleClients:
    url: str
    clients: dict[str, httpx.Client]  # role -> a signed-in browser
    csrf: dict[str, str]


@pytest.fixture(scope="module")
def console_clients(world: World) -> Iterator[ConsoleClients]:
    import re

    from faceledger.console import build_console

    svc = world.service
    app = RekognitionApp(svc, world.keys, svc.settings, warm_up=False,
                         console=build_console(svc, world.keys))
    issued = {role: world.keys.create(f"console-{role}", ["*"], ["*"], roles=[role])
              for role in ("admin", "auditor", "reviewer")}
    with running(app) as url:
        clients: dict[str, httpx.Client] = {}
        csrf: dict[str, str] = {}
        try:
            for role, key in issued.items():
                c = clients[role] = httpx.Client(base_url=url, timeout=60)
                form = c.get("/console/signin")
                token = re.search(r'name="csrf" value="([^"]+)"', form.text)
                assert token is not None
                done = c.post("/console/signin", data={
                    "csrf": token.group(1), "access_key_id": key.info.access_key_id,
                    "secret": key.secret_access_key})
                assert done.status_code == 303, done.text
                page = c.get("/console/ledger")
                found = re.search(r'name="csrf" value="([^"]+)"', page.text)
                assert found is not None
                csrf[role] = found.group(1)
            yield ConsoleClients(url, clients, csrf)
        finally:
            for c in clients.values():
                c.close()
    app.close()


def _segment() -> st.SearchStrategy[str]:
    """A path segment or query value an attacker would try: numbers past every integer range,
    digits that are not ASCII, controls, bidi overrides, long text."""
    return st.one_of(
        st.integers(-2**70, 2**130).map(str),
        st.sampled_from(["9" * 30, "²", "٣", "9223372036854775807", "9223372036854775808", "0",
                         "-1", "Ω-7", "\u202e", "\x1b[31m", "..", "%00", ""]),
        st.text(max_size=80),
        st.text(alphabet=st.characters(max_codepoint=0x7f), max_size=300),
    )


@st.composite
def console_requests(draw: st.DrawFn, csrf: dict[str, str]) -> tuple[str, str, str, Any]:
    """(role, method, path with query, form or None)."""
    from urllib.parse import quote, urlencode

    role = draw(st.sampled_from(["admin", "auditor", "reviewer", "anonymous"]))
    seg = quote(draw(_segment()), safe="")
    kind = draw(st.sampled_from(["page", "event", "candidate", "collection", "report",
                                 "export", "decide", "signin", "signout"]))
    query = urlencode({k: draw(_segment()) for k in draw(st.lists(st.sampled_from(
        ["before", "from", "to", "operation", "collection", "principal", "case", "outcome",
         "purpose"]), max_size=4, unique=True))})
    token = csrf.get(role, "")
    form_token = draw(st.sampled_from([token, "", "forged"]))
    if kind == "page":
        path, method, form = draw(st.sampled_from(CONSOLE_PAGES)), "GET", None
    elif kind == "event":
        path, method, form = f"/console/ledger/{seg}", "GET", None
    elif kind == "candidate":
        path, method, form = f"/console/candidates/{seg}", "GET", None
    elif kind == "collection":
        path, method, form = f"/console/collections/{seg}", "GET", None
    elif kind == "report":
        path, method, form = f"/console/report.{seg}", "GET", None
    elif kind == "export":
        path, method = "/console/ledger/export", "POST"
        form = {"csrf": form_token, "case": draw(_segment())}
    elif kind == "decide":
        path, method = f"/console/candidates/{seg}", "POST"
        form = {"csrf": form_token, "decision": draw(st.sampled_from(["CONFIRM", "REJECT", ""])),
                "reason": draw(st.text(max_size=200))}
    elif kind == "signin":
        path, method = "/console/signin", "POST"
        form = {"csrf": form_token, "access_key_id": draw(_segment()), "secret": draw(_segment())}
    else:
        path, method, form = "/console/signout", "POST", {"csrf": form_token}
    if form is not None and draw(st.booleans()):
        form["padding"] = "x" * draw(st.sampled_from([10, 70_000]))  # past the 64 KB limit
    return role, method, path + (f"?{query}" if query and method == "GET" else ""), form


def test_the_console_holds_the_invariant(world: World, console_clients: ConsoleClients) -> None:
    """Every console page and form, fuzzed per role: never a 5xx, never a traceback in the page,
    and a refused request changes no catalog row and leaves no event but `refused` ones."""
    anonymous = httpx.Client(base_url=console_clients.url, timeout=60)

    @examples(120)
    @given(request=console_requests(console_clients.csrf))
    def run(request: tuple[str, str, str, Any]) -> None:
        role, method, path, form = request
        client = console_clients.clients.get(role, anonymous)
        if role == "anonymous":
            client.cookies.clear()
        if path.startswith("/console/signout"):
            client = anonymous  # keep the role clients signed in
        before, seq = world.state()
        response = client.request(method, path, data=form)
        TALLY.cases += 1
        TALLY.statuses[response.status_code] = TALLY.statuses.get(response.status_code, 0) + 1
        if response.status_code >= 500:
            TALLY.server_errors += 1
        assert response.status_code < 500, (
            method, path, form and {k: str(v)[:80] for k, v in form.items()}, response.text[:500])
        assert "Traceback" not in response.text
        if response.status_code >= 400:
            after, _ = world.state()
            assert after == before, f"{method} {path} was refused but changed the catalog"
            assert set(world.new_outcomes(seq)) <= {"refused"}, "a refusal left an event"

    try:
        run()
    finally:
        anonymous.close()


# --- stored video ---------------------------------------------------------------------------

def _small_video() -> bytes:
    """A one-second 96x64 H.264 MP4 of noise (no face: its jobs end quickly)."""
    import av

    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=5)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        for _ in range(5):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (64, 96, 3), np.uint8),
                                               format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def _jobs(world: World) -> set[str]:
    from faceledger.video.jobs import jobs

    with world.service.video_jobs.engine.connect() as conn:  # (creates the tables)
        return set(conn.execute(sa.select(jobs.c.job_id)).scalars())


class Blob(bytes):
    """Bytes that Hypothesis shows by length and digest (a video's repr is too long)."""

    def __repr__(self) -> str:
        return f"Blob({len(self)} bytes, sha256 {hashlib.sha256(self).hexdigest()[:12]})"


def _idle(world: World) -> None:
    """Wait until no video job runs: a job that ends appends its own event, which must not be
    taken for an event of the request under test."""
    from faceledger.video.jobs import IN_PROGRESS, jobs

    deadline = time.monotonic() + 120
    while True:
        with world.service.video_jobs.engine.connect() as conn:
            if not conn.execute(sa.select(jobs.c.job_id).where(
                    jobs.c.status == IN_PROGRESS)).first():
                return
        assert time.monotonic() < deadline, "video jobs did not end"
        time.sleep(0.1)


def test_video_operations_hold_the_invariant(world: World, astronaut_jpeg: bytes) -> None:
    """StartFace* on video bytes valid, mutated, still images and junk, with any options;
    GetFace* with any JobId, MaxResults and NextToken (huge offsets included): never a 5xx,
    never a traceback, and a refused start leaves no job, no spool file and no event."""
    video = _small_video()
    bucket = world.service.settings.local_buckets[VIDEO_BUCKET]
    spool = world.service.settings.data_dir / "video-spool"
    started: list[str] = []
    contents = st.one_of(st.just(video), mutated_bytes(st.just(video)),
                         image_bytes(astronaut_jpeg), st.binary(max_size=2048)).map(Blob)
    offsets = st.sampled_from([0, 1, 2 ** 31, 2 ** 63 - 1, 2 ** 63, 2 ** 64, 10 ** 30, -1])

    @examples(25)
    @given(data=contents, name=st.sampled_from(["v.mp4", "v.mov", "v.jpg", "v"]),
           search=st.booleans(), options=st.dictionaries(
               st.sampled_from(["JobTag", "FaceAttributes", "FaceMatchThreshold",
                                "ClientRequestToken"]), JSON_JUNK, max_size=2))
    def start(data: bytes, name: str, search: bool, options: dict[str, Any]) -> None:
        (bucket / name).write_bytes(data)
        body: dict[str, Any] = {"Video": {"S3Object": {"Bucket": VIDEO_BUCKET, "Name": name}},
                                **options}
        if search:
            body["CollectionId"] = SEED
            body.pop("FaceAttributes", None)
        else:
            body.pop("FaceMatchThreshold", None)
        _idle(world)
        jobs_before = _jobs(world)
        spooled = set(spool.glob("*")) if spool.is_dir() else set()
        op = "StartFaceSearch" if search else "StartFaceDetection"
        response = check(world, op, json.dumps(body).encode())
        if response.status_code == 200:
            started.append(response.json()["JobId"])
        else:
            assert _jobs(world) == jobs_before
            assert (set(spool.glob("*")) if spool.is_dir() else set()) <= spooled
            assert "Traceback" not in response.text and str(bucket) not in response.text

    start()
    assert started, "no valid video was ever started"

    @examples(40)
    @given(job=st.one_of(st.sampled_from(started), st.text(max_size=70)),
           op=st.sampled_from(["GetFaceDetection", "GetFaceSearch"]), offset=offsets,
           order=st.sampled_from(["TIMESTAMP", "INDEX", "x"]),
           max_results=st.one_of(st.none(), JSON_JUNK), raw=st.one_of(st.none(), tokens()))
    def get(job: str, op: str, offset: int, order: str, max_results: Any,
            raw: str | None) -> None:
        token = raw if raw is not None else base64.urlsafe_b64encode(
            f"o:{offset}:{op}/{order}/{job}".encode()).decode().rstrip("=")
        _idle(world)
        body: dict[str, Any] = {"JobId": job, "NextToken": token}
        if max_results is not None:
            body["MaxResults"] = max_results
        response = check(world, op, json.dumps(body).encode())
        assert "Traceback" not in response.text

    get()
