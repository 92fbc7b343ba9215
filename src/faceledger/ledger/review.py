"""The human review queue: identification-mode search results held as candidates.

A candidate is CONFIRMED once `required` distinct reviewers confirmed it, and REJECTED as soon
as one reviewer rejects it (an identification stands only if every reviewer agrees). The
principal who ran the search may not review its results, and no reviewer decides twice. No image
is kept: a candidate names the probe by its SHA-256 and the face by its ids, and the reviewer
compares the case file's probe photo with the enrolled photo of that face.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, update

from ..errors import InvalidParameterException, ResourceNotFoundException
from ..shapes import Shape
from . import schema
from .events import format_time
from .refusals import ReviewConflict, ReviewRefusal

PENDING, CONFIRMED, REJECTED = "PENDING", "CONFIRMED", "REJECTED"
STATUSES = (PENDING, CONFIRMED, REJECTED)
CONFIRM, REJECT = "CONFIRM", "REJECT"
DECISIONS = (CONFIRM, REJECT)
MAX_REASON = 2000


@dataclass(frozen=True)
class Match:
    """One search result to hold for review."""

    similarity: float
    face_id: str | None = None
    user_id: str | None = None
    external_image_id: str | None = None
    false_match_rate: float | None = None


def hold(conn: Connection, matches: Sequence[Match], *, operation: str, collection: str,
         request_id: str | None, requested_by: str, purpose: str | None, case: str | None,
         probe_sha256: str | None, required: int, now: datetime,
         probe_face: Shape | None = None) -> list[str]:
    """Store `matches` as PENDING candidates; return their ids."""
    ids: list[str] = []
    for m in matches:
        cid = str(uuid.uuid4())
        conn.execute(insert(schema.candidates).values(
            id=cid, request_id=request_id, operation=operation, collection=collection,
            face_id=m.face_id, user_id=m.user_id, external_image_id=m.external_image_id,
            similarity=float(m.similarity), false_match_rate=m.false_match_rate,
            probe_sha256=probe_sha256,
            probe_face=None if probe_face is None else json.dumps(probe_face),
            requested_by=requested_by, purpose=purpose,
            case_ref=case, required=required, status=PENDING, created_at=format_time(now),
        ))
        ids.append(cid)
    return ids


def _reviews(conn: Connection, candidate_ids: Sequence[str]) -> dict[str, list[Shape]]:
    r = schema.reviews
    found: dict[str, list[Shape]] = {c: [] for c in candidate_ids}
    if not candidate_ids:
        return found
    rows = conn.execute(
        select(r).where(r.c.candidate_id.in_(list(candidate_ids))).order_by(r.c.time)
    ).all()
    for row in rows:
        found[row.candidate_id].append({
            "Reviewer": row.reviewer, "Decision": row.decision, "Reason": row.reason,
            "Time": row.time,
        })
    return found


def _shape(row: Any, reviews: list[Shape]) -> Shape:
    return {
        "CandidateId": row.id,
        "Status": row.status,
        "Operation": row.operation,
        "CollectionId": row.collection,
        "FaceId": row.face_id,
        "UserId": row.user_id,
        "ExternalImageId": row.external_image_id,
        "Similarity": row.similarity,
        "FalseMatchRate": row.false_match_rate,
        "ProbeImageSha256": row.probe_sha256,
        "ProbeFace": json.loads(row.probe_face) if row.probe_face else None,
        "RequestId": row.request_id,
        "RequestedBy": row.requested_by,
        "Purpose": row.purpose,
        "CaseReference": row.case_ref,
        "ReviewersRequired": row.required,
        "Confirmations": sum(1 for r in reviews if r["Decision"] == CONFIRM),
        "Reviews": reviews,
        "CreatedAt": row.created_at,
        "DecidedAt": row.decided_at,
    }


def get(conn: Connection, candidate_id: str) -> Shape:
    """One candidate with its reviews, or ResourceNotFoundException."""
    c = schema.candidates
    row = conn.execute(select(c).where(c.c.id == candidate_id)).first()
    if row is None:
        raise ResourceNotFoundException(f"Review candidate {candidate_id} does not exist.")
    return _shape(row, _reviews(conn, [candidate_id])[candidate_id])


def query(conn: Connection, *, collection: str | None = None, status: str | None = None,
          request_id: str | None = None, case: str | None = None,
          after: tuple[str, str] | None = None, limit: int = 100) -> list[Shape]:
    """Candidates matching the filters, oldest first, at most `limit`, after (created, id)."""
    c = schema.candidates
    q = select(c)
    if collection is not None:
        q = q.where(c.c.collection == collection)
    if status is not None:
        q = q.where(c.c.status == status)
    if request_id is not None:
        q = q.where(c.c.request_id == request_id)
    if case is not None:
        q = q.where(c.c.case_ref == case)
    if after is not None:
        t, i = after
        q = q.where(or_(c.c.created_at > t, and_(c.c.created_at == t, c.c.id > i)))
    rows = conn.execute(q.order_by(c.c.created_at, c.c.id).limit(limit)).all()
    reviews = _reviews(conn, [r.id for r in rows])
    return [_shape(r, reviews[r.id]) for r in rows]


def decide(conn: Connection, candidate_id: str, reviewer: str, decision: str, reason: str,
           now: datetime) -> Shape:
    """Record one reviewer's decision and settle the candidate's status; return the candidate."""
    if decision not in DECISIONS:
        raise InvalidParameterException(f"Decision must be one of {', '.join(DECISIONS)}.")
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidParameterException("Reason is required: say why you confirm or reject.")
    if len(reason) > MAX_REASON:
        raise InvalidParameterException(f"Reason must be at most {MAX_REASON} characters.")
    c, r = schema.candidates, schema.reviews
    # Lock the candidate first, so two reviewers deciding at once are settled one after another.
    locked = conn.execute(update(c).where(c.c.id == candidate_id).values(status=c.c.status))
    if locked.rowcount == 0:
        raise ResourceNotFoundException(f"Review candidate {candidate_id} does not exist.")
    row = conn.execute(select(c).where(c.c.id == candidate_id)).one()
    if row.status != PENDING:
        raise ReviewConflict("not_pending",
                             f"Candidate {candidate_id} is already {row.status}.")
    if reviewer == row.requested_by:
        raise ReviewRefusal("reviewer_not_independent",
                            f"{reviewer} ran the search and cannot review its results.")
    done = conn.execute(
        select(r.c.decision).where(r.c.candidate_id == candidate_id, r.c.reviewer == reviewer)
    ).first()
    if done is not None:
        raise ReviewConflict("duplicate_review",
                             f"{reviewer} has already reviewed candidate {candidate_id} "
                             f"({done[0]}); each reviewer decides once.")
    conn.execute(insert(r).values(candidate_id=candidate_id, reviewer=reviewer,
                                  decision=decision, reason=reason.strip(),
                                  time=format_time(now)))
    confirmations = int(conn.execute(
        select(func.count()).select_from(r).where(r.c.candidate_id == candidate_id,
                                                  r.c.decision == CONFIRM)
    ).scalar_one())
    status = REJECTED if decision == REJECT else (
        CONFIRMED if confirmations >= int(row.required) else PENDING
    )
    if status != PENDING:
        conn.execute(update(c).where(c.c.id == candidate_id).values(
            status=status, decided_at=format_time(now)))
    return get(conn, candidate_id)
