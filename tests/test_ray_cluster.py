"""`faceledger collection index --ray` on a real Ray cluster started here: a head node and a
second node (two raylets, one CPU each, `ray start --block` processes of their own), real LFW
photos, and one node killed with SIGKILL in the middle of a run.

What must hold: the run finishes on the node left; every acknowledged face (a report line) is
stored, nothing is stored twice (one image, one ImageId), the ledger verifies; a run whose
driver is killed outright is finished by running the same command again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
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


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACELEDGER_", "RAY_"))}
    # the nodes' worker processes import this checkout's faceledger, as the driver does
    env["PYTHONPATH"] = os.pathsep.join([SRC] + [p for p in sys.path if p])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
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


def _cli(data: Path, *args: str, stderr: Path | None = None) -> subprocess.Popen[str]:
    env = _env()
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


def _wait_for_lines(run: subprocess.Popen[str], report: Path, n: int,
                    stderr: Path | None = None, actors: int = 0) -> None:
    """Until `report` has n lines (and `stderr` says `actors` actors are ready)."""
    deadline = time.monotonic() + 300
    while len(_lines(report)) < n or (
            stderr is not None and stderr.read_text().count("Ray actor ready") < actors):
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.1)


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
    run = _cli(data, *cmd, "--report", str(report), stderr=errors)
    # both actors at work (one per node), and a few images written
    _wait_for_lines(run, report, 4, errors, actors=2)
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
    run = _cli(data, *cmd, "--report", str(again))
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
    run = _cli(data, *cmd2, "--report", str(third))
    _wait_for_lines(run, third, 6)
    run.kill()
    run.communicate(timeout=60)
    cut = _lines(third)
    fourth = tmp_path / "run4.jsonl"
    run = _cli(data, *cmd2, "--report", str(fourth))
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
               ray_cluster.address)
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
    run = _cli(data, *cmd, "--report", str(report), stderr=errors)
    _wait_for_lines(run, report, 4, errors, actors=2)
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
    run = _cli(data, *cmd, "--report", str(tmp_path / "again.jsonl"))
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    again = json.loads(out)
    assert again["indexing"]["indexed"] == 0 and not again["target"]["created"]
    assert sorted(_stored(data, "new")[1]) == sorted(face_ids)
