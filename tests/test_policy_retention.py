"""Retention: faces expire RetentionDays after indexing unless renewed; the sweep deletes them
through the face store and logs each expiry.

`TableFaces` stands in for the face store with a real table in the same database and the same
`remove_faces(conn, collection, ids)` signature, so the sweep's rules are tested in isolation
while the deletion and its ledger event still share one real transaction; the sweep removing a
real indexed face from catalog and index is in tests/test_ledger_collections.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection

from faceledger.context import RequestContext
from faceledger.errors import InvalidParameterException
from faceledger.ledger.events import utc_now
from faceledger.service import FaceService
from faceledger.settings import Settings

ADMIN = RequestContext(principal="admin", admin=True)
CLERK = RequestContext(principal="clerk", consent="consent-77")


class TableFaces:
    """Stand-in face store: one SQL table of (collection, face_id)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.table = sa.Table("stand_in_faces", sa.MetaData(), sa.Column("collection", sa.String),
                              sa.Column("face_id", sa.String))
        self.table.create(engine)
        self.fail = False

    def add(self, conn: Connection, collection: str, ids: Sequence[str]) -> None:
        for i in ids:
            conn.execute(self.table.insert().values(collection=collection, face_id=i))

    def remove_faces(self, conn: Connection, collection_id: str,
                     face_ids: Sequence[str]) -> Sequence[str]:
        t = self.table
        found = [r[0] for r in conn.execute(sa.select(t.c.face_id).where(
            t.c.collection == collection_id, t.c.face_id.in_(list(face_ids))))]
        conn.execute(t.delete().where(t.c.collection == collection_id,
                                      t.c.face_id.in_(list(face_ids))))
        if self.fail:
            raise RuntimeError("the face store failed mid-deletion")
        return found

    def ids(self, engine: sa.Engine) -> set[str]:
        with engine.connect() as conn:
            return {r[0] for r in conn.execute(sa.select(self.table.c.face_id))}


@pytest.fixture
def svc(tmp_path: Path) -> FaceService:
    return FaceService(Settings(data_dir=tmp_path))


def _index(svc: FaceService, faces: TableFaces, collection: str, ids: list[str]) -> None:
    with svc.audit("IndexFaces", CLERK, collection=collection) as op:
        faces.add(op.conn, collection, ids)
        op.indexed(ids)


def _events(svc: FaceService, operation: str) -> list[dict[str, Any]]:
    return [b for b in (json.loads(e.body) for e in svc.ledger.scan())
            if b["operation"] == operation]


def _age(svc: FaceService, collection: str, face_id: str, days: float) -> None:
    """Move a face's retention clock `days` into the past (time passing, without waiting)."""
    from faceledger.ledger import schema
    from faceledger.ledger.events import format_time

    r = schema.retention
    with svc.ledger.engine.begin() as conn:
        conn.execute(r.update().where(r.c.collection == collection, r.c.face_id == face_id)
                     .values(since=format_time(utc_now() - timedelta(days=days))))


def test_sweep_expires_only_faces_past_retention_and_logs_it(svc: FaceService) -> None:
    faces = TableFaces(svc.ledger.engine)
    svc.put_collection_policy("short", {"RetentionDays": 30}, ctx=ADMIN)
    _index(svc, faces, "short", ["s1", "s2", "s3"])
    _index(svc, faces, "forever", ["f1"])  # no retention policy
    _age(svc, "forever", "f1", 400)
    for face_id, days in (("s1", 31), ("s2", 31), ("s3", 29)):
        _age(svc, "short", face_id, days)
    renewed = svc.renew_faces("short", ["s2", "unknown"], ctx=CLERK)
    assert renewed == {"RenewedFaces": ["s2"], "UnknownFaces": ["unknown"]}
    out = svc.sweep_retention(remover=faces)
    assert out["ExpiredFaces"] == {"short": ["s1"]}
    assert faces.ids(svc.ledger.engine) == {"s2", "s3", "f1"}
    # Two days later s3 is past 30 days too; s2's renewal restarted its clock.
    later = svc.sweep_retention(now=utc_now() + timedelta(days=2), remover=faces)
    assert later["ExpiredFaces"] == {"short": ["s3"]}
    expiries = [e for e in _events(svc, "ExpireFaces") if e["result"]["expired"]]
    assert [e["result"]["face_ids"] for e in expiries] == [["s1"], ["s3"]]
    assert expiries[0]["params"]["retention_days"] == 30
    (renewal,) = _events(svc, "RenewFaces")
    assert renewal["result"] == {"face_ids": ["s2"], "unknown_face_ids": ["unknown"]}
    assert svc.verify_ledger()["ok"]


def test_faces_the_store_keeps_stay_due_and_the_sweep_ends(svc: FaceService) -> None:
    faces = TableFaces(svc.ledger.engine)
    svc.put_collection_policy("short", {"RetentionDays": 1}, ctx=ADMIN)
    _index(svc, faces, "short", ["s1", "s2"])
    with svc.ledger.engine.begin() as conn:  # s2 vanished from the store behind our back
        conn.execute(faces.table.delete().where(faces.table.c.face_id == "s2"))
    out = svc.sweep_retention(now=utc_now() + timedelta(days=2), remover=faces)
    assert out["ExpiredFaces"] == {"short": ["s1"]}
    last = [e for e in _events(svc, "ExpireFaces") if e["result"]["expired"]][-1]
    assert last["result"]["not_removed"] == ["s2"]


def test_a_failed_deletion_rolls_back_with_its_event(svc: FaceService) -> None:
    faces = TableFaces(svc.ledger.engine)
    svc.put_collection_policy("short", {"RetentionDays": 1}, ctx=ADMIN)
    _index(svc, faces, "short", ["s1"])
    before = svc.ledger.head().seq
    faces.fail = True
    with pytest.raises(RuntimeError):
        svc.sweep_retention(now=utc_now() + timedelta(days=2), remover=faces)
    assert svc.ledger.head().seq == before  # no event for the rolled-back deletion
    assert faces.ids(svc.ledger.engine) == {"s1"}  # and no deletion without its event
    faces.fail = False
    out = svc.sweep_retention(now=utc_now() + timedelta(days=2), remover=faces)
    assert out["ExpiredFaces"] == {"short": ["s1"]}


def test_deleted_faces_stop_their_clock(svc: FaceService) -> None:
    faces = TableFaces(svc.ledger.engine)
    svc.put_collection_policy("short", {"RetentionDays": 1}, ctx=ADMIN)
    _index(svc, faces, "short", ["s1", "s2"])
    with svc.audit("DeleteFaces", CLERK, collection="short") as op:
        op.deleted(faces.remove_faces(op.conn, "short", ["s1"]))
    out = svc.sweep_retention(now=utc_now() + timedelta(days=2), remover=faces)
    assert out["ExpiredFaces"] == {"short": ["s2"]}
    (deleted,) = _events(svc, "DeleteFaces")
    assert deleted["result"]["face_ids"] == ["s1"]


def test_sweep_without_a_face_store_and_bad_renewals_are_refused(svc: FaceService) -> None:
    from faceledger.service.governance import GovernanceOperations

    class GovernanceOnly(GovernanceOperations):
        """A service without the collections mixin: nothing can delete faces."""

    bare = GovernanceOnly(Settings(data_dir=svc.settings.data_dir))
    with pytest.raises(InvalidParameterException, match="No face store"):
        bare.sweep_retention()
    assert svc.face_remover() is not None  # FaceService's collections mixin provides it
    for bad in ([], "s1", [""], [5], ["x"] * 5000):
        with pytest.raises(InvalidParameterException):
            svc.renew_faces("short", bad)  # type: ignore[arg-type]
