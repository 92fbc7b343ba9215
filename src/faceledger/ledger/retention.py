"""Retention: when each indexed face's clock started, renewals, and the sweep that expires faces.

The ledger keeps its own record of when a face was indexed (or last renewed), fed by the audit
hook from IndexFaces/DeleteFaces/DeleteCollection events in the same transaction, so retention
does not depend on what the face store chooses to remember. Deleting the faces themselves is the
face store's job, reached through the small `FaceRemover` protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Connection, and_, delete, insert, or_, select, update

from . import schema
from .events import format_time


class FaceRemover(Protocol):
    """Deletes faces from a collection (catalog and vector index) inside the caller's transaction."""

    def remove_faces(self, conn: Connection, collection_id: str,
                     face_ids: Sequence[str]) -> Sequence[str]:
        """Delete these faces; return the ids that existed and were deleted."""
        ...


def track(conn: Connection, collection: str, face_ids: Sequence[str], now: datetime) -> None:
    """Start (or restart) the retention clock of these faces."""
    r = schema.retention
    since = format_time(now)
    for face_id in face_ids:
        done = conn.execute(
            update(r).where(r.c.collection == collection, r.c.face_id == face_id).values(
                since=since
            )
        )
        if done.rowcount == 0:
            conn.execute(insert(r).values(collection=collection, face_id=face_id, since=since))


def renew(conn: Connection, collection: str, face_ids: Sequence[str], now: datetime) -> list[str]:
    """Restart the clock of the tracked faces among `face_ids`; return those renewed."""
    r = schema.retention
    renewed: list[str] = []
    for face_id in face_ids:
        done = conn.execute(
            update(r).where(r.c.collection == collection, r.c.face_id == face_id).values(
                since=format_time(now)
            )
        )
        if done.rowcount:
            renewed.append(face_id)
    return renewed


def forget(conn: Connection, collection: str, face_ids: Sequence[str] | None = None) -> None:
    """Stop tracking these faces (all of the collection's when `face_ids` is None)."""
    r = schema.retention
    q = delete(r).where(r.c.collection == collection)
    if face_ids is not None:
        if not face_ids:
            return
        q = q.where(r.c.face_id.in_(list(face_ids)))
    conn.execute(q)


def expired(conn: Connection, collection: str, days: int, now: datetime, *,
            after: tuple[str, str] | None = None, limit: int = 1000) -> list[tuple[str, str]]:
    """(since, face_id) of faces whose clock started more than `days` days before `now`,
    oldest first, after the (since, face_id) position `after`."""
    r = schema.retention
    cutoff = format_time(now - timedelta(days=days))
    q = select(r.c.since, r.c.face_id).where(r.c.collection == collection, r.c.since < cutoff)
    if after is not None:
        q = q.where(or_(r.c.since > after[0], and_(r.c.since == after[0],
                                                   r.c.face_id > after[1])))
    rows = conn.execute(q.order_by(r.c.since, r.c.face_id).limit(limit)).all()
    return [(str(row[0]), str(row[1])) for row in rows]


def tracked_since(conn: Connection, collection: str, face_id: str) -> str | None:
    """When this face's retention clock started, if it is tracked."""
    r = schema.retention
    row = conn.execute(
        select(r.c.since).where(r.c.collection == collection, r.c.face_id == face_id)
    ).first()
    return None if row is None else str(row[0])
