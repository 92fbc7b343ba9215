"""Bulk enrolment sources and the analysed-image path behind `--ray`: s3://BUCKET/PREFIX of
configured buckets (local directories and a real S3-protocol server, moto's), refusals of
other buckets, the per-image worker function and IndexFaces with an image analysed elsewhere
(same faces, same event; another model's analysis refused)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from pydantic import SecretStr

from faceledger.bulk import (
    ImageFile,
    _Seen,
    analyse_item,
    find_sources,
    is_known,
    known_digests,
    parse_s3,
    write_analysis,
)
from faceledger import cluster
from faceledger.cluster import ClusterError
from faceledger.errors import InvalidParameterException, InvalidS3ObjectException
from faceledger.imaging import sha256_hex
from faceledger.server.storage import build_resolver
from faceledger.service import FaceService
from faceledger.settings import Settings


def test_sources_from_folders_and_configured_buckets(tmp_path: Path, moto_endpoint: str,
                                                     astronaut_jpeg: bytes) -> None:
    local = tmp_path / "bucket"
    (local / "people" / "Ann").mkdir(parents=True)
    (local / "people" / "Ann" / "a.jpg").write_bytes(astronaut_jpeg)
    (local / "people" / "Ann" / "notes.txt").write_text("x")
    (local / "peoplex.jpg").write_bytes(astronaut_jpeg)  # matches the key prefix "people"
    (local / "other.jpg").write_bytes(astronaut_jpeg)
    s3 = boto3.session.Session().client(
        "s3", endpoint_url=moto_endpoint, region_name="us-east-1", aws_access_key_id="moto",
        aws_secret_access_key="moto", config=Config(s3={"addressing_style": "path"}))
    s3.create_bucket(Bucket="photos")
    for key in ("2024/Bo/b1.jpg", "2024/Bo/b2.PNG", "2024/readme.md", "2025/c.jpg"):
        s3.put_object(Bucket="photos", Key=key, Body=astronaut_jpeg)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "d.jpg").write_bytes(astronaut_jpeg)
    settings = Settings(data_dir=tmp_path / "data", local_buckets={"local": local},
                        s3_buckets=["photos"], s3_endpoint_url=moto_endpoint,
                        s3_access_key_id="moto", s3_secret_access_key=SecretStr("moto"))
    resolver = build_resolver(settings)

    found = find_sources(["s3://local/people", "s3://photos/2024/", str(folder)], resolver,
                         "parent")
    assert [(f.location, f.external_image_id) for f in found] == [
        ("s3://local/people/Ann/a.jpg", "Ann"),
        ("s3://local/peoplex.jpg", "peoplex"),  # no folder: its own name
        ("s3://photos/2024/Bo/b1.jpg", "Bo"),
        ("s3://photos/2024/Bo/b2.PNG", "Bo"),
        (str(folder / "d.jpg"), "folder"),
    ]
    assert all(f.read(resolver) == astronaut_jpeg for f in found)
    assert parse_s3("s3://photos") == ("photos", "")
    with pytest.raises(InvalidParameterException):
        parse_s3("s3:///x")
    # a bucket that is not configured, a prefix that climbs out: refused, nothing listed
    with pytest.raises(InvalidS3ObjectException, match="not configured"):
        find_sources(["s3://elsewhere/x"], resolver)
    with pytest.raises(InvalidS3ObjectException):
        find_sources(["s3://local/../etc"], resolver)
    assert find_sources(["s3://local/nothing-here/"], resolver) == []


def test_known_digests_are_found_exactly() -> None:
    hashes = [sha256_hex(bytes([i])) for i in range(50)]
    known = known_digests(hashes[:25])
    assert all(is_known(known, h) for h in hashes[:25])
    assert not any(is_known(known, h) for h in hashes[25:])
    assert not is_known(known_digests([]), hashes[0])


def test_an_analysed_image_is_indexed_as_a_request_would_be(
        service: FaceService, tmp_path: Path, astronaut_jpeg: bytes) -> None:
    svc = FaceService(Settings(data_dir=tmp_path), pipeline=service.pipeline)
    svc.create_collection(collection_id="a")
    svc.create_collection(collection_id="b")
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg)
    item = ImageFile(photo, "astronaut")
    a = analyse_item(svc, item, lambda sha: False)
    assert a.error is None and a.image is not None and a.sha256 == sha256_hex(astronaut_jpeg)
    seen = _Seen(set())
    via_worker = write_analysis(svc, "a", item, a, seen, None, None, svc_ctx())
    direct = svc.index_faces(collection_id="b", image={"Bytes": astronaut_jpeg},
                             external_image_id="astronaut")
    assert via_worker.status == "indexed" and len(via_worker.face_ids) == 1
    got = svc.list_faces(collection_id="a")["Faces"][0]
    want = svc.list_faces(collection_id="b")["Faces"][0]
    strip = ("FaceId", "ImageId")
    assert {k: v for k, v in got.items() if k not in strip} == {
        k: v for k, v in want.items() if k not in strip}
    # the same digest again: skipped, not stored twice
    assert write_analysis(svc, "a", item, a, seen, None, None, svc_ctx()).status == "skipped"
    # known before the run: the worker does not even decode it
    assert analyse_item(svc, item, lambda sha: True).known
    # an analysis made with another model is refused, not stored
    other = dataclasses.replace(a.image, model_version="another-model")
    with pytest.raises(InvalidParameterException, match="another-model"):
        svc.index_faces(collection_id="a", analysed=other)
    assert svc.describe_collection(collection_id="a")["FaceCount"] == 1
    # a file that cannot be read or decoded: a failed outcome with its code, no exception
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    out = write_analysis(svc, "a", ImageFile(bad, "bad"),
                         analyse_item(svc, ImageFile(bad, "bad"), lambda sha: False), seen,
                         None, None, svc_ctx())
    assert out.status == "failed" and out.error == "InvalidImageFormatException"
    gone = analyse_item(svc, ImageFile(tmp_path / "missing.jpg", "m"), lambda sha: False)
    assert gone.error == "FileNotFoundError"
    svc.close()


def svc_ctx() -> Any:
    from faceledger.context import LOCAL

    return LOCAL


def test_a_ray_session_keeps_stdout_for_the_commands_data(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Ray's driver prints cluster events ("The node ... has been marked dead") to sys.stdout;
    during a session they go to stderr, and `--json` output on stdout stays parseable."""
    monkeypatch.setattr(cluster, "connect", lambda address: print(f"(raylet) joined {address}"))
    monkeypatch.setattr(cluster, "disconnect", lambda: print("(raylet) shutting down"))
    with cluster.session("auto") as stdout:
        print("(raylet) The node with node id 7f3a has been marked dead")
        stdout.write('{"images": 1}\n')
    print("after the session")
    captured = capsys.readouterr()
    assert captured.out == '{"images": 1}\nafter the session\n'
    assert "joined auto" in captured.err and "marked dead" in captured.err
    assert "shutting down" in captured.err

    def unreachable(address: str) -> None:
        raise ClusterError(f"No Ray cluster at {address!r}")

    monkeypatch.setattr(cluster, "connect", unreachable)
    with pytest.raises(ClusterError), cluster.session("10.0.0.9:6379"):
        pass  # pragma: no cover - connect fails
    print("still stdout")
    assert capsys.readouterr().out == "still stdout\n"
