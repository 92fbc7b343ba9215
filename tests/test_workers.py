"""Serving on several cores and several servers: real `faceledger serve` processes on 127.0.0.1,
called with boto3, over one SQLite file or one real PostgreSQL (+ pgvector) database.

- A server with 2 inference processes keeps its admission limit (ThrottlingException) and
  per-key rates (ProvisionedThroughputExceededException): both live in its one event loop.
- Two servers on one database: a face indexed through one is found through the other in the
  next request, a deletion is seen at once, concurrent IndexFaces through both lose and
  duplicate nothing, and the ledger stays one intact chain.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from faceledger.db import make_engine
from faceledger.ledger import Ledger
from faceledger.ledger.verify import verify
from faceledger.sdk import sign_each_call
from faceledger.server.keys import KeyStore
from faceledger.settings import Settings

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Key:
    key_id: str
    secret: str


@dataclass
class Node:
    """One `faceledger serve` process."""

    url: str
    proc: subprocess.Popen[str]
    log: Path  # its stderr

    def client(self, key: Key) -> Any:
        import boto3
        from botocore.config import Config

        # each call signed anew (SECURITY.md): the throttling counted below is admission's
        return sign_each_call(boto3.session.Session().client(
            "rekognition", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id=key.key_id, aws_secret_access_key=key.secret,
            config=Config(retries={"total_max_attempts": 1}, read_timeout=120,
                          max_pool_connections=16)))


def _env(data_dir: Path, database_url: str | None, kek: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACELEDGER_")}
    env.update(FACELEDGER_DATA_DIR=str(data_dir), FACELEDGER_KEY_ENCRYPTION_KEY=kek,
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p), **extra)
    if database_url:
        env["FACELEDGER_DATABASE_URL"] = database_url
    return env


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Any]:
    """Start nodes with `start(data_dir, database_url, workers, **env)`; stops them all."""
    nodes: list[Node] = []
    kek = base64.b64encode(secrets.token_bytes(32)).decode()

    def start(data_dir: Path, database_url: str | None, workers: int, queue: int = 32,
              **extra: str) -> Node:
        port = _free_port()
        # the server's log goes to a file: a pipe nobody reads would block it once full
        log = tmp_path / f"server-{port}.log"
        with log.open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from faceledger.cli import main; main()", "serve",
                 "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
                 "--queue", str(queue)],
                env=_env(data_dir, database_url, kek, **extra), stdout=subprocess.DEVNULL,
                stderr=err, text=True)
        node = Node(f"http://127.0.0.1:{port}", proc, log)
        nodes.append(node)
        return node

    def key(data_dir: Path, database_url: str | None, rate: float | None = None) -> Key:
        settings = Settings(data_dir=data_dir, database_url=database_url,
                            key_encryption_key=kek)
        engine = make_engine(settings.resolved_database_url())
        data_dir.mkdir(parents=True, exist_ok=True)
        issued = KeyStore.open(settings, engine, create_kek=True).create(
            f"k{secrets.token_hex(3)}", ["*"], ["*"], rate)
        engine.dispose()
        return Key(issued.info.access_key_id, issued.secret_access_key)

    def ready(node: Node, k: Key) -> None:
        c = node.client(k)
        deadline = time.monotonic() + 180
        while True:
            try:
                c.list_collections()
                return
            except Exception:
                if node.proc.poll() is not None:
                    raise RuntimeError(f"server exited: {node.log.read_text()[-2000:]}") \
                        from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    try:
        yield start, key, ready
    finally:
        for n in nodes:
            n.proc.terminate()
        for n in nodes:
            try:
                n.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                n.proc.kill()


@pytest.fixture(scope="module")
def lfw_people(faces_dir: Path) -> list[list[bytes]]:
    """Two photos each of eight people from LFW (bytes)."""
    people = []
    for d in sorted((faces_dir / "lfw").iterdir()):
        photos = sorted(d.glob("*.jpg"))
        if len(photos) >= 2:
            people.append([p.read_bytes() for p in photos[:2]])
        if len(people) == 8:
            break
    return people


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__))


def test_limits_hold_with_worker_processes(cluster: Any, tmp_path: Path,
                                           lfw_people: list[list[bytes]]) -> None:
    start, key, ready = cluster
    data = tmp_path / "node"
    free, limited = key(data, None), key(data, None, rate=1.0)
    node = start(data, None, workers=2, queue=0)
    ready(node, free)
    photo = lfw_people[0][0]
    clients = [node.client(free) for _ in range(8)]
    barrier = threading.Barrier(8)

    def detect(c: Any) -> str:
        barrier.wait()
        try:
            c.detect_faces(Image={"Bytes": photo})
            return "ok"
        except Exception as exc:  # noqa: BLE001 - the error code is the result
            return _code(exc)

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(detect, clients))
    # capacity is workers + queue = 2: the rest are refused at once, not queued (a request
    # that arrives after an earlier one finished may still get in)
    assert outcomes.count("ok") >= 1, outcomes
    assert outcomes.count("ThrottlingException") >= 3, outcomes
    assert set(outcomes) <= {"ok", "ThrottlingException"}, outcomes
    c = node.client(limited)
    codes = []
    for _ in range(4):
        try:
            c.list_collections()
            codes.append("ok")
        except Exception as exc:  # noqa: BLE001
            codes.append(_code(exc))
    assert codes[0] == "ok" and "ProvisionedThroughputExceededException" in codes, codes


BACKENDS = ["sqlite", "postgres-embedded", "postgres-pgvector"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_servers_one_database(backend: str, cluster: Any, tmp_path: Path,
                                  lfw_people: list[list[bytes]],
                                  request: pytest.FixtureRequest) -> None:
    start, key, ready = cluster
    url = None if backend == "sqlite" else request.getfixturevalue("postgres_url")
    # SQLite: two processes of one machine share the data dir (and the index snapshots in it);
    # PostgreSQL: two "machines", each with a data dir of its own
    dirs = [tmp_path / "a", tmp_path / "a"] if url is None else [tmp_path / "a", tmp_path / "b"]
    extra = {"FACELEDGER_VECTOR_INDEX": "pgvector"} if backend.endswith("pgvector") else {
        # HNSW and a snapshot after every change: the index files are shared and rewritten
        "FACELEDGER_INDEX_EXACT_BELOW": "1", "FACELEDGER_INDEX_SNAPSHOT_CHANGES": "1"}
    k = key(dirs[0], url)
    a, b = (start(d, url, workers=1, **extra) for d in dirs)
    ready(a, k)
    ready(b, k)
    ca, cb = a.client(k), b.client(k)
    ca.create_collection(CollectionId="shared")
    first, second = lfw_people[0]
    indexed = ca.index_faces(CollectionId="shared", Image={"Bytes": first}, MaxFaces=1,
                             ExternalImageId="p0")["FaceRecords"][0]["Face"]["FaceId"]
    # the very next request, through the other server
    found = cb.search_faces_by_image(CollectionId="shared", Image={"Bytes": second})
    assert [m["Face"]["FaceId"] for m in found["FaceMatches"]] == [indexed]
    cb.delete_faces(CollectionId="shared", FaceIds=[indexed])
    assert ca.search_faces_by_image(CollectionId="shared",
                                    Image={"Bytes": second})["FaceMatches"] == []

    # concurrent IndexFaces through both servers, two clients each
    jobs = [(i, photos[0]) for i, photos in enumerate(lfw_people)]
    clients = [a.client(k), a.client(k), b.client(k), b.client(k)]

    def index(job: tuple[int, bytes]) -> str:
        i, photo = job
        # "c{i}", not "p{i}": job 0 would repeat the first IndexFaces above byte for byte, and
        # signed by the same key within the same second it is indistinguishable from a replay
        r = clients[i % 4].index_faces(CollectionId="shared", Image={"Bytes": photo},
                                       MaxFaces=1, ExternalImageId=f"c{i}")
        return str(r["FaceRecords"][0]["Face"]["FaceId"])

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(index, jobs))
    assert len(set(ids)) == len(jobs)
    for c in (ca, cb):
        listed = [f["FaceId"] for f in c.list_faces(CollectionId="shared",
                                                     MaxResults=100)["Faces"]]
        assert sorted(listed) == sorted(ids)
        assert c.describe_collection(CollectionId="shared")["FaceCount"] == len(jobs)
    # same answers from both servers for every person's second photo
    found_own = 0
    for i, photos in enumerate(lfw_people):
        answers = [c.search_faces_by_image(CollectionId="shared", Image={"Bytes": photos[1]},
                                           MaxFaces=3) for c in (ca, cb)]
        assert answers[0]["FaceMatches"] == answers[1]["FaceMatches"]
        top = [m["Face"]["FaceId"] for m in answers[0]["FaceMatches"]][:1]
        assert top in ([], [ids[i]])  # the default threshold may miss, never mismatch
        found_own += top == [ids[i]]
    assert found_own >= len(lfw_people) // 2
    engine = make_engine(url or Settings(data_dir=dirs[0]).resolved_database_url())
    checked = verify(Ledger(engine))
    engine.dispose()
    assert checked.ok, checked.to_dict()
    assert checked.checked >= len(jobs) + 4
