"""Bulk enrolment (`faceledger collection index COLL PATH...`) on real LFW photos: folders,
external ids, the report and summary, resuming by image SHA-256, and Ctrl-C mid-run.

The CLI runs as a real process (its worker processes and signals are the point); the database
is then read back to check that what was reported is what was stored, once.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from faceledger.bulk import Outcome, external_id, find_images, index_images, safe_external_id
from faceledger.cli.collections import _stop_on_interrupt
from faceledger.db import make_engine
from faceledger.ledger import Ledger
from faceledger.ledger.verify import verify
from faceledger.service import FaceService
from faceledger.settings import Settings
from faceledger.store.catalog import Catalog


def test_external_ids_and_walking(tmp_path: Path) -> None:
    (tmp_path / "Ann Lee" / "x").mkdir(parents=True)
    for p in ("Ann Lee/a.jpg", "Ann Lee/x/b.PNG", "Ann Lee/notes.txt", "c.jpeg"):
        (tmp_path / p).write_bytes(b"")
    found = find_images([tmp_path], "relative-path")
    assert [f.external_image_id for f in found] == ["Ann_Lee:a", "Ann_Lee:x:b", "c"]
    assert [f.external_image_id for f in find_images([tmp_path], "parent")] == [
        "Ann_Lee", "x", tmp_path.name]
    # a file named directly is taken even without an image suffix; duplicates once
    named = find_images([tmp_path / "Ann Lee" / "notes.txt", tmp_path / "c.jpeg",
                         tmp_path / "c.jpeg"], "name")
    assert [f.external_image_id for f in named] == ["notes", "c"]
    assert external_id(tmp_path / "é.jpg", tmp_path, "name") == "_"
    assert safe_external_id("x" * 300) == "x" * 255


def _cli(data: Path, *args: str, **kw: object) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACELEDGER_")}
    env.update(FACELEDGER_DATA_DIR=str(data), PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.Popen(
        [sys.executable, "-c", "from faceledger.cli import main; main()", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)  # type: ignore[call-overload]


def _read_line(fd: int) -> bytes:
    """One line from `fd`, read a byte at a time so that nothing after it leaves the pipe
    (b"" at end of file)."""
    line = b""
    while not line.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
    return line


def _stored(data: Path, collection: str) -> tuple[list[str], set[str], bool]:
    """(face ids, image hashes) in the collection and whether the ledger verifies."""
    engine = make_engine(Settings(data_dir=data).resolved_database_url())
    cat = Catalog(engine)
    with cat.read() as conn:
        coll = cat.collection(conn, collection)
        faces = cat.list_faces(conn, coll.pk, 0, 100_000)
        hashes = cat.image_hashes(conn, coll.pk)
    ok = verify(Ledger(engine)).ok
    engine.dispose()
    return [f.face_id for f in faces], hashes, ok


def test_ctrl_c_while_an_image_is_reported_loses_no_report_line(
        tmp_path: Path, faces_dir: Path, service: FaceService) -> None:
    """Ctrl-C (SIGINT to this process) arriving as the first image is being reported: the run
    stops, and every image it stored is in the report. (As a KeyboardInterrupt, raised where
    it landed, it skipped that image's line, and the lines of any image that finished with
    it: stored, never reported. The test below failed so twice in a dozen runs here.)"""
    svc = FaceService(Settings(data_dir=tmp_path / "data"), pipeline=service.pipeline)
    svc.create_collection("c")
    photos = [sorted(d.glob("*.jpg"))[0]
              for d in sorted((faces_dir / "lfw").iterdir()) if d.is_dir()][:10]
    reported: list[Outcome] = []
    interrupted = threading.Event()

    def report(o: Outcome) -> None:
        if not interrupted.is_set():  # Ctrl-C, once
            interrupted.set()
            os.kill(os.getpid(), signal.SIGINT)
        reported.append(o)

    with _stop_on_interrupt() as stop:
        # batches of 2: at most four batches are started or queued when the first is
        # reported, so the run stops before the tenth photo
        summary = index_images(svc, "c", find_images(photos, "name"), threads=2,
                               max_faces=1, on_outcome=report, stop=stop, batch_size=2)
    assert summary.interrupted and 1 <= len(reported) < len(photos)
    stored = [f["FaceId"] for f in svc.list_faces("c")["Faces"]]
    assert sorted(f for o in reported for f in o.face_ids) == sorted(stored)
    svc.close()


@pytest.mark.slow
def test_bulk_index_reports_resumes_and_stops_cleanly(tmp_path: Path, faces_dir: Path) -> None:
    lfw = faces_dir / "lfw"
    photos = tmp_path / "photos"
    people = [d for d in sorted(lfw.iterdir()) if d.is_dir()][:40]
    for d in people:
        shutil.copytree(d, photos / d.name)
    (photos / "broken.jpg").write_bytes(b"not a photo")
    shutil.copy(faces_dir / "detection" / "dogs.jpg", photos / "dogs.jpg")
    first = next(photos.rglob("*_0001.jpg"))
    shutil.copy(first, photos / "copy-of-first.jpg")  # same bytes: indexed once
    total = len(find_images([photos]))
    data = tmp_path / "data"
    create = _cli(data, "collection", "create", "bulk")
    create.communicate(timeout=120)
    assert create.returncode == 0

    # Ctrl-C once the report shows 3 images. The report is a pipe, its buffer shrunk to one
    # page, that this test reads a byte at a time (a buffered reader took up to 8 KB of lines
    # out of the pipe at once and let the program run on: issue 24). The program writes its
    # report from the thread that hands out the images, so while the pipe is full nothing new
    # starts: it is at most a page of lines (16 here, of 240 bytes and more) and the images
    # already handed out (`collection index`'s window: 16 with two workers) ahead of what was
    # read, and it stops at the signal before it hands out another. So it cannot have finished
    # all 70 images when the signal arrives, however fast or loaded the machine.
    fifo = tmp_path / "report.pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    fcntl.fcntl(reader, fcntl.F_SETPIPE_SZ, 4096)
    run = _cli(data, "collection", "index", "bulk", str(photos), "--external-id-from",
               "parent", "--report", str(fifo), "--workers", "2", "--max-faces", "1",
               start_new_session=True)  # a process group of its own, like a terminal's job
    os.set_blocking(reader, True)
    lines_read: list[dict[str, object]] = []
    try:
        while len(lines_read) < 3:
            line = _read_line(reader)
            if not line:  # no writer yet (the program is starting): a FIFO reads as EOF
                assert run.poll() is None, run.communicate(timeout=60)
                time.sleep(0.1)
                continue
            lines_read.append(json.loads(line))
        os.killpg(run.pid, signal.SIGINT)
        rest: list[bytes] = []
        drain = threading.Thread(target=lambda: rest.extend(iter(lambda: os.read(reader, 65536),
                                                                 b"")))
        drain.start()
        out, err = run.communicate(timeout=300)
        drain.join(timeout=60)
    finally:
        os.close(reader)
    assert run.returncode == 130, err
    assert "INTERRUPTED" in out and "Run the same command again" in out
    lines = lines_read + [json.loads(x) for x in b"".join(rest).splitlines()]
    assert 3 <= len(lines) < total
    print(f"\ninterrupted after {len(lines)} of {total} images")
    report = tmp_path / "report.jsonl"
    face_ids, hashes, ok = _stored(data, "bulk")
    reported = [f for x in lines for f in x["face_ids"]]
    # everything acknowledged is stored, and nothing else
    assert sorted(reported) == sorted(face_ids) and ok
    assert {x["sha256"] for x in lines if x["status"] == "indexed"} == hashes

    # run again: what is stored is skipped, the rest is done
    run = _cli(data, "collection", "index", "bulk", str(photos), "--external-id-from",
               "parent", "--report", str(report), "--workers", "2", "--max-faces", "1",
               "--json", "--no-progress")
    out, err = run.communicate(timeout=600)
    assert run.returncode == 1, err  # broken.jpg failed
    summary = json.loads(out)
    before = {x["sha256"] for x in lines if x["status"] == "indexed"}
    again = [json.loads(x) for x in report.read_text().splitlines()]
    assert summary["images"] == total == len(again) and not summary["interrupted"]
    # every photo stored by the first run (and its copy) is skipped, not indexed again
    assert all(x["status"] == "skipped" for x in again if x["sha256"] in before)
    assert summary["skipped_already_indexed"] >= len(before)
    assert summary["failed_files"][0]["code"] == "InvalidImageFormatException"
    assert summary["unindexed_faces_by_reason"].get("NO_FACE", 0) >= 1  # the dogs
    face_ids, hashes, ok = _stored(data, "bulk")
    assert ok and len(face_ids) == len(set(face_ids)) == summary["faces_indexed"] + len(before)
    indexed = [x for x in lines + again if x["status"] == "indexed"]
    assert len({x["sha256"] for x in indexed}) == len(indexed) == len(hashes)
    copies = [x["status"] for x in lines + again
              if x["path"] in (str(first), str(photos / "copy-of-first.jpg"))]
    assert sorted(copies)[0] == "indexed" and copies.count("indexed") == 1
    by_path = {x["path"]: x for x in indexed}
    assert by_path.get(str(first), by_path.get(str(photos / "copy-of-first.jpg"), {})).get(
        "external_image_id") in (first.parent.name, photos.name)
