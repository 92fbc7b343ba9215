"""Regression tests for the defects a security review found by probing `faceledger serve`
(issue 11): each reproduces the attack the way it was made - boto3 or raw SigV4-signed requests
against a real server on 127.0.0.1 - and checks the answer is now a Rekognition error code, or
the right answer, and that nothing leaks."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import secrets
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
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
from PIL import Image

from faceledger.errors import ImageTooLargeException, ThrottlingException
from faceledger.imaging import PixelBudget, decode_image, to_rgb
from faceledger.sdk import sign_each_call
from faceledger.server import RekognitionApp, running
from faceledger.server.keys import IssuedKey, KeyStore, load_kek
from faceledger.service import FaceService, paging
from faceledger.settings import Settings
from faceledger.text import escape, shown

REGION = "us-east-1"
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})


@dataclass
class Server:
    url: str
    settings: Settings
    service: FaceService
    keys: KeyStore
    admin: IssuedKey

    def client(self, key: IssuedKey | None = None) -> Any:
        key = key or self.admin
        # each call signed anew: a test may repeat one within a second (SECURITY.md)
        return sign_each_call(boto3.session.Session().client(
            "rekognition", endpoint_url=self.url, region_name=REGION,
            aws_access_key_id=key.info.access_key_id,
            aws_secret_access_key=key.secret_access_key, config=NO_RETRIES))

    def raw(self, operation: str, body: bytes, key: IssuedKey | None = None) -> httpx.Response:
        """A SigV4-signed POST of exactly `body` (no client-side validation at all)."""
        key = key or self.admin
        request = AWSRequest(method="POST", url=self.url + "/", data=body, headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"RekognitionService.{operation}"})
        SigV4Auth(Credentials(key.info.access_key_id, key.secret_access_key), "rekognition",
                  REGION).add_auth(request)
        return httpx.post(self.url + "/", content=body, headers=dict(request.headers.items()),
                          timeout=60)


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, service: FaceService) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("hardening")
    settings = Settings(data_dir=root / "data", config_dir=root / "config")
    svc = FaceService(settings, pipeline=service.pipeline)
    keys = KeyStore(svc.engine, secrets.token_bytes(32))
    admin = keys.create("admin", ["*"], ["*"])
    app = RekognitionApp(svc, keys, settings)
    with running(app) as url:
        yield Server(url, settings, svc, keys, admin)
    app.close()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# --- 1. a forged NextToken -------------------------------------------------------------------

def test_forged_next_token_is_a_pagination_error_not_a_500(server: Server) -> None:
    client = server.client()
    client.create_collection(CollectionId="forged-token")
    c = _pk(server, "forged-token")

    def b64url(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode()

    forged = [
        # the probe's token: the old JSON format with a position past SQLite's integer range
        b64url(json.dumps({"t": "faces", "c": c, "a": 9223372036854775808})),
        # today's format, each field out of range or of the wrong kind
        b64url(f"f:{c}:9223372036854775808:"), b64url(f"f:{c}:-1:"), b64url(f"f:{c}:0:"),
        b64url(f"f:{c}:+1:"), b64url(f"f:{c}:01:"), b64url("f:99999999999999999999:1:"),
        b64url(f"f:{c + 1}:1:"), b64url(f"u:{c}:1:"), b64url(f"c:{c}:1:"),
        b64url(f"f:{c}:1:prefix-only-for-collections"), b64url(f"f:{c}:1"),
        "\u00e9t\u00e9", "====", "x" * 255,
    ]
    assert paging.read_token(paging.make_token("f", c, 1), "f", c).row_pk == 1
    for token in forged:
        with pytest.raises(ClientError) as exc:
            client.list_faces(CollectionId="forged-token", NextToken=token)
        assert code_of(exc) == "InvalidPaginationTokenException", token
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


# --- 2. ListCollections and collections a key may not see -----------------------------------

def test_list_collections_never_names_what_the_key_may_not_see(server: Server) -> None:
    admin = server.client()
    hidden = ["Staff", "aaa-secret", "staff-archive", "zzz-hidden"]
    for cid in [*hidden, "staff"]:
        admin.create_collection(CollectionId=cid)
    limited = server.keys.create("door", ["ListCollections"], ["staff"])
    client = server.client(limited)
    seen: list[str] = []
    tokens: list[str] = []
    kwargs: dict[str, Any] = {"MaxResults": 1}
    for _ in range(50):
        page = client.list_collections(**kwargs)
        seen += page["CollectionIds"]
        if "NextToken" not in page:
            break
        tokens.append(page["NextToken"])
        kwargs["NextToken"] = page["NextToken"]
    assert seen == ["staff"]
    decoded = [base64.urlsafe_b64decode(t + "=" * (-len(t) % 4)) for t in tokens]
    assert not any(h.encode() in d for h in hidden for d in decoded)
    # A token forged to resume after a hidden collection (by its pk, or by a guessed prefix)
    # shows nothing more than paging from the start does.
    with server.service.catalog.read() as conn:
        pks = {r.collection_id: r.pk for r in server.service.catalog.list_collections(
            conn, None, 1000)}
    for cid in hidden:
        for prefix in ("", cid[:3], "a"):
            token = paging.make_token("c", 0, pks[cid], prefix)
            page = client.list_collections(NextToken=token, MaxResults=1000)
            assert set(page["CollectionIds"]) <= {"staff"}, (cid, prefix)


# --- 3. paging past a 255-character collection id -------------------------------------------

def test_paging_survives_255_character_collection_ids(server: Server) -> None:
    admin = server.client()
    long_ids = ["L" + c * 254 for c in "abc"]
    for cid in long_ids:
        admin.create_collection(CollectionId=cid)
    listed: list[str] = []
    kwargs: dict[str, Any] = {"MaxResults": 1}
    while True:
        page = admin.list_collections(**kwargs)
        listed += page["CollectionIds"]
        if "NextToken" not in page:
            break
        assert len(page["NextToken"]) <= 255
        kwargs["NextToken"] = page["NextToken"]
    assert all(cid in listed for cid in long_ids)
    assert listed == sorted(listed) and len(listed) == len(set(listed))


def test_paging_resumes_after_the_last_collection_is_deleted(server: Server) -> None:
    admin = server.client()
    ids = ["P" + "q" * 200 + str(i) for i in range(3)]  # longer than the token's prefix
    for cid in ids:
        admin.create_collection(CollectionId=cid)
    first = admin.list_collections(MaxResults=1000)["CollectionIds"]
    start = first.index(ids[0])
    token = paging.make_token("c", 0, _pk(server, ids[0]), ids[0])
    admin.delete_collection(CollectionId=ids[0])
    after = admin.list_collections(NextToken=token, MaxResults=1000)["CollectionIds"]
    # nothing after the deleted collection is skipped
    assert set(first[start + 1:]) <= set(after)


def _pk(server: Server, cid: str) -> int:
    with server.service.catalog.read() as conn:
        return server.service.catalog.collection(conn, cid).pk


# --- 4. log injection -------------------------------------------------------------------------

def test_caller_values_cannot_forge_log_lines(server: Server,
                                              caplog: pytest.LogCaptureFixture) -> None:
    forged = "x\nINFO:faceledger.server:r1 FLKADMIN DeleteCollection 200 1.0ms\n"
    with caplog.at_level(logging.INFO, logger="faceledger.server"):
        with pytest.raises(ClientError) as exc:
            server.client().describe_collection(CollectionId=forged)
        response = server.raw("DescribeCollection",
                              json.dumps({"CollectionId": "a\u2028b\x1b[31mred"}).encode())
    assert code_of(exc) == "ValidationException"
    message = exc.value.response["Error"]["Message"]
    assert "\n" not in message and "\\nINFO:faceledger.server" in message
    assert response.status_code == 400 and "\\u2028" in response.json()["message"]
    lines = [r.getMessage() for r in caplog.records if r.name == "faceledger.server"]
    assert lines, "the server logged the requests"
    for line in lines:
        assert "\n" not in line and "\u2028" not in line and "\x1b" not in line
    assert not any(line.startswith("r1 FLKADMIN") for line in caplog.text.splitlines())


def test_escape_shows_every_control_character() -> None:
    assert escape("a\nb\r\t\x00\x1b\x85\u2028\u202e\\") == \
        "a\\nb\\r\\t\\x00\\x1b\\x85\\u2028\\u202e\\\\"
    assert shown("é" * 100).endswith("...") and len(shown("é" * 100)) == 83
    assert shown(b"\xff\n") == "\\\\xff\\n"


# --- 5 and 6. 16-bit PNG, MPO ---------------------------------------------------------------

def test_16_bit_greyscale_png_finds_the_face(server: Server, astronaut_jpeg: bytes) -> None:
    grey8 = np.asarray(Image.open(io.BytesIO(astronaut_jpeg)).convert("L"))
    grey16 = grey8.astype(np.uint16) * 257
    png16 = _png(Image.fromarray(grey16))
    assert Image.open(io.BytesIO(png16)).mode == "I;16"
    client = server.client()
    faces16 = client.detect_faces(Image={"Bytes": png16})["FaceDetails"]
    faces8 = client.detect_faces(Image={"Bytes": _png(Image.fromarray(grey8))})["FaceDetails"]
    assert len(faces16) == len(faces8) == 1
    assert faces16[0]["BoundingBox"] == pytest.approx(faces8[0]["BoundingBox"], abs=1e-6)
    # the same pixels, not a clipped copy
    assert np.array_equal(decode_image(png16).pixels[..., 0], grey8)


def test_mpo_jpeg_is_read_as_its_first_image(server: Server, astronaut_jpeg: bytes) -> None:
    photo = Image.open(io.BytesIO(astronaut_jpeg))
    buf = io.BytesIO()
    photo.save(buf, format="MPO", save_all=True, append_images=[photo.resize((128, 128))],
               quality=95)
    mpo = buf.getvalue()
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", quality=95)
    jpeg = buf.getvalue()
    assert np.array_equal(decode_image(mpo).pixels, decode_image(jpeg).pixels)
    client = server.client()
    faces = client.detect_faces(Image={"Bytes": mpo})["FaceDetails"]
    assert faces and faces == client.detect_faces(Image={"Bytes": jpeg})["FaceDetails"]


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGBA", "CMYK", "I;16", "I", "F"])
def test_every_mode_normalises_to_the_same_picture(mode: str) -> None:
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (90, 120), dtype=np.uint8)
    base = Image.fromarray(grey).convert("RGB")
    if mode == "I;16":
        image = Image.fromarray(grey.astype(np.uint16) * 257)
    elif mode == "I":
        image = Image.fromarray(grey.astype(np.int32) * 257)
    elif mode == "F":
        image = Image.fromarray(grey.astype(np.float32) / 255)
    elif mode == "PA":
        image = Image.fromarray(grey).convert("P").convert("PA")
    else:
        image = base.convert(mode)
    out = np.asarray(to_rgb(image))
    assert out.dtype == np.uint8 and out.shape == (90, 120, 3)
    if mode in ("L", "LA", "RGBA", "I;16", "I", "F"):
        assert np.array_equal(out[..., 0], grey), mode  # opaque and lossless: exactly equal
    else:
        assert abs(float(out.mean()) - float(grey.mean())) < 40, mode


def test_transparent_pixels_are_seen_against_white() -> None:
    rgba = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    assert np.asarray(to_rgb(rgba)).min() == 255


# --- 8. memory amplification and Pillow's messages -------------------------------------------

def test_huge_pixel_png_is_refused_before_it_is_decoded(server: Server) -> None:
    bomb = _png(Image.new("L", (7000, 7000)))
    assert len(bomb) < 100_000
    with pytest.raises(ClientError) as exc:
        server.client().detect_faces(Image={"Bytes": bomb})
    assert code_of(exc) == "ImageTooLargeException"
    assert "7000x7000" in exc.value.response["Error"]["Message"]


def test_pillow_limits_never_reach_the_client(server: Server) -> None:
    # 20000 x 20000: past Pillow's own bomb limit (178956970 pixels), refused at open
    bomb = _png(Image.new("1", (20000, 20000)))
    with pytest.raises(ClientError) as exc:
        server.client().detect_faces(Image={"Bytes": bomb})
    assert code_of(exc) == "ImageTooLargeException"
    assert "178956970" not in exc.value.response["Error"]["Message"]
    truncated = _png(Image.new("RGB", (200, 200), (1, 2, 3)))[:-40]
    with pytest.raises(ClientError) as exc:
        server.client().detect_faces(Image={"Bytes": truncated})
    assert code_of(exc) == "InvalidImageFormatException"
    assert "truncated or corrupt" in exc.value.response["Error"]["Message"]


def test_large_jpeg_decodes_at_reduced_scale(astronaut_jpeg: bytes) -> None:
    big = Image.open(io.BytesIO(astronaut_jpeg)).resize((6000, 6000))
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=70)
    decoded = decode_image(buf.getvalue(), max_decoded_pixels=10_000_000)
    assert (decoded.width, decoded.height) == (3000, 3000)  # 1/2 scale: 9 M pixels
    with pytest.raises(ImageTooLargeException):
        decode_image(buf.getvalue(), max_decoded_pixels=500_000)  # not even at 1/8


def test_pixel_budget_bounds_concurrent_decodes() -> None:
    budget = PixelBudget(100, wait_seconds=0.2)
    with pytest.raises(ImageTooLargeException):
        with budget.reserve(101):
            pass
    with budget.reserve(60):
        with pytest.raises(ThrottlingException):  # waits 0.2 s, then tells the client
            with budget.reserve(60):
                pass
        released = threading.Event()

        def later() -> None:
            with budget.reserve(60):
                released.set()

        t = threading.Thread(target=later)
        t.start()
        assert not released.wait(0.05)
    t.join(5)
    assert released.is_set() and budget.in_use == 0


def test_max_faces_is_a_java_integer(server: Server, astronaut_jpeg: bytes) -> None:
    server.client().create_collection(CollectionId="max-faces")
    body = {"CollectionId": "max-faces", "Image": {"Bytes": base64.b64encode(
        astronaut_jpeg).decode()}, "MaxFaces": 2 ** 31}
    response = server.raw("IndexFaces", json.dumps(body).encode())
    assert response.status_code == 400
    assert response.json()["__type"] == "ValidationException"
    assert server.service.describe_collection("max-faces")["FaceCount"] == 0
    body["MaxFaces"] = 2 ** 31 - 1
    response = server.raw("IndexFaces", json.dumps(body).encode())
    assert response.status_code == 200, response.text


# --- 7 and 9. the KEK and the files at rest --------------------------------------------------

def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from faceledger.cli import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_serve_with_a_group_readable_kek_says_so_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "FACELEDGER_DATA_DIR": str(tmp_path / "data"),
           "FACELEDGER_CONFIG_DIR": str(tmp_path / "config")}
    created = _cli(env, "keys", "create", "ci", "-o", "DetectFaces", "-c", "*", "--json")
    assert created.returncode == 0, created.stderr
    kek = tmp_path / "config" / "key-encryption-key"
    kek.chmod(0o640)
    served = _cli(env, "serve", "--port", "1")
    assert served.returncode == 1
    assert "Traceback" not in served.stderr
    lines = [line for line in served.stderr.splitlines() if line.strip()]
    assert lines == [f"Error: {kek} is readable by others (mode 640); run: chmod 600 {kek}"]


def test_data_is_private_whatever_the_umask(tmp_path: Path, service: FaceService,
                                            astronaut_jpeg: bytes) -> None:
    old = os.umask(0o022)
    try:
        settings = Settings(data_dir=tmp_path / "data", config_dir=tmp_path / "config")
        svc = FaceService(settings, pipeline=service.pipeline)
        svc.create_collection("private")
        svc.index_faces("private", {"Bytes": astronaut_jpeg})
        load_kek(settings, create=True)
        data = settings.data_dir
        db = data / "faceledger.db"
        modes = {p.name: stat.S_IMODE(p.stat().st_mode)
                 for p in [db, Path(f"{db}-wal"), Path(f"{db}-shm")] if p.exists()}
        assert set(modes) >= {"faceledger.db", "faceledger.db-wal"}
        assert all(m == 0o600 for m in modes.values()), modes
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        dirs = [p for p in data.rglob("*") if p.is_dir()]
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in dirs), dirs
        kek = settings.config_dir / "key-encryption-key"
        assert kek.is_file() and stat.S_IMODE(kek.stat().st_mode) == 0o600
        assert not any("key-encryption" in p.name for p in data.rglob("*"))
        svc.close()
    finally:
        os.umask(old)


def test_rotate_kek_reseals_every_secret_and_retires_the_old_key(tmp_path: Path) -> None:
    env = {**os.environ, "FACELEDGER_DATA_DIR": str(tmp_path / "data"),
           "FACELEDGER_CONFIG_DIR": str(tmp_path / "config")}
    key = json.loads(_cli(env, "keys", "create", "a", "-o", "*", "-c", "*", "--json").stdout)
    settings = Settings(data_dir=tmp_path / "data", config_dir=tmp_path / "config")
    old = load_kek(settings, create=False)
    assert old is not None
    from faceledger.db import make_engine
    from faceledger.server.keys import write_kek_file
    from faceledger.server.sigv4 import signing_key

    # A run interrupted after its transaction committed: secrets sealed under the new KEK,
    # which is still only in `.next`. Running the command again finishes the job.
    pending = secrets.token_bytes(32)
    write_kek_file(tmp_path / "config" / "key-encryption-key.next", pending)
    engine = make_engine(settings.resolved_database_url())
    assert KeyStore(engine, old).reseal(pending) == 1
    engine.dispose()
    rotated = _cli(env, "keys", "rotate-kek")
    assert rotated.returncode == 0, rotated.stderr
    assert "resuming" in rotated.stderr and "re-sealed 0 API key(s)" in rotated.stdout
    new = load_kek(settings, create=False)
    assert new == pending
    retired = list((tmp_path / "config").glob("key-encryption-key.retired-*"))
    assert len(retired) == 1 and base64.b64decode(retired[0].read_text()) == old
    engine = make_engine(settings.resolved_database_url())
    found = KeyStore(engine, new).credentials(key["AccessKeyId"], "20240517", REGION,
                                              "rekognition")
    assert found is not None
    assert found[1] == signing_key(key["SecretAccessKey"], "20240517", REGION, "rekognition")
    engine.dispose()
    again = _cli(env, "keys", "rotate-kek")  # a second, uninterrupted rotation
    assert again.returncode == 0, again.stderr
    assert "re-sealed 1 API key(s)" in again.stdout
    assert len(list((tmp_path / "config").glob("key-encryption-key.retired-*"))) == 2


def test_a_legacy_kek_in_the_data_directory_still_works_and_can_be_moved_out(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from faceledger.server.keys import write_kek_file

    settings = Settings(data_dir=tmp_path / "data", config_dir=tmp_path / "config")
    legacy = tmp_path / "data" / "secrets" / "key-encryption-key"
    kek = secrets.token_bytes(32)
    write_kek_file(legacy, kek)
    with caplog.at_level(logging.WARNING, logger="faceledger.server"):
        assert load_kek(settings, create=False) == kek
    assert "inside the data directory" in caplog.text
    env = {**os.environ, "FACELEDGER_DATA_DIR": str(tmp_path / "data"),
           "FACELEDGER_CONFIG_DIR": str(tmp_path / "config")}
    target = tmp_path / "config" / "key-encryption-key"
    moved = _cli(env, "keys", "rotate-kek", "--to-file", str(target))
    assert moved.returncode == 0, moved.stderr
    new = load_kek(settings, create=False)
    assert new is not None and new != kek and target.is_file()
