"""`faceledger collection index --ray` on a real Ray cluster started here: a head node and a
second node (two raylets, one CPU each, `ray start --block` processes of their own), real LFW
photos, and one node killed with SIGKILL in the middle of a run.

What must hold: the run finishes on the node left; every acknowledged face (a report line) is
stored, nothing is stored twice (one image, one ImageId), the ledger verifies; a run whose
driver is killed outright is finished by running the same command again.

And who may drive the cluster (issue 24): a cluster started as the docs said before (plain
`ray start --head`) runs a stranger's code, and faceledger refuses it; a cluster started as
they say now (token authentication, private address) refuses a driver without its token; no
secret of the command's settings is among what its driver sends to the actors.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil  # type: ignore[import-untyped]
import pytest
import sqlalchemy as sa

from faceledger.cluster import LocalCluster
from faceledger.db import make_engine
from faceledger.ledger import Ledger, schema
from faceledger.ledger.verify import verify
from faceledger.settings import Settings
from faceledger.store.catalog import Catalog, faces

try:
    import ray  # noqa: F401

    HAVE_RAY = True
except ImportError:  # pragma: no cover - the test extra installs it
    HAVE_RAY = False

pytestmark = pytest.mark.skipif(
    not HAVE_RAY, reason="needs Ray (pip install -e '.[test]' or '.[ray]') for a real cluster")

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env(cluster: LocalCluster | None = None) -> dict[str, str]:
    """A driver's environment: this checkout's faceledger, and `cluster`'s token if given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACELEDGER_", "RAY_"))}
    # the nodes' worker processes import this checkout's faceledger, as the driver does
    env["PYTHONPATH"] = os.pathsep.join([SRC] + [p for p in sys.path if p])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    if cluster is not None:
        env.update(cluster.driver_env())
    return env


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[LocalCluster]:
    """A head node and a second node, one CPU each, started here and stopped after."""
    # a short path: Ray's Unix sockets live under it (108-byte limit)
    base = Path(tempfile.mkdtemp(prefix="flray-"))
    cluster = LocalCluster(base, workers=1, cpus=1, object_store_mb=200)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def _cli(data: Path, *args: str, stderr: Path | None = None,
         cluster: LocalCluster | None = None) -> subprocess.Popen[str]:
    env = _env(cluster)
    env["FACELEDGER_DATA_DIR"] = str(data)
    if stderr is None:
        return subprocess.Popen([sys.executable, "-c", "from faceledger.cli import main; main()",
                                 *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    with stderr.open("w") as err:  # read while the run goes on
        return subprocess.Popen([sys.executable, "-c", "from faceledger.cli import main; main()",
                                 *args], env=env, stdout=subprocess.PIPE, stderr=err, text=True)


def _lfw_people(faces_dir: Path, dest: Path, at_least: int) -> Path:
    """LFW's first people, a folder each, copied to `dest` until it holds `at_least` photos."""
    for d in sorted(p for p in (faces_dir / "lfw").iterdir() if p.is_dir()):
        shutil.copytree(d, dest / d.name)
        if len(list(dest.rglob("*.jpg"))) >= at_least:
            break
    return dest


def _stored(data: Path, collection: str) -> tuple[dict[str, set[str]], list[str], bool]:
    """Per image digest its ImageIds, the FaceIds, and whether the ledger verifies."""
    engine = make_engine(Settings(data_dir=data).resolved_database_url())
    cat = Catalog(engine)
    with cat.read() as conn:
        coll = cat.collection(conn, collection)
        rows = conn.execute(sa.select(faces.c.image_sha256, faces.c.image_id, faces.c.face_id)
                            .where(faces.c.collection_pk == coll.pk)).all()
    ok = verify(Ledger(engine)).ok
    engine.dispose()
    images: dict[str, set[str]] = {}
    for sha, image_id, _ in rows:
        images.setdefault(str(sha), set()).add(str(image_id))
    return images, [str(r[2]) for r in rows], ok


def _lines(report: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in report.read_text().splitlines()] if report.is_file() else []


def _wait_for_lines(run: subprocess.Popen[str], report: Path, n: int) -> None:
    """Until `report` has n lines."""
    deadline = time.monotonic() + 300
    while len(_lines(report)) < n:
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.1)


def _both_actors_at_work(run: subprocess.Popen[str], stderr: Path) -> None:
    """Until both nodes' actors are ready. Work goes only to ready actors, so the first one is
    stopped (SIGSTOP: its pid is in its line) until the other is: however long the other takes
    to load its models on a busy machine, the first cannot do the whole run alone meanwhile."""
    first = _ready_actors(run, stderr, 1)[0]
    os.kill(first, signal.SIGSTOP)
    try:
        _ready_actors(run, stderr, 2)
    finally:
        os.kill(first, signal.SIGCONT)


def _ready_actors(run: subprocess.Popen[str], stderr: Path, n: int) -> list[int]:
    """The pids of the run's ready actors ("Ray actor ready on node/pid N/PID"), once n are."""
    deadline = time.monotonic() + 300
    while True:
        pids = [int(line.rsplit("/", 1)[1]) for line in stderr.read_text().splitlines()
                if line.startswith("Ray actor ready on node/pid ")]
        if len(pids) >= n:
            return pids
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.01)


@pytest.mark.slow
def test_a_node_killed_mid_run_loses_and_duplicates_nothing(
        tmp_path: Path, faces_dir: Path, ray_cluster: LocalCluster) -> None:
    photos = _lfw_people(faces_dir, tmp_path / "photos", 60)
    first = next(photos.rglob("*_0001.jpg"))
    shutil.copy(first, photos / "copy-of-first.jpg")  # same bytes: indexed once
    total = len(list(photos.rglob("*.jpg")))
    data = tmp_path / "data"
    out, err = _cli(data, "collection", "create", "staff").communicate(timeout=120)
    assert "created" in out, err

    # 1. the second node dies (SIGKILL to its raylet and actor) once a few images are written
    report = tmp_path / "run1.jsonl"
    cmd = ["collection", "index", "staff", str(photos), "--external-id-from", "parent",
           "--max-faces", "1", "--ray", ray_cluster.address, "--ray-batch", "2",
           "--no-progress", "--json"]
    errors = tmp_path / "run1.err"
    run = _cli(data, *cmd, "--report", str(report), stderr=errors, cluster=ray_cluster)
    # both actors at work (one per node), and a few images written
    _both_actors_at_work(run, errors)
    _wait_for_lines(run, report, 4)
    start = len(_lines(report))
    _wait_for_lines(run, report, start + 4)
    ray_cluster.kill_worker()
    killed_after = len(_lines(report))
    out, _ = run.communicate(timeout=600)
    err = errors.read_text()
    assert run.returncode == 0, err
    summary = json.loads(out)
    lines = _lines(report)
    # the run finished on the head node alone, and the loss was seen (and its batch redone)
    assert "Ray actor was lost" in err, err
    assert summary["images"] == total == len(lines) and not summary["interrupted"]
    assert len({x["path"] for x in lines}) == total  # every image reported exactly once
    indexed = [x for x in lines if x["status"] == "indexed"]
    images, face_ids, ok = _stored(data, "staff")
    assert ok
    # every acknowledged face is stored, nothing else is, and no image is stored twice
    assert sorted(f for x in indexed for f in x["face_ids"]) == sorted(face_ids)
    n_faces = len(face_ids)
    assert n_faces == summary["faces_indexed"] == len(set(face_ids))
    assert set(images) == {x["sha256"] for x in indexed}
    assert all(len(ids) == 1 for ids in images.values())
    assert [x["status"] for x in lines if x["sha256"] == indexed[0]["sha256"]].count(
        "indexed") == 1
    lost = [x for x in err.splitlines() if "lost" in x]
    print(f"\nnode killed after {killed_after} of {total} images; {lost}; {summary}")

    # 2. the same command again, with the node back: everything stored is skipped
    ray_cluster.start_worker()
    again = tmp_path / "run2.jsonl"
    run = _cli(data, *cmd, "--report", str(again), cluster=ray_cluster)
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    summary2 = json.loads(out)
    assert summary2["faces_indexed"] == 0
    assert summary2["skipped_already_indexed"] == len(images) + 1  # and the copy
    assert sorted(_stored(data, "staff")[1]) == sorted(face_ids)

    # 3. a driver killed outright (SIGKILL) mid-run into a new collection; a rerun finishes
    out, err = _cli(data, "collection", "create", "staff2").communicate(timeout=120)
    assert "created" in out, err
    cmd2 = [c if c != "staff" else "staff2" for c in cmd]
    third = tmp_path / "run3.jsonl"
    run = _cli(data, *cmd2, "--report", str(third), cluster=ray_cluster)
    _wait_for_lines(run, third, 6)
    run.kill()
    run.communicate(timeout=60)
    cut = _lines(third)
    fourth = tmp_path / "run4.jsonl"
    run = _cli(data, *cmd2, "--report", str(fourth), cluster=ray_cluster)
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    rest = _lines(fourth)
    images2, n2, ok2 = _stored(data, "staff2")
    assert ok2 and len(rest) == total
    acknowledged = {x["sha256"] for x in cut if x["status"] == "indexed"}
    assert acknowledged <= set(images2)  # nothing acknowledged before the kill was lost
    assert all(x["status"] == "skipped" for x in rest if x["sha256"] in acknowledged)
    assert all(len(ids) == 1 for ids in images2.values())
    # both collections end with the same images indexed
    assert set(images2) == set(images) and len(n2) == n_faces == len(set(n2))


@pytest.mark.slow
def test_evaluate_on_ray_fills_the_same_cache_and_report(
        tmp_path: Path, faces_dir: Path, ray_cluster: LocalCluster) -> None:
    from faceledger.evaluation.enrolment import EmbeddingCache, cache_key, enrol_bytes
    from faceledger.vision import FacePipeline

    root = tmp_path / "people"
    for d in sorted(p for p in (faces_dir / "lfw").iterdir() if p.is_dir()):
        if len(list(d.glob("*.jpg"))) >= 2:
            shutil.copytree(d, root / d.name)
        if len(list(root.rglob("*.jpg"))) >= 24:
            break
    if not ray_cluster.workers:
        ray_cluster.start_worker()
    cache = tmp_path / "cache"
    base = ["evaluate", "folders", str(root), "--cache", str(cache), "--replicates", "20",
            "--quiet"]
    run = _cli(tmp_path, *base, "--out", str(tmp_path / "on-ray"), "--ray",
               ray_cluster.address, cluster=ray_cluster)
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    # every image is now in the cache, as the process pool would have stored it
    settings = Settings(data_dir=tmp_path)
    pipeline = FacePipeline(settings)
    stored = EmbeddingCache(cache, cache_key(settings, pipeline.model_version))
    photos = sorted(root.rglob("*.jpg"))
    entries = [stored.get(sha, need_embedding=True) for sha in
               (enrol_bytes(pipeline, p.read_bytes(), embed=False).sha256 for p in photos)]
    assert all(e is not None for e in entries)
    here = enrol_bytes(pipeline, photos[0].read_bytes(), embed=True)
    first = entries[0]
    assert first is not None and first.embedding is not None and here.embedding is not None
    assert np.array_equal(first.embedding, here.embedding)  # the same pipeline, the same bits
    # the same command without Ray reads them all from the cache: the same report
    run = _cli(tmp_path, *base, "--out", str(tmp_path / "local"), "--workers", "1")
    out2, err2 = run.communicate(timeout=600)
    assert run.returncode == 0, err2

    def rates(path: Path) -> Any:
        """report.json without when and how it was run"""
        def strip(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: strip(x) for k, x in v.items() if k not in ("created", "command")}
            return [strip(x) for x in v] if isinstance(v, list) else v

        return strip(json.loads((path / "report.json").read_text()))

    assert rates(tmp_path / "on-ray") == rates(tmp_path / "local")


@pytest.mark.slow
def test_reenrol_on_ray_survives_a_lost_node_and_links_every_face(
        tmp_path: Path, faces_dir: Path, ray_cluster: LocalCluster) -> None:
    """`collection reenrol --ray`: a model 1.0 collection re-enrolled into 2.0 on the cluster,
    the second node killed mid-run. Every source face with a photo ends linked to exactly one
    new face, nothing is stored twice, the ledger verifies and links the two collections, and
    a rerun has nothing left to do."""
    photos = _lfw_people(faces_dir, tmp_path / "photos", 60)
    total = len(list(photos.rglob("*.jpg")))
    data = tmp_path / "data"
    out, err = _cli(data, "collection", "create", "old", "--model", "1.0").communicate(
        timeout=120)
    assert "created" in out, err
    run = _cli(data, "collection", "index", "old", str(photos), "--external-id-from", "parent",
               "--max-faces", "1", "--workers", "1", "--no-progress", "--json")
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    source_images, source_faces, _ = _stored(data, "old")
    assert len(source_faces) >= total - 3  # HOG may miss a face or two

    if not ray_cluster.workers:
        ray_cluster.start_worker()
    report = tmp_path / "reenrol.jsonl"
    errors = tmp_path / "reenrol.err"
    cmd = ["collection", "reenrol", "old", "--into", "new", "--model", "2.0", str(photos),
           "--ray", ray_cluster.address, "--ray-batch", "2", "--no-progress", "--json"]
    run = _cli(data, *cmd, "--report", str(report), stderr=errors, cluster=ray_cluster)
    _both_actors_at_work(run, errors)
    _wait_for_lines(run, report, 4)
    _wait_for_lines(run, report, len(_lines(report)) + 4)
    ray_cluster.kill_worker()
    killed_after = len(_lines(report))
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, errors.read_text()
    summary = json.loads(out)
    assert summary["source"] == {"collection": "old", "model": "1.0"}
    assert summary["target"] == {"collection": "new", "model": "2.0", "created": True}
    lines = _lines(report)
    # a line per photo of a source face (a photo where HOG found none is only listed)
    unmatched = summary["photos_not_in_source"]
    assert len({x["path"] for x in lines}) == len(lines) == total - len(unmatched)
    assert len(unmatched) == total - len(source_images)
    images, face_ids, ok = _stored(data, "new")
    assert ok and len(face_ids) == len(set(face_ids))
    assert all(len(ids) == 1 for ids in images.values())
    assert set(images) <= set(source_images)
    linked = {k: v for x in lines for k, v in x.get("source_face_ids", {}).items()}
    assert set(linked) == set(face_ids)  # every new face names its source face...
    assert len(set(linked.values())) == len(linked)  # ...and no source face twice
    assert set(linked.values()) <= set(source_faces)
    assert summary["faces_linked"] == len(linked)
    print(f"\nre-enrolment: node killed after {killed_after} of {total} photos; "
          f"{len(source_faces)} source faces, {len(linked)} linked; "
          f"lost: {[x for x in errors.read_text().splitlines() if 'lost' in x]}")
    engine = make_engine(Settings(data_dir=data).resolved_database_url())
    with engine.connect() as conn:
        bodies = [json.loads(r[0]) for r in conn.execute(
            sa.select(schema.events.c.body).order_by(schema.events.c.seq)).all()]
    engine.dispose()
    (reenrol,) = [b for b in bodies if b["operation"] == "ReenrolCollection"]
    assert reenrol["params"]["SourceCollectionId"] == "old"
    assert reenrol["params"]["TargetFaceModelVersion"] == "2.0"
    written = [b for b in bodies if b["operation"] == "IndexFaces"
               and b["params"].get("ReenrolRun") == reenrol["request_id"]]
    assert {k: v for b in written for k, v in b["result"]["source_face_ids"].items()} == linked

    # the node back, the same command: nothing left to do, nothing added
    ray_cluster.start_worker()
    run = _cli(data, *cmd, "--report", str(tmp_path / "again.jsonl"), cluster=ray_cluster)
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    again = json.loads(out)
    assert again["indexing"]["indexed"] == 0 and not again["target"]["created"]
    assert sorted(_stored(data, "new")[1]) == sorted(face_ids)


# A stranger's driver: joins the cluster at argv[1] and runs `id` on a node.
STRANGER = """
import subprocess, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
@ray.remote(num_cpus=0)
def run():
    return subprocess.run(["id"], capture_output=True, text=True).stdout
print("ran:", ray.get(run.remote(), timeout=120).strip())
"""


def _stranger(address: str, home: Path, **ray_env: str) -> subprocess.CompletedProcess[str]:
    """STRANGER run from a process that holds no token (its own empty HOME, no RAY_* but
    `ray_env`)."""
    env = _env()
    env["HOME"] = str(home)
    env.update(ray_env)
    return subprocess.run([sys.executable, "-c", STRANGER, address], env=env,
                          capture_output=True, text=True, timeout=300)


def _outside_address(port: int) -> str:
    """This machine's first address that is not loopback (where another machine would
    connect), else loopback."""
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return f"{a.address}:{port}"
    return f"127.0.0.1:{port}"


def _refused_index(tmp_path: Path, faces_dir: Path, address: str) -> str:
    """`collection index --ray ADDRESS` from a process without a token: refused before
    anything is indexed (exit status 2, nothing on stdout, no face stored). Its stderr."""
    photos = _lfw_people(faces_dir, tmp_path / "photos", 2)
    data = tmp_path / "data"
    out, err = _cli(data, "collection", "create", "staff").communicate(timeout=120)
    assert "created" in out, err
    run = _cli(data, "collection", "index", "staff", str(photos), "--ray", address,
               "--no-progress", "--json")
    out, err = run.communicate(timeout=300)
    assert run.returncode == 2 and out == "", (out, err)
    assert _stored(data, "staff")[1] == []
    return err


@pytest.mark.slow
def test_a_cluster_as_the_old_docs_said_runs_a_strangers_code_and_faceledger_refuses_it(
        tmp_path: Path, faces_dir: Path) -> None:
    """Plain `ray start --head` (the old docs): any driver that reaches the port runs code on
    the node, as the user Ray runs as. `--ray` refuses such a cluster before it sends it
    anything."""
    base = Path(tempfile.mkdtemp(prefix="flopen-"))
    cluster = LocalCluster(base, workers=0, cpus=1, object_store_mb=100, open_to_anyone=True)
    try:
        address = _outside_address(cluster.port)
        ran = _stranger(address, tmp_path)
        me = subprocess.run(["id"], capture_output=True, text=True).stdout.strip()
        assert f"ran: {me}" in ran.stdout, (ran.stdout, ran.stderr[-2000:])

        assert "accepts drivers without a token" in _refused_index(tmp_path, faces_dir, address)
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_a_cluster_as_the_docs_say_refuses_a_driver_without_its_token(
        tmp_path: Path, faces_dir: Path, ray_cluster: LocalCluster) -> None:
    """Token authentication on every node (LocalCluster, as docs/deployment.md says): a
    driver with no token, or another token, is refused, from outside and on loopback alike;
    `--ray` without the token stops at once and says what to set."""
    address = _outside_address(ray_cluster.port)
    for attempt in (_stranger(address, tmp_path),
                    _stranger(ray_cluster.address, tmp_path, RAY_AUTH_MODE="token",
                              RAY_AUTH_TOKEN=secrets.token_hex(32))):
        assert attempt.returncode != 0 and "ran:" not in attempt.stdout
        assert "Authentication token is missing or incorrect" in attempt.stderr, \
            attempt.stderr[-2000:]

    assert "requires a token: run this command with RAY_AUTH_MODE=token" in _refused_index(
        tmp_path, faces_dir, address)


@pytest.mark.slow
def test_no_secret_of_the_settings_reaches_an_actor(
        tmp_path: Path, faces_dir: Path, ray_cluster: LocalCluster) -> None:
    """Everything the driver of `collection index --ray` and of `evaluate --ray` hands Ray to
    send (actor arguments, batches, shared arguments), recorded in Ray's serializer: the
    worker's settings and the photos' paths are there; the key-encryption key, the database
    URL, and the S3 and SNS keys are not."""
    if not ray_cluster.workers:
        ray_cluster.start_worker()
    photos = _lfw_people(faces_dir, tmp_path / "photos", 4)
    secret = {"kek": secrets.token_urlsafe(32), "database_file": f"db-{secrets.token_hex(8)}.db",
              "s3_key_id": "AKIA" + secrets.token_hex(8).upper(),
              "s3_secret": secrets.token_urlsafe(30), "sns_key_id": secrets.token_hex(10),
              "sns_secret": secrets.token_urlsafe(30)}
    run = subprocess.run([sys.executable, str(Path(__file__).with_name("ray_shipped.py")),
                          ray_cluster.address, str(photos), str(tmp_path / "data")],
                         input=json.dumps(secret), env=_env(ray_cluster), capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"\nshipped to the cluster: {found}")
    assert found["indexed"] >= 1 and found["enrolled"] >= 1  # the actors did the work
    assert found["worker_settings"] >= 2 and found["photo_paths"] >= 2  # the spy saw it
    assert found["leaks"] == []
