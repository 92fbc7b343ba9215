"""Durability: an acknowledged IndexFaces survives `kill -9` at any moment.

A child process ingests (real IndexFaces on real photos, or bulk templates), printing each
acknowledgement after the call returns; the test kills it with SIGKILL mid-ingest, restarts,
kills again, and then checks that catalog and index agree and that every acknowledged face is
there and searchable. The embedded index is set to snapshot its HNSW graph after every change,
so kills often land in the middle of a snapshot save (and one kill is made to, every time).

The same through the server, as a user would see it: `faceledger serve` with its inference
workers, unmodified boto3 clients indexing and searching, the whole process group killed with
SIGKILL while requests are in flight, twice, on the embedded index (SQLite) and on pgvector
(PostgreSQL); then every acknowledged FaceId is looked up with ListFaces, SearchFaces and
SearchFacesByImage.
"""

from __future__ import annotations

import base64
import itertools
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr

from faceledger.db import make_engine
from faceledger.sdk import sign_each_call
from faceledger.server.keys import IssuedKey, KeyStore
from faceledger.service import FaceService
from faceledger.settings import Settings
from faceledger.store import Catalog, EmbeddedIndex

INGEST_PHOTOS = """
import sys, pathlib
import numpy as np
from faceledger.errors import ResourceAlreadyExistsException
from faceledger.service import FaceService
from faceledger.settings import Settings

data_dir, start, photos = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
svc = FaceService(Settings(data_dir=pathlib.Path(data_dir), index_exact_below=1,
                           index_snapshot_changes=1))
try:
    svc.create_collection(collection_id="k")
except ResourceAlreadyExistsException:
    pass
print("READY", flush=True)
for i, path in enumerate(photos):
    ext = f"img{start + i}"
    r = svc.index_faces(collection_id="k", image={"Bytes": pathlib.Path(path).read_bytes()},
                        external_image_id=ext, max_faces=1, quality_filter="NONE")
    for rec in r["FaceRecords"]:
        print("ACK", rec["Face"]["FaceId"], ext, flush=True)
    with svc.catalog.read() as conn:
        coll = svc.catalog.collection(conn, "k")
    svc.index.search(coll.pk, coll.version, np.zeros(coll.dim, np.float32), 1)  # catch up + snapshot
print("DONE", flush=True)
"""

INGEST_TEMPLATES = """
import sys, pathlib
import numpy as np
from faceledger.db import make_engine
from faceledger.errors import ResourceAlreadyExistsException
from faceledger.store import Catalog, EmbeddedIndex

root, first_batch = pathlib.Path(sys.argv[1]), int(sys.argv[2])


def templates(batch):
    # face-like templates: 32 latent dimensions spread over 128 (as real ones are)
    basis = np.random.default_rng(12345).normal(0, 1, (32, 128))
    z = np.random.default_rng(batch).normal(0, 1, (1000, 32))
    return (z @ basis / 8.0).astype(np.float32)


catalog = Catalog(make_engine(f"sqlite:///{root / 'catalog.db'}"))
index = EmbeddedIndex(catalog, root / "index", exact_below=1, snapshot_changes=1)
try:
    with catalog.begin() as conn:
        catalog.create_collection(conn, "k", "test-model", 128)
except ResourceAlreadyExistsException:
    pass
print("READY", flush=True)
batch = first_batch
while True:
    vecs = templates(batch)
    fids = [f"{batch:08x}-0000-4000-8000-{i:012x}" for i in range(len(vecs))]
    with catalog.begin() as conn:
        coll = catalog.lock_collection(conn, "k")
        catalog.add_vectors(conn, coll, vecs, fids, [None] * len(vecs))
    print("ACK", batch, flush=True)
    with catalog.read() as conn:
        coll = catalog.collection(conn, "k")
    index.search(coll.pk, coll.version, vecs[0], 1)  # catch up + snapshot a growing graph
    batch += 1
"""


def templates(batch: int) -> np.ndarray:
    """The same face-like templates the ingest child makes for a batch."""
    basis = np.random.default_rng(12345).normal(0, 1, (32, 128))
    z = np.random.default_rng(batch).normal(0, 1, (1000, 32))
    return (z @ basis / 8.0).astype(np.float32)


def run_and_kill(script: str, args: list[str], acks_before_kill: int, delay: float,
                 watch: Path | None = None) -> list[list[str]]:
    """Run `script`, SIGKILL it once it has acknowledged enough (plus `delay` seconds, or, with
    `watch`, in the middle of a snapshot save there); every ACK it printed."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    acks: list[list[str]] = []
    deadline = time.monotonic() + 300
    try:
        for line in proc.stdout:
            if line.startswith("ACK"):
                acks.append(line.split()[1:])
            if len(acks) >= acks_before_kill or line.startswith("DONE"):
                break
            assert time.monotonic() < deadline, "the ingest did not progress"
        time.sleep(delay)
        if watch is not None:
            stop_mid_save(proc, watch)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL or "DONE" in rest
    acks += [line.split()[1:] for line in rest.splitlines() if line.startswith("ACK")]
    return acks


def stop_mid_save(proc: subprocess.Popen[str], directory: Path) -> None:
    """Freeze `proc` (SIGSTOP) in the middle of writing a snapshot into `directory`: frozen
    while one of its temporary files (`*.<pid>.tmp`) exists, whatever the machine's speed."""
    mine = f".{proc.pid}.tmp"
    until = time.monotonic() + 120
    while time.monotonic() < until and proc.poll() is None:
        if any(name.endswith(mine) for name in os.listdir(directory)):
            os.kill(proc.pid, signal.SIGSTOP)
            os.waitpid(proc.pid, os.WUNTRACED)  # stopped now: its files no longer change
            if any(name.endswith(mine) for name in os.listdir(directory)):
                return
            os.kill(proc.pid, signal.SIGCONT)  # the save ended meanwhile: the next one
        time.sleep(0.0005)


def test_acknowledged_index_faces_survive_kill_9(faces_dir: Path, tmp_path: Path,
                                                 service: FaceService) -> None:
    photos = sorted((faces_dir / "lfw" / "Hans_Blix").glob("*.jpg")) + sorted(
        (faces_dir / "lfw" / "Tiger_Woods").glob("*.jpg"))
    rng = random.Random(7)
    acked: dict[str, str] = {}  # FaceId -> ExternalImageId
    for first, last, kill_after in ((0, 8, 3), (8, 13, 2)):
        got = run_and_kill(INGEST_PHOTOS, [str(tmp_path), str(first),
                                           *map(str, photos[first:last])],
                           kill_after, rng.uniform(0.0, 0.5))
        assert len(got) >= kill_after
        acked.update({fid: ext for fid, ext in got})

    svc = FaceService(Settings(data_dir=tmp_path, index_exact_below=1),
                      pipeline=service.pipeline)
    try:
        listed = svc.list_faces(collection_id="k")["Faces"]
        stored = {f["FaceId"] for f in listed}
        assert set(acked) <= stored  # the catalog kept every acknowledged face
        assert svc.describe_collection(collection_id="k")["FaceCount"] == len(stored)
        with svc.catalog.read() as conn:
            coll = svc.catalog.collection(conn, "k")
            keys = svc.catalog.live_keys(conn, coll.pk)
            rows = svc.catalog.faces_by_id(conn, coll.pk, list(acked), with_embedding=True)
        assert np.array_equal(svc.index.keys(coll.pk, coll.version), keys)  # they agree
        for row in rows.values():  # every acknowledged template is found by itself
            assert row.embedding is not None
            assert svc.index.search(coll.pk, coll.version, row.embedding, 1)[0] == row.pk
        by_ext = {f"img{i}": p for i, p in enumerate(photos)}
        for fid, ext in acked.items():  # and by its photo, through the service
            r = svc.search_faces_by_image(collection_id="k",
                                          image={"Bytes": by_ext[ext].read_bytes()})
            assert fid in {m["Face"]["FaceId"] for m in r["FaceMatches"]}
    finally:
        svc.close()
        svc.engine.dispose()


def test_kills_during_snapshot_saves_lose_nothing(tmp_path: Path) -> None:
    rng = random.Random(11)
    acked: list[int] = []
    torn = 0
    next_batch = 0
    for _ in range(3):
        got = run_and_kill(INGEST_TEMPLATES, [str(tmp_path), str(next_batch)],
                           rng.randint(2, 4), rng.uniform(0.0, 0.5), watch=tmp_path / "index")
        acked += [int(b) for (b,) in got]
        torn += bool(list((tmp_path / "index").glob("*.tmp")))  # killed mid-save
        next_batch = max(acked) + 100  # never reuse a batch number (face ids derive from it)

    catalog = Catalog(make_engine(f"sqlite:///{tmp_path / 'catalog.db'}"))
    index = EmbeddedIndex(catalog, tmp_path / "index", exact_below=1)
    try:
        assert not list((tmp_path / "index").glob("*.tmp"))
        with catalog.read() as conn:
            coll = catalog.collection(conn, "k")
            keys = catalog.live_keys(conn, coll.pk)
            for b in acked:
                fids = [f"{b:08x}-0000-4000-8000-{i:012x}" for i in range(1000)]
                rows = catalog.faces_by_id(conn, coll.pk, fids, with_embedding=True)
                assert len(rows) == 1000, f"batch {b} was acknowledged but is incomplete"
                vecs = templates(b)
                for i in range(0, 1000, 97):
                    row = rows[fids[i]]
                    assert row.embedding is not None and np.array_equal(row.embedding, vecs[i])
                    # an approximate index: found among the 10 nearest (then re-scored exactly)
                    assert row.pk in index.search(coll.pk, coll.version, vecs[i], 10)
        assert coll.face_count == len(keys)
        assert np.array_equal(index.keys(coll.pk, coll.version), keys)
    finally:
        index.close()
        catalog.engine.dispose()
    assert torn == 3, "a kill missed its snapshot save: the test did not test that"


@pytest.mark.parametrize("cut", [0.0, 0.5, 0.99])
def test_a_torn_snapshot_never_loads(tmp_path: Path, cut: float) -> None:
    """What a kill mid-write leaves (a truncated graph, a half-written pointer) is discarded."""
    catalog = Catalog(make_engine(f"sqlite:///{tmp_path / 'catalog.db'}"))
    index = EmbeddedIndex(catalog, tmp_path / "index", exact_below=1)
    vecs = np.random.default_rng(0).normal(0, 1, (500, 128)).astype(np.float32)
    with catalog.begin() as conn:
        coll = catalog.create_collection(conn, "k", "test-model", 128)
    with catalog.begin() as conn:
        coll = catalog.lock_collection(conn, "k")
        catalog.add_vectors(conn, coll, vecs, [f"{i:08x}-0000-4000-8000-000000000000"
                                               for i in range(500)], [None] * 500)
    index.search(coll.pk, coll.version + 1, vecs[0], 1)
    index.close()
    pointer = tmp_path / "index" / f"c{coll.pk}.json"
    pointer.write_text(pointer.read_text()[: int(len(pointer.read_text()) * cut)])
    reopened = EmbeddedIndex(Catalog(make_engine(f"sqlite:///{tmp_path / 'catalog.db'}")),
                             tmp_path / "index", exact_below=1)
    with catalog.read() as conn:
        keys = catalog.live_keys(conn, coll.pk)
        version = catalog.collection(conn, "k").version
    assert np.array_equal(reopened.keys(coll.pk, version), keys)
    assert reopened.search(coll.pk, version, vecs[123], 1)[0] == keys[123]
    catalog.engine.dispose()


# --- through the server: `faceledger serve` and its inference workers killed with SIGKILL -------

SERVER_INDEXES = {
    # the embedded index as an HNSW graph from the first face, snapshotted after every change:
    # searches run beside the writes, so kills land in catch-ups and snapshot saves too
    "embedded": {"FACELEDGER_INDEX_EXACT_BELOW": "1", "FACELEDGER_INDEX_SNAPSHOT_CHANGES": "1"},
    "pgvector": {"FACELEDGER_VECTOR_INDEX": "pgvector"},
}
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})


@dataclass
class Acked:
    photo: int  # index into the photo list
    largest: bool  # the first FaceRecord: the largest face of its photo that passed AUTO


@contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`faceledger serve --workers 2` in a process group of its own, answering at the URL
    yielded; the whole group is killed (SIGKILL) when the block ends, if it still runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from faceledger.cli import main; main()", "serve",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
            env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


def rekognition(url: str, key: IssuedKey) -> Any:
    """A boto3 client of the server at `url`, each call signed anew (SECURITY.md)."""
    return sign_each_call(boto3.session.Session().client(
        "rekognition", endpoint_url=url, region_name="us-east-1", config=NO_RETRIES,
        aws_access_key_id=key.info.access_key_id, aws_secret_access_key=key.secret_access_key))


def answering(url: str, key: IssuedKey, proc: subprocess.Popen[bytes]) -> Any:
    """A client of the server at `url`, once the server answers."""
    client = rekognition(url, key)
    deadline = time.monotonic() + 300
    while True:
        try:
            client.list_collections()
            return client
        except BotoCoreError:  # not listening yet
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.3)


def index_until_killed(proc: subprocess.Popen[bytes], url: str, key: IssuedKey,
                       photos: list[Path], sent: Iterator[int], acked: dict[str, Acked],
                       kill_after: int) -> int:
    """Three clients index `photos` in turn while one searches; the server's process group is
    killed with SIGKILL once `kill_after` more IndexFaces were acknowledged and one is in flight.
    Returns how many requests the kill cut off. Every request differs from the others (a
    signed request is served once: the same bytes twice in one second are a replay)."""
    lock = threading.Lock()
    killed = threading.Event()
    state = {"acks": 0, "in_flight": 0, "cut": 0}
    errors: list[BaseException] = []

    def indexer() -> None:
        client = rekognition(url, key)
        while not killed.is_set():
            n = next(sent)
            with lock:
                state["in_flight"] += 1
            try:
                r = client.index_faces(CollectionId="k",
                                       Image={"Bytes": photos[n % len(photos)].read_bytes()},
                                       ExternalImageId=f"img{n}")
            except (BotoCoreError, ClientError) as exc:
                with lock:
                    state["in_flight"] -= 1
                    if killed.is_set():
                        state["cut"] += 1
                    else:
                        errors.append(exc)
                return
            with lock:
                state["in_flight"] -= 1
                state["acks"] += 1
                for i, rec in enumerate(r["FaceRecords"]):
                    acked[rec["Face"]["FaceId"]] = Acked(n % len(photos), i == 0)

    def searcher() -> None:
        client = rekognition(url, key)
        for n in itertools.count(1):
            if killed.is_set():
                return
            with lock:
                done = sorted({a.photo for a in acked.values()})
            try:
                if done:
                    client.search_faces_by_image(
                        CollectionId="k", Image={"Bytes": photos[done[-1]].read_bytes()},
                        MaxFaces=n % 4096 + 1)
                else:
                    client.list_faces(CollectionId="k", MaxResults=n % 4096 + 1)
            except (BotoCoreError, ClientError) as exc:
                if not killed.is_set():
                    errors.append(exc)
                return

    threads = [threading.Thread(target=indexer) for _ in range(3)]
    threads.append(threading.Thread(target=searcher))
    for t in threads:
        t.start()
    deadline = time.monotonic() + 600
    while True:
        with lock:
            if state["acks"] >= kill_after and state["in_flight"] or errors:
                # killed mid-request: the threads stop at their next call
                os.killpg(proc.pid, signal.SIGKILL)
                killed.set()
                break
        assert time.monotonic() < deadline and proc.poll() is None, "the indexing stalled"
        time.sleep(0.01)
    proc.wait(timeout=60)
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return state["cut"]


def all_faces(client: Any) -> dict[str, dict[str, Any]]:
    faces: dict[str, dict[str, Any]] = {}
    token: dict[str, str] = {}
    while True:
        page = client.list_faces(CollectionId="k", MaxResults=1000, **token)
        faces.update({f["FaceId"]: f for f in page["Faces"]})
        if "NextToken" not in page:
            return faces
        token = {"NextToken": page["NextToken"]}


@pytest.mark.slow
@pytest.mark.parametrize("index", sorted(SERVER_INDEXES))
def test_acknowledged_faces_survive_kill_9_of_the_server(
        index: str, tmp_path: Path, faces_dir: Path, request: pytest.FixtureRequest) -> None:
    # The photos of the kill test above: 13 photos, 17 faces (model 2.0's detector also finds 4
    # bystanders beside Blix and Woods, which IndexFaces indexes as Rekognition would)
    photos = sorted((faces_dir / "lfw" / "Hans_Blix").glob("*.jpg")) + sorted(
        (faces_dir / "lfw" / "Tiger_Woods").glob("*.jpg"))
    kek = base64.b64encode(secrets.token_bytes(32)).decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACELEDGER_")}
    env.update(FACELEDGER_DATA_DIR=str(tmp_path / "data"), FACELEDGER_KEY_ENCRYPTION_KEY=kek,
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p), **SERVER_INDEXES[index])
    if index == "pgvector":
        env["FACELEDGER_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    settings = Settings(data_dir=tmp_path / "data", key_encryption_key=SecretStr(kek),
                        database_url=env.get("FACELEDGER_DATABASE_URL"))
    engine = make_engine(settings.resolved_database_url())
    key = KeyStore.open(settings, engine, create_kek=True).create("k", ["*"], ["*"])
    engine.dispose()

    acked: dict[str, Acked] = {}  # FaceId -> where it came from
    sent = itertools.count()
    for life, kill_after in enumerate((8, 6)):
        with serving(env, tmp_path / "server.log") as (proc, url):
            client = answering(url, key, proc)
            if life == 0:
                client.create_collection(CollectionId="k")
            cut = index_until_killed(proc, url, key, photos, sent, acked, kill_after)
            assert cut >= 1, "no request was in flight when the server was killed"

    with serving(env, tmp_path / "server.log") as (proc, url):
        client = answering(url, key, proc)
        listed = all_faces(client)
        assert set(acked) <= set(listed)  # ListFaces: the catalog kept every one
        assert client.describe_collection(CollectionId="k")["FaceCount"] == len(listed)
        by_photo: dict[int, list[str]] = {}
        for fid, a in acked.items():
            by_photo.setdefault(a.photo, []).append(fid)
        for p, fids in sorted(by_photo.items()):
            image = {"Bytes": photos[p].read_bytes()}
            # SearchFaces: the photo indexed once more; its fresh faces (the same templates)
            # find every acknowledged face of the photo, bystanders included
            fresh = client.index_faces(CollectionId="k", Image=image,
                                       ExternalImageId=f"check{p}")["FaceRecords"]
            found: set[str] = set()
            for rec in fresh:
                found |= {m["Face"]["FaceId"] for m in client.search_faces(
                    CollectionId="k", FaceId=rec["Face"]["FaceId"], FaceMatchThreshold=99.0,
                    MaxFaces=1000)["FaceMatches"]}
            assert set(fids) <= found, f"{photos[p].name}: {set(fids) - found} not found"
            # SearchFacesByImage searches the photo's largest face (as Rekognition's does): it
            # finds the acknowledged faces that were the largest; a bystander is found by a
            # photo where it is the largest face, or by SearchFaces as above
            matched = {m["Face"]["FaceId"] for m in client.search_faces_by_image(
                CollectionId="k", Image=image, QualityFilter="AUTO", FaceMatchThreshold=99.0,
                MaxFaces=1000)["FaceMatches"]}
            assert {f for f in fids if acked[f].largest} <= matched, photos[p].name
    bystanders = sum(not a.largest for a in acked.values())
    print(f"\n{index}: {len(acked)} acknowledged faces ({bystanders} bystanders) of "
          f"{next(sent)} IndexFaces sent, {len(listed)} stored; none lost or unfindable")
