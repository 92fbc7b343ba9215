"""Regression tests for the second security probe (issue 18, section 3), each made the way the
attack was: raw sockets, httpx and boto3 against a real server on 127.0.0.1, the CLI as a
subprocess, under the umask a real machine has.

Slow bodies, chunked console forms, file permissions whatever runs first, log injection through
the console, KEK rotation interrupted in every state, console 500s and the case oracle, sign-in
throttling, replayed signed requests, and NotificationChannel topics bound to keys.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import re
import secrets
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from sqlalchemy import func, select

from faceledger.context import RequestContext
from faceledger.ledger import schema as ledger_schema
from faceledger.sdk import sign_each_call
from faceledger.server import RekognitionApp, running
from faceledger.server.keys import IssuedKey, KeyStore, kek_fingerprint, load_kek, write_kek_file
from faceledger.server.run import build_app
from faceledger.server.sigv4 import signing_key
from faceledger.service import FaceService
from faceledger.settings import Settings
from faceledger.text import EscapingFilter

REGION = "us-east-1"
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})
SRC = Path(__file__).resolve().parents[1] / "src" / "faceledger"


def _client(url: str, key: IssuedKey) -> Any:
    # each call signed anew (SECURITY.md); the replays below are sent raw, with httpx
    return sign_each_call(boto3.session.Session().client(
        "rekognition", endpoint_url=url, region_name=REGION,
        aws_access_key_id=key.info.access_key_id, aws_secret_access_key=key.secret_access_key,
        config=NO_RETRIES))


def _signed(url: str, key: IssuedKey, operation: str, body: bytes) -> dict[str, str]:
    """Headers of a SigV4-signed POST of `body` (sent as is: a replay sends them again)."""
    request = AWSRequest(method="POST", url=url + "/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": f"RekognitionService.{operation}"})
    SigV4Auth(Credentials(key.info.access_key_id, key.secret_access_key), "rekognition",
              REGION).add_auth(request)
    return dict(request.headers.items())


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0  # pragma: no cover - not Linux


# --- slow bodies hold no slot ------------------------------------------------------------------

def test_trickling_connections_lock_no_one_out_and_are_cut_off(
        tmp_path: Path, service: FaceService) -> None:
    """40 unauthenticated connections send headers, then one byte every 0.3 s (the probe: 34
    connections at 1 byte / 5 s held every slot). With 2 slots, signed calls still succeed
    meanwhile (they got ThrottlingException before); each trickle is cut off with 408 once the
    grace period is over and it is below the minimum rate (6 s here; default 10 s)."""
    settings = Settings(data_dir=tmp_path / "data", config_dir=tmp_path / "config",
                        server_workers=1, server_queue=1, server_body_grace_seconds=6.0,
                        server_body_min_rate=100.0, server_body_timeout_seconds=10.0)
    svc = FaceService(settings, pipeline=service.pipeline)
    keys = KeyStore(svc.engine, secrets.token_bytes(32))
    key = keys.create("caller", ["*"], ["*"])
    app = RekognitionApp(svc, keys, settings, warm_up=False)
    with running(app) as url:
        host, port = _host_port(url)
        socks = []
        for _ in range(40):
            s = socket.create_connection((host, port), timeout=10)
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                      b"X-Amz-Target: RekognitionService.IndexFaces\r\n"
                      b"Content-Type: application/x-amz-json-1.1\r\n\r\n")
            socks.append(s)
        stop = threading.Event()

        def trickle() -> None:
            while not stop.is_set():
                for s in socks:
                    try:
                        s.send(b"{")
                    except OSError:
                        pass
                stop.wait(0.3)

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        started = time.monotonic()
        try:
            # every trickle is inside, mid-body: each holds a byte of the body budget
            while app.body_budget.used < len(socks):
                assert time.monotonic() < started + 5, f"{app.body_budget.used} trickles inside"
                time.sleep(0.01)
            inside = time.monotonic()
            client = _client(url, key)
            for i in range(3):  # signed requests are served while the trickles last
                client.create_collection(CollectionId=f"served-{i}")
                client.describe_collection(CollectionId=f"served-{i}")  # each signature once
            print(f"\n40 trickles inside after {inside - started:.2f} s; 3 signed pairs "
                  f"served in {time.monotonic() - inside:.2f} s meanwhile")
            still_in = 0  # ... and the trickles were all still inside, unanswered, meanwhile
            for s in socks:
                s.setblocking(False)
                try:
                    s.recv(1, socket.MSG_PEEK)
                except BlockingIOError:
                    still_in += 1
                s.setblocking(True)
            assert still_in == len(socks), f"only {still_in} trickles were inside"
            answers = []
            for s in socks:
                s.settimeout(10.0)
                data = b""
                try:
                    while chunk := s.recv(4096):
                        data += chunk
                except OSError:
                    pass
                answers.append(data)
        finally:
            stop.set()
            sender.join()
            for s in socks:
                s.close()
        elapsed = time.monotonic() - started
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[0][:200]
        assert b"RequestTimeoutException" in answers[0]
        assert elapsed < 10.0, f"trickles were cut off after {elapsed:.1f} s"
        listed = client.list_collections()["CollectionIds"]
        assert {f"served-{i}" for i in range(3)} <= set(listed)
    app.close()
    svc.close()


# --- console: 64 KB whatever the framing, and an admission limit ------------------------------

@dataclass
class ConsoleWorld:
    url: str
    settings: Settings
    service: FaceService
    keys: dict[str, IssuedKey]
    log: io.StringIO


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, service: FaceService) -> Iterator[
        ConsoleWorld]:
    root = tmp_path_factory.mktemp("probe-two-console")
    settings = Settings(data_dir=root / "data", config_dir=root / "config", server_workers=1,
                        console_signin_burst=3, console_signin_failures_per_minute=1.0)
    svc = FaceService(settings, pipeline=service.pipeline)
    store = KeyStore.open(settings, svc.engine, create_kek=True)
    keys = {name: store.create(name, ["*"], ["*"], roles=roles) for name, roles in {
        "admin": ("admin",), "auditor": ("auditor",), "reviewer": ("reviewer",)}.items()}
    # events carrying case references, one of them not ASCII
    for case in ("Ω-7", "INC-1"):
        svc.create_collection(f"case-{len(case)}-{case[:3].encode().hex()}",
                              ctx=RequestContext(case=case, admin=True))
    out = io.StringIO()
    handler = logging.StreamHandler(out)  # the server's log output, as an operator's handler
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    top = logging.getLogger("faceledger")
    top.addHandler(handler)
    level = top.level
    top.setLevel(logging.INFO)
    app = build_app(settings, service=svc, warm_up=False)
    try:
        with running(app) as url:
            yield ConsoleWorld(url, settings, svc, keys, out)
    finally:
        top.removeHandler(handler)
        top.setLevel(level)
        app.close()
        svc.close()


@contextmanager
def _signed_in(world: ConsoleWorld, name: str) -> Iterator[httpx.Client]:
    """A browser-like client signed in as `name`."""
    with httpx.Client(base_url=world.url, timeout=30) as client:
        yield _sign_in(client, world, name)


def _sign_in(client: httpx.Client, world: ConsoleWorld, name: str) -> httpx.Client:
    form = client.get("/console/signin")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    key = world.keys[name]
    done = client.post("/console/signin", data={
        "csrf": token.group(1), "access_key_id": key.info.access_key_id,
        "secret": key.secret_access_key})
    assert done.status_code == 303, done.text
    return client


def test_chunked_console_forms_are_cut_at_64_kb_before_sign_in(console: ConsoleWorld) -> None:
    """The probe: 8 connections posting 48 fields of 1 MB, chunked, to the sign-in form took
    the server from 201 to 590 MB. Now each is answered 413 after 64 KB, and memory holds."""
    host, port = _host_port(console.url)
    field = b"a=" + b"x" * ((1 << 20) - 64) + b"&"
    before = _rss_mb()
    answers = []
    for _ in range(8):
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(b"POST /console/signin HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/x-www-form-urlencoded\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
            sent = 0
            try:
                for _ in range(48):
                    s.sendall(f"{len(field):x}\r\n".encode() + field + b"\r\n")
                    sent += len(field)
                s.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the server answered and closed: the rest is not read
            data = b""
            try:
                while chunk := s.recv(65536):
                    data += chunk
            except OSError:
                pass
            answers.append(data)
    grown = _rss_mb() - before
    assert all(a.startswith(b"HTTP/1.1 413") for a in answers), answers[0][:300]
    assert b"too large" in answers[0]
    print(f"\nserver RSS grew {grown:.1f} MB over 8 chunked 48 MB forms")
    assert grown < 64, f"server memory grew {grown:.0f} MB"


def test_the_console_admits_a_bounded_number_of_requests(tmp_path: Path) -> None:
    """Console requests beyond `console_max_requests` are refused at once (503), after their
    (bounded) body is read, and the slot comes back when a request ends."""
    from faceledger.console.app import Guard

    release = asyncio.Event()
    entered = 0

    async def slow_page(scope: Any, receive: Any, send: Any) -> None:
        nonlocal entered
        entered += 1
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = Guard(slow_page, Settings(data_dir=tmp_path, console_max_requests=2))

    async def go() -> list[int]:
        transport = httpx.ASGITransport(app=guard)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            held = [asyncio.create_task(client.get("/console/queue")) for _ in range(2)]
            while entered < 2:
                await asyncio.sleep(0.01)
            refused = await client.get("/console/queue")
            release.set()
            done = [r.status_code for r in await asyncio.gather(*held)]
            again = await client.get("/console/queue")
            return [refused.status_code, *done, again.status_code]

    refused, first, second, again = asyncio.run(go())
    assert refused == 503 and first == second == again == 200


# --- permissions whatever creates the data directory first ---------------------------------------

def _assert_private(data: Path) -> None:
    assert stat.S_IMODE(data.stat().st_mode) == 0o700, oct(data.stat().st_mode)
    loose = {str(p.relative_to(data)): oct(stat.S_IMODE(p.stat().st_mode))
             for p in data.rglob("*")
             if stat.S_IMODE(p.stat().st_mode) != (0o700 if p.is_dir() else 0o600)}
    assert not loose, loose


def _cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from faceledger.cli import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "FACELEDGER_DATA_DIR": str(root / "data"),
            "FACELEDGER_CONFIG_DIR": str(root / "config"), "FACELEDGER_SERVER_WORKERS": "1"}


def test_keys_create_first_leaves_the_data_directory_private(tmp_path: Path,
                                                             umask_022: None) -> None:
    """The documented order: `keys create` first (it made the data directory 0755)."""
    made = _cli(_env(tmp_path), "keys", "create", "first", "-o", "*", "-c", "*")
    assert made.returncode == 0, made.stderr
    _assert_private(tmp_path / "data")


def test_serve_first_and_an_older_open_directory_are_made_private(
        tmp_path: Path, service: FaceService, umask_022: None) -> None:
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)  # what an older version (or a plain mkdir) left
    (data / "video-spool").mkdir()
    (data / "index").mkdir()
    assert stat.S_IMODE(data.stat().st_mode) == 0o755
    settings = Settings(data_dir=data, config_dir=tmp_path / "config")
    svc = FaceService(settings, pipeline=service.pipeline)
    KeyStore.open(settings, svc.engine, create_kek=True)
    app = build_app(settings, service=svc, warm_up=False)
    with running(app):
        svc.create_collection("c")
        svc._spool_dir()
    app.close()
    svc.close()
    _assert_private(data)


def test_models_index_and_spooled_videos_are_owner_only(
        tmp_path: Path, service: FaceService, astronaut_jpeg: bytes, umask_022: None) -> None:
    """models/ (the ONNX graph cache), index/ snapshots and a spooled video, each created by
    its own code path first, under umask 022."""
    from faceledger.server.storage import build_resolver
    from faceledger.video.source import download_video
    from faceledger.vision.dlibnet import mmod_face_detector
    from faceledger.vision.models import _dlib_model_path
    from faceledger.vision.onnx_graphs import cached_graph

    data = tmp_path / "data"
    # the graph cache, the first thing a fresh server's workers write
    settings = Settings(data_dir=data, config_dir=tmp_path / "config",
                        local_buckets={"clips": tmp_path / "bucket"}, index_exact_below=1,
                        index_snapshot_changes=1)
    cached_graph(Path(_dlib_model_path("mmod_human_face_detector.dat")), mmod_face_detector(),
                 settings.resolved_model_cache_dir(), dynamic_size=True)
    # a spooled video, as StartFaceDetection copies it
    (tmp_path / "bucket").mkdir()
    (tmp_path / "bucket" / "clip.mp4").write_bytes(b"\0" * 4096)
    svc = FaceService(settings, pipeline=service.pipeline, resolver=build_resolver(settings))
    spool = svc._spool_dir() / "job"
    download_video(svc.resolver, {"Bucket": "clips", "Name": "clip.mp4"}, spool, 10**6)
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600
    # index snapshots (HNSW above 1 face, a snapshot after every change)
    svc.create_collection("snap")
    svc.index_faces("snap", {"Bytes": astronaut_jpeg})
    svc.index_faces("snap", {"Bytes": astronaut_jpeg})
    svc.search_faces_by_image("snap", {"Bytes": astronaut_jpeg})  # loads: HNSW, snapshot
    svc.close()
    assert any((data / "index").iterdir())
    _assert_private(data)


# --- log injection through the console ---------------------------------------------------------

EVIL = "INJ\x1b[31mred\rCR\u2028LS\u0085NEL\u202eRLO\u200bZW"


def test_a_candidate_id_cannot_forge_console_log_lines(console: ConsoleWorld) -> None:
    """The probe's candidate id (ESC, CR, U+2028, U+0085, U+202E) reaches the console's log
    line escaped; with a LF too, the path matches no page (404) and nothing raw is logged."""
    with _signed_in(console, "reviewer") as client:
        mark = len(console.log.getvalue())
        page = client.get("/console/candidates/" + quote(EVIL, safe=""))
        assert page.status_code in (400, 404)
        lf = client.get("/console/candidates/" + quote("INJ2\nforged line", safe=""))
        assert lf.status_code == 404
    logged = console.log.getvalue()[mark:]
    lines = [line for line in logged.splitlines() if "INJ" in line]
    assert len(lines) == 1, logged
    for raw in ("\x1b", "\r", "\u2028", "\u0085", "\u202e", "\u200b"):
        assert raw not in logged, repr(logged)
    assert "forged line" not in logged
    assert all(code in lines[0] for code in ("\\x1b", "\\r", "\\u2028", "\\x85", "\\u202e"))


def test_every_faceledger_logger_escapes() -> None:
    """One escaping path: modules take their logger from text.logger(), never getLogger."""
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                 if re.search(r"^log\w* = logging\.getLogger", p.read_text(), re.M)]
    assert not offenders, offenders
    import faceledger.cli
    import faceledger.console.app
    import faceledger.server.app  # noqa: F401

    for name, obj in logging.root.manager.loggerDict.items():
        if name.startswith("faceledger") and isinstance(obj, logging.Logger):
            assert any(isinstance(f, EscapingFilter) for f in obj.filters), name


# --- console 500s and the case oracle ----------------------------------------------------------

def _event_count(svc: FaceService, operation: str, outcome: str | None = None) -> int:
    e = ledger_schema.events
    q = select(func.count()).select_from(e).where(e.c.operation == operation)
    if outcome is not None:
        q = q.where(e.c.outcome == outcome)
    with svc.engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


@pytest.mark.parametrize("path", [
    "/console/ledger?before=" + "9" * 30, "/console/ledger?before=%C2%B2",
    "/console/ledger?before=-1", "/console/ledger/" + "9" * 30,
    "/console/ledger/9223372036854775808", "/console/ledger/9223372036854775807",
    "/console/ledger/0",
])
def test_ledger_numbers_never_give_500(console: ConsoleWorld, path: str) -> None:
    with _signed_in(console, "auditor") as client:
        page = client.get(path)
    assert page.status_code in (200, 400, 404), (path, page.status_code)
    assert "Traceback" not in page.text and "InternalServerError" not in page.text


def test_a_case_id_outside_latin_1_exports_with_its_name(console: ConsoleWorld) -> None:
    client = _sign_in(httpx.Client(base_url=console.url, timeout=30), console, "admin")
    request_close = client.close
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/ledger").text)
    assert csrf is not None
    before = _event_count(console.service, "ExportCase", "done")
    done = client.post("/console/ledger/export", data={"csrf": csrf.group(1), "case": "Ω-7"})
    assert done.status_code == 200, done.text
    disposition = done.headers["content-disposition"]
    assert "filename*=UTF-8''case-%CE%A9-7.zip" in disposition
    assert 'filename="case-_-7.zip"' in disposition
    assert _event_count(console.service, "ExportCase", "done") == before + 1
    # refusals (no such case, empty id) write no export event
    for case in ("no-such-case", ""):
        refused = client.post("/console/ledger/export", data={"csrf": csrf.group(1),
                                                              "case": case})
        assert refused.status_code in (400, 404)
    assert _event_count(console.service, "ExportCase", "done") == before + 1
    request_close()


def test_export_checks_the_role_before_the_case_exists(console: ConsoleWorld) -> None:
    """A non-admin learns nothing: an existing and a missing case get the same refusal."""
    client = _sign_in(httpx.Client(base_url=console.url, timeout=30), console, "reviewer")
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/queue").text)
    assert csrf is not None
    pages = [client.post("/console/ledger/export", data={"csrf": csrf.group(1), "case": case})
             for case in ("INC-1", "never-existed")]
    client.close()
    assert pages[0].status_code == pages[1].status_code
    assert all("AccessDeniedException" in p.text for p in pages)
    strip = [re.sub(r"(never-existed|INC-1)", "", p.text) for p in pages]
    assert strip[0] == strip[1]


# --- console sign-in throttling ----------------------------------------------------------------

def test_failed_sign_ins_are_throttled_per_address(console: ConsoleWorld) -> None:
    client = httpx.Client(base_url=console.url, timeout=30)
    key = console.keys["auditor"]

    def attempt(secret: str) -> httpx.Response:
        form = client.get("/console/signin")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        return client.post("/console/signin", data={
            "csrf": token.group(1), "access_key_id": key.info.access_key_id, "secret": secret})

    statuses = [attempt("wrong-" + str(i)).status_code for i in range(4)]
    assert statuses == [401, 401, 401, 429]
    right = attempt(key.secret_access_key)  # even the right secret waits: no oracle, no bypass
    assert right.status_code == 429 and "ThrottlingException" in right.text
    client.close()


# --- replayed signed requests ------------------------------------------------------------------

def test_a_request_that_failed_is_not_served_when_sent_again(
        tmp_path: Path, service: FaceService, astronaut_jpeg: bytes) -> None:
    """A failed request's copy was served (its signature was forgotten, so that botocore's
    same-second retry would be): replayed once the collection existed, it indexed the face
    (issue 24). Now every copy is refused as a repeat - ThrottlingException, which SDKs retry
    signed anew (tests/test_probe_three_auth.py has botocore's retry)."""
    settings = Settings(data_dir=tmp_path / "data", config_dir=tmp_path / "config",
                        server_workers=1)
    svc = FaceService(settings, pipeline=service.pipeline)
    keys = KeyStore(svc.engine, secrets.token_bytes(32))
    key = keys.create("caller", ["*"], ["*"])
    body = json.dumps({"CollectionId": "not-yet",
                       "Image": {"Bytes": base64.b64encode(astronaut_jpeg).decode()}}).encode()
    app = RekognitionApp(svc, keys, settings, warm_up=False)
    with running(app) as url:
        headers = _signed(url, key, "IndexFaces", body)
        failed = httpx.post(url + "/", content=body, headers=headers, timeout=60)
        assert failed.json()["__type"] == "ResourceNotFoundException"
        svc.create_collection("not-yet")
        replay = httpx.post(url + "/", content=body, headers=headers, timeout=60)
        assert replay.status_code == 400, replay.text
        assert replay.json()["__type"] == "ThrottlingException"
        assert "already received" in replay.json()["message"]
        assert svc.list_faces("not-yet")["Faces"] == []
    app.close()
    svc.close()


def test_a_replayed_index_faces_adds_no_second_face(tmp_path: Path, service: FaceService,
                                                    astronaut_jpeg: bytes) -> None:
    """The probe replayed a captured IndexFaces within the 5-minute window and got a duplicate
    face. Now the second copy is refused - by this server and by another on the same
    database - and so is a second copy of a listing (every operation writes an event)."""
    settings = Settings(data_dir=tmp_path / "data", config_dir=tmp_path / "config",
                        server_workers=1)
    svc = FaceService(settings, pipeline=service.pipeline)
    keys = KeyStore(svc.engine, secrets.token_bytes(32))
    key = keys.create("caller", ["*"], ["*"])
    svc.create_collection("replayed")
    body = json.dumps({"CollectionId": "replayed",
                       "Image": {"Bytes": base64.b64encode(astronaut_jpeg).decode()}}).encode()
    app, other = (RekognitionApp(svc, keys, settings, warm_up=False) for _ in range(2))
    with running(app) as url, running(other) as url2:
        headers = _signed(url, key, "IndexFaces", body)
        first = httpx.post(url + "/", content=body, headers=headers, timeout=60)
        assert first.status_code == 200, first.text
        for target in (url, url2):  # behind one name (a load balancer): the same Host
            again = httpx.post(target + "/", content=body, timeout=60,
                               headers={**headers, "Host": url.removeprefix("http://")})
            assert again.status_code == 400, again.text
            assert again.json()["__type"] == "ThrottlingException"
            assert "already received" in again.json()["message"]
        assert len(svc.list_faces("replayed")["Faces"]) == 1
        listing = b"{}"
        headers = _signed(url, key, "ListCollections", listing)
        answers = [httpx.post(url + "/", content=listing, headers=headers) for _ in range(2)]
        assert [a.status_code for a in answers] == [200, 400]
        assert "already received" in answers[1].json()["message"]
        # a fresh signature is served: signed in a later second (SigV4's time has one-second
        # resolution; within the same second the same bytes are the same signature)
        time.sleep(1.05 - (time.time() % 1.0))
        _client(url, key).index_faces(CollectionId="replayed", Image={"Bytes": astronaut_jpeg})
        assert len(svc.list_faces("replayed")["Faces"]) == 2
    app.close()
    other.close()
    svc.close()


# --- NotificationChannel topics bound to keys --------------------------------------------------

def test_a_key_may_notify_only_its_topics(tmp_path: Path, service: FaceService) -> None:
    settings = Settings(data_dir=tmp_path / "data", config_dir=tmp_path / "config",
                        server_workers=1, sns_endpoint_url="http://127.0.0.1:9",
                        local_buckets={"clips": tmp_path / "bucket"})
    (tmp_path / "bucket").mkdir()
    svc = FaceService(settings, pipeline=service.pipeline)
    keys = KeyStore(svc.engine, secrets.token_bytes(32))
    plain = keys.create("plain", ["*"], ["*"])
    ops = keys.create("ops", ["*"], ["*"], sns_topics=["arn:aws:sns:*:111122223333:ops-*"],
                      s3_objects=["clips/*"])
    app = RekognitionApp(svc, keys, settings, warm_up=False)
    video = {"S3Object": {"Bucket": "clips", "Name": "missing.mp4"}}
    theirs = "arn:aws:sns:us-east-1:999999999999:someone-elses-topic"
    mine = "arn:aws:sns:us-east-1:111122223333:ops-video"
    role = "arn:aws:iam::999999999999:role/anything"
    with running(app) as url:
        events = svc.ledger.head().seq
        for key, topic in ((plain, mine), (plain, theirs), (ops, theirs)):
            with pytest.raises(ClientError) as refused:
                _client(url, key).start_face_detection(
                    Video=video, NotificationChannel={"SNSTopicArn": topic, "RoleArn": role})
            assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
            assert "may not publish" in refused.value.response["Error"]["Message"]
        assert svc.ledger.head().seq == events  # refused before anything was recorded
        with pytest.raises(ClientError) as allowed:  # the channel passes; the video is missing
            _client(url, key=ops).start_face_detection(
                Video=video, NotificationChannel={"SNSTopicArn": mine, "RoleArn": role})
        assert allowed.value.response["Error"]["Code"] == "InvalidS3ObjectException"
    app.close()
    svc.close()


# --- KEK rotation interrupted in every state ---------------------------------------------------

KEK = "key-encryption-key"


def _kek_world(root: Path) -> tuple[dict[str, str], Settings, dict[str, str], bytes]:
    env = _env(root)
    made = _cli(env, "keys", "create", "a", "-o", "*", "-c", "*", "--json")
    assert made.returncode == 0, made.stderr
    settings = Settings(data_dir=root / "data", config_dir=root / "config")
    old = load_kek(settings, create=False)
    assert old is not None
    return env, settings, json.loads(made.stdout), old


def _reseal(settings: Settings, old: bytes, new: bytes) -> None:
    from faceledger.db import make_engine

    engine = make_engine(settings.resolved_database_url())
    KeyStore(engine, old).reseal(new)
    engine.dispose()


def _opens(settings: Settings, key: dict[str, str]) -> bool:
    from faceledger.db import make_engine

    engine = make_engine(settings.resolved_database_url())
    try:
        found = KeyStore(engine, load_kek(settings, create=False)).credentials(
            key["AccessKeyId"], "20250101", REGION, "rekognition")
    finally:
        engine.dispose()
    return found is not None and found[1] == signing_key(key["SecretAccessKey"], "20250101",
                                                         REGION, "rekognition")


def _one_line_refusal(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("state", ["next-written", "resealed", "between-renames"])
def test_an_interrupted_rotation_resumes_from_every_state(tmp_path: Path, state: str) -> None:
    env, settings, key, old = _kek_world(tmp_path)
    config = tmp_path / "config"
    new = secrets.token_bytes(32)
    write_kek_file(config / f"{KEK}.next", new)  # step 1 done
    if state in ("resealed", "between-renames"):
        _reseal(settings, old, new)  # step 2 committed
    if state == "between-renames":
        os.replace(config / KEK, config / f"{KEK}.retired-{kek_fingerprint(old)}")
        assert sorted(p.name for p in config.iterdir()) == [
            f"{KEK}.next", f"{KEK}.retired-{kek_fingerprint(old)}"]
    if state != "next-written":
        # the server and `keys create` refuse, in one line that names the fix; no third KEK
        _one_line_refusal(_cli(env, "serve", "--port", "1"), "rotate-kek")
        _one_line_refusal(_cli(env, "keys", "create", "b", "-o", "*", "-c", "*"), "rotate-kek")
        assert not (config / KEK).exists() or state == "resealed"
    resumed = _cli(env, "keys", "rotate-kek")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert f"re-sealed {1 if state == 'next-written' else 0} API key(s)" in resumed.stdout
    assert load_kek(settings, create=False) == new
    assert not (config / f"{KEK}.next").exists()
    assert base64.b64decode(
        (config / f"{KEK}.retired-{kek_fingerprint(old)}").read_text()) == old
    assert _opens(settings, key)
    again = _cli(env, "keys", "rotate-kek")  # and the next rotation is an ordinary one
    assert again.returncode == 0 and "re-sealed 1 API key(s)" in again.stdout, again.stderr
    assert _opens(settings, key)


def test_a_lost_kek_with_sealed_secrets_is_refused_not_replaced(tmp_path: Path) -> None:
    env, settings, key, old = _kek_world(tmp_path)
    (tmp_path / "config" / KEK).unlink()
    _one_line_refusal(_cli(env, "serve", "--port", "1"), "missing", kek_fingerprint(old))
    _one_line_refusal(_cli(env, "keys", "create", "b", "-o", "*", "-c", "*"), "missing")
    rotate = _cli(env, "keys", "rotate-kek")
    _one_line_refusal(rotate, "restore")
    assert not (tmp_path / "config" / KEK).exists()  # no silent third KEK
    write_kek_file(tmp_path / "config" / KEK, old)  # restored from its backup: all works
    assert _opens(settings, key)
    assert _cli(env, "keys", "create", "b", "-o", "*", "-c", "*").returncode == 0
