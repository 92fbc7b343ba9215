"""Congruence: the same operations on real faces through the embedded store (SQLite + in-process
index) and the server store (a real PostgreSQL 18 + pgvector server) give the same answers and
raise the same exceptions. Face ids are random, so answers are compared by ExternalImageId."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from faceledger.errors import (
    ConflictException,
    InvalidPaginationTokenException,
    InvalidParameterException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
)
from faceledger.service import FaceService
from faceledger.settings import Settings

PEOPLE = {
    "Hans_Blix": ["0002", "0003", "0006", "0014"],
    "Amelie_Mauresmo": None,
    "Tom_Ridge": None,
    "Tiger_Woods": None,
}
ENGINES = ("embedded", "pgvector")


@pytest.fixture
def services(service: FaceService, tmp_path: Path, request: pytest.FixtureRequest
             ) -> Iterator[dict[str, FaceService]]:
    """One service per engine, sharing the session's loaded models."""
    out = {
        "embedded": FaceService(Settings(data_dir=tmp_path / "embedded",
                                         index_exact_below=1),  # HNSW, not the exact path
                                pipeline=service.pipeline),
        "pgvector": FaceService(Settings(data_dir=tmp_path / "pg",
                                         database_url=request.getfixturevalue("postgres_url"),
                                         vector_index="pgvector"),
                                pipeline=service.pipeline),
    }
    yield out
    for svc in out.values():
        svc.close()
        svc.engine.dispose()


def images(faces_dir: Path) -> list[tuple[str, bytes]]:
    out = []
    for person, numbers in PEOPLE.items():
        files = sorted((faces_dir / "lfw" / person).glob("*.jpg"))
        for f in files if numbers is None else [f for f in files if f.stem[-4:] in numbers]:
            out.append((f.stem, f.read_bytes()))
    return out


def matches(r: dict[str, Any]) -> list[tuple[str, float]]:
    return [(m["Face"]["ExternalImageId"], round(m["Similarity"], 9)) for m in r["FaceMatches"]]


def info(r: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(r[k] for k in ("FaceMatchThreshold", "FalseMatchRate", "FacesSearched",
                                "ExpectedFalseMatches"))


def scenario(svc: FaceService, photos: list[tuple[str, bytes]]) -> list[Any]:
    """Everything a client might do, recorded as engine-independent answers."""
    log: list[Any] = []
    svc.create_collection(collection_id="cg")
    ids: dict[str, str] = {}
    for name, data in photos:
        r = svc.index_faces(collection_id="cg", image={"Bytes": data}, external_image_id=name,
                            max_faces=1, quality_filter="NONE")
        for rec in r["FaceRecords"]:
            ids[rec["Face"]["ExternalImageId"]] = rec["Face"]["FaceId"]
        log.append(("index", name, len(r["FaceRecords"]),
                    [u["Reasons"] for u in r["UnindexedFaces"]]))
    log.append(("describe", svc.describe_collection(collection_id="cg")["FaceCount"]))
    for name in sorted(ids):
        for threshold in (None, 0.0, 99.0):
            r = svc.search_faces(collection_id="cg", face_id=ids[name],
                                 face_match_threshold=threshold, max_faces=5)
            log.append(("search", name, threshold, matches(r), info(r)))
    probe = photos[0][1]
    r = svc.search_faces_by_image(collection_id="cg", image={"Bytes": probe}, max_faces=3)
    log.append(("by_image", matches(r), info(r), r["SearchedFaceBoundingBox"]))
    # users
    blix = sorted(n for n in ids if n.startswith("Hans_Blix"))
    svc.create_user(collection_id="cg", user_id="blix")
    r = svc.associate_faces(collection_id="cg", user_id="blix",
                            face_ids=[ids[n] for n in blix[:2]] + [ids[min(ids)]])
    log.append(("associate", len(r["AssociatedFaces"]),
                sorted(u["Reasons"][0] for u in r["UnsuccessfulFaceAssociations"])))
    r = svc.search_users(collection_id="cg", face_id=ids[blix[2]])
    log.append(("search_users", [(m["User"]["UserId"], round(m["Similarity"], 9))
                                 for m in r["UserMatches"]], r["FacesSearched"]))
    r = svc.search_users_by_image(collection_id="cg", image={"Bytes": probe})
    log.append(("users_by_image", [m["User"]["UserId"] for m in r["UserMatches"]]))
    # deletion
    gone = [ids[blix[3]], ids[max(ids)]]
    r = svc.delete_faces(collection_id="cg", face_ids=gone)
    log.append(("delete", len(r["DeletedFaces"])))
    r = svc.search_faces(collection_id="cg", face_id=ids[blix[2]], face_match_threshold=0,
                         max_faces=100)
    log.append(("after_delete", matches(r), info(r)))
    pages = []
    token = None
    while True:
        page = svc.list_faces(collection_id="cg", max_results=4, next_token=token)
        pages.append(sorted(f["ExternalImageId"] for f in page["Faces"]))
        token = page.get("NextToken")
        if token is None:
            break
    log.append(("pages", pages))
    svc.delete_collection(collection_id="cg")
    log.append(("collections", svc.list_collections()["CollectionIds"]))
    return log


def test_both_engines_give_identical_answers(services: dict[str, FaceService],
                                             faces_dir: Path) -> None:
    photos = images(faces_dir)
    logs = {name: scenario(svc, photos) for name, svc in services.items()}
    emb, pg = logs["embedded"], logs["pgvector"]
    assert len(emb) == len(pg)
    for a, b in zip(emb, pg):
        assert a == b
    # and the answers are the real ones: Blix finds Blix
    searches = [e for e in emb if e[0] == "search" and e[1].startswith("Hans_Blix")
                and e[2] is None]
    assert all(m and all(n.startswith("Hans_Blix") for n, _ in m) for *_, m, _ in searches)


def errors_of(svc: FaceService) -> list[str]:
    """The exception class each bad call raises."""
    svc.create_collection(collection_id="e")
    fid = "11111111-2222-3333-4444-555555555555"
    calls: list[Callable[[], Any]] = [
        lambda: svc.create_collection(collection_id="e"),
        lambda: svc.describe_collection(collection_id="missing"),
        lambda: svc.search_faces(collection_id="e", face_id=fid),
        lambda: svc.search_faces(collection_id="e", face_id="bad"),
        lambda: svc.list_faces(collection_id="e", next_token="bad"),
        lambda: svc.delete_faces(collection_id="missing", face_ids=[fid]),
        lambda: svc.create_user(collection_id="e", user_id="u"),
        lambda: svc.create_user(collection_id="e", user_id="u"),
        lambda: svc.search_users(collection_id="e", user_id="ghost"),
        lambda: svc.delete_collection(collection_id="e"),
        lambda: svc.delete_collection(collection_id="e"),
    ]
    out = []
    for call in calls:
        try:
            call()
            out.append("ok")
        except (ResourceAlreadyExistsException, ResourceNotFoundException,
                InvalidParameterException, InvalidPaginationTokenException,
                ConflictException) as exc:
            out.append(type(exc).__name__)
    return out


def test_both_engines_raise_the_same_exceptions(services: dict[str, FaceService]) -> None:
    got = {name: errors_of(svc) for name, svc in services.items()}
    assert got["embedded"] == got["pgvector"] == [
        "ResourceAlreadyExistsException", "ResourceNotFoundException",
        "InvalidParameterException", "InvalidParameterException",
        "InvalidPaginationTokenException", "ResourceNotFoundException", "ok",
        "ConflictException", "ResourceNotFoundException", "ok", "ResourceNotFoundException",
    ]


def test_pgvector_needs_the_catalog_on_postgresql(tmp_path: Path, service: FaceService) -> None:
    svc = FaceService(Settings(data_dir=tmp_path, vector_index="pgvector"),
                      pipeline=service.pipeline)
    with pytest.raises(ValueError, match="PostgreSQL"):
        svc.list_collections()
    svc.engine.dispose()
