"""Finding the events that stand behind a review candidate: the IndexFaces event that added a
face, the key events that name a principal, the policy events of a collection, a principal's
own events on a candidate (scores revealed, a late conclusion refused). Events are found
by their hashed body (the query columns hold only some fields), so these scan with LIKE and
then check the parsed body.
"""

from __future__ import annotations

import json
from sqlalchemy import Connection, select

from ..shapes import Shape
from . import schema


def index_event(conn: Connection, cid: str, face_id: str) -> Shape | None:
    """The IndexFaces event that added `face_id` to `cid`: its seq and image SHA-256."""
    e = schema.events
    rows = conn.execute(
        select(e.c.seq, e.c.body).where(e.c.operation == "IndexFaces", e.c.collection == cid,
                                        e.c.outcome == "done",
                                        e.c.body.like(f"%{like_escape(face_id)}%", escape="\\"))
    ).all()
    for seq, text in rows:
        body = json.loads(text)
        if face_id in ((body.get("result") or {}).get("face_ids") or []):
            images = body.get("images") or [None]
            return {"seq": int(seq), "image_sha256": images[0]}
    return None


def key_event(conn: Connection, access_key_id: str) -> int | None:
    """The seq of the CreateAccessKey event that issued `access_key_id` (its name, roles)."""
    e = schema.events
    rows = conn.execute(
        select(e.c.seq, e.c.body).where(
            e.c.operation == "CreateAccessKey", e.c.outcome == "done",
            e.c.body.like(f"%{like_escape(access_key_id)}%", escape="\\"))
    ).all()
    for seq, text in rows:
        if (json.loads(text).get("result") or {}).get("access_key_id") == access_key_id:
            return int(seq)
    return None


def policy_events(conn: Connection, collection: str, before: int) -> list[int]:
    """The PutCollectionPolicy events of `collection` that were in force at or after event
    `before`: the last one before it (if any) and every later one."""
    e = schema.events
    seqs = [int(s) for (s,) in conn.execute(
        select(e.c.seq).where(e.c.operation == "PutCollectionPolicy", e.c.outcome == "done",
                              e.c.collection == collection).order_by(e.c.seq))]
    earlier = [s for s in seqs if s < before]
    return earlier[-1:] + [s for s in seqs if s >= before]


def own_event(conn: Connection, operation: str, candidate_id: str, principal: str, *,
              outcome: str = "done", rule: str | None = None) -> tuple[str, Shape] | None:
    """`principal`'s first `operation` event on `candidate_id` with this outcome (and refusal
    rule): its time and body, or None."""
    e = schema.events
    rows = conn.execute(
        select(e.c.time, e.c.body).where(
            e.c.operation == operation, e.c.principal == principal, e.c.outcome == outcome,
            e.c.body.like(f"%{like_escape(candidate_id)}%", escape="\\")).order_by(e.c.seq)
    ).all()
    for time, text in rows:
        body = json.loads(text)
        named = ((body.get("result") or {}).get("candidate_id")
                 or (body.get("params") or {}).get("candidate_id"))
        if named == candidate_id and (rule is None or body.get("rule") == rule):
            return str(time), body
    return None


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
