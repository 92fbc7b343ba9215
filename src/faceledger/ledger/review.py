"""The human review queue: identification-mode search results held as candidates.

Each reviewer answers one of three: CONFIRM (same person), REJECT (not the same person) or
INCONCLUSIVE (the pair does not allow a conclusion), always with a reason. A candidate is
CONFIRMED once `required` distinct reviewers confirmed it. By default the first answer that is
not a confirmation settles it, as REJECTED or INCONCLUSIVE (an identification stands only if
every reviewer says "same person"; an inconclusive is not an exclusion, so it is kept apart).
With the policy's VerifyEveryConclusion, every conclusion needs `required` reviewers: all N
agree (CONFIRMED, REJECTED or INCONCLUSIVE), and reviewers who disagree leave it INCONCLUSIVE.
The principal who ran the search may not review its results, and no reviewer decides twice.

Evidence: every decision carries the SHA-256 of the two photos the reviewer compared, and they
must equal the recorded ones (the probe's, from the search; the enrolled photo's, from its
IndexFaces). A photo the ledger never hashed cannot be shown to anyone, so such a candidate can
only be found INCONCLUSIVE. No image is kept: a candidate names the probe by its SHA-256 and the
face by its ids.

Conflicts: one probe face (one single-probe search) identified as two different people (two
CONFIRMED candidates whose identities differ) is a CONFLICT: none of them stands until a
reviewer resolves it (`resolve`), keeping the candidates that show the person and rejecting the
others, or keeping none.

Blind review: until a reviewer has decided, `blind` hides the other reviewers' decisions and
reasons (and the count of confirmations) from them (the service widens it to the whole search
and probe photo, service.governance.open_to); with the collection policy's
VerifierSeesEarlierDecisions, the reviewer who would give the last confirmation sees the
earlier conclusions (the V of ACE-V, as a declared, recorded stage).
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
from ..text import check_text
from . import schema
from .events import format_time
from .refusals import ReviewConflict, ReviewRefusal

PENDING, CONFIRMED, REJECTED, INCONCLUSIVE = "PENDING", "CONFIRMED", "REJECTED", "INCONCLUSIVE"
# two or more identities confirmed for one probe face: none stands until resolved
CONFLICT = "CONFLICT"
STATUSES = (PENDING, CONFIRMED, REJECTED, INCONCLUSIVE, CONFLICT)
CONFIRM, REJECT = "CONFIRM", "REJECT"
DECISIONS = (CONFIRM, REJECT, INCONCLUSIVE)
# the status N agreeing answers give (and, by default, what one non-confirmation settles)
OUTCOME = {CONFIRM: CONFIRMED, REJECT: REJECTED, INCONCLUSIVE: INCONCLUSIVE}
INDEPENDENT, VERIFICATION = "independent", "verification"
DOING = {PENDING: "decided", CONFLICT: "resolved"}
# searches of one probe face: their confirmed candidates must be one person (a stored video's
# face search holds the candidates of many people under one request, so it is not one of them)
SINGLE_PROBE = frozenset({"SearchFaces", "SearchFacesByImage", "SearchUsers",
                          "SearchUsersByImage"})
MAX_REASON = 2000
SHA256_HEX = frozenset("0123456789abcdef")


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
            "Time": row.time, "ProbeImageSha256": row.probe_sha256,
            "EnrolledImageSha256": row.enrolled_sha256, "Stage": row.stage or INDEPENDENT,
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
        "Resolution": json.loads(row.resolution) if row.resolution else None,
    }


def identity(cand: Shape) -> str:
    """Who a candidate says the probe is: its user, else its ExternalImageId, else its face
    (two faces with one ExternalImageId are one person; without either, a face is its own)."""
    if cand.get("UserId"):
        return f"user:{cand['UserId']}"
    if cand.get("ExternalImageId"):
        return f"external:{cand['ExternalImageId']}"
    return f"face:{cand.get('FaceId')}"


def _with_conflicts(conn: Connection, shaped: list[Shape]) -> list[Shape]:
    """Add ConflictsWith (the other candidates of the same probe in CONFLICT) to each."""
    c = schema.candidates
    requests = sorted({s["RequestId"] for s in shaped
                       if s["Status"] == CONFLICT and s["RequestId"]})
    found: dict[str, list[str]] = {}
    if requests:
        rows = conn.execute(select(c.c.id, c.c.request_id).where(
            c.c.request_id.in_(requests), c.c.status == CONFLICT).order_by(c.c.id)).all()
        for cid, request_id in rows:
            found.setdefault(request_id, []).append(cid)
    for s in shaped:
        s["ConflictsWith"] = [i for i in found.get(s["RequestId"], []) if i != s["CandidateId"]
                              ] if s["Status"] == CONFLICT else []
    return shaped


def get(conn: Connection, candidate_id: str) -> Shape:
    """One candidate with its reviews, or ResourceNotFoundException."""
    c = schema.candidates
    row = conn.execute(select(c).where(c.c.id == candidate_id)).first()
    if row is None:
        raise ResourceNotFoundException(f"Review candidate {candidate_id} does not exist.")
    return _with_conflicts(conn, [_shape(row, _reviews(conn, [candidate_id])[candidate_id])])[0]


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
    return _with_conflicts(conn, [_shape(r, reviews[r.id]) for r in rows])


@dataclass(frozen=True)
class Evidence:
    """The SHA-256 of the two photos a reviewer compared (lower-case hex), as submitted."""

    probe_sha256: str | None = None
    enrolled_sha256: str | None = None


def _hex(value: str | None) -> str | None:
    if value is None:
        return None
    v = value.strip().lower()
    return v if v else None


def check_evidence(decision: str, given: Evidence, probe: str | None,
                   enrolled: str | None) -> Evidence:
    """The evidence as recorded, or a refusal: every decision carries both hashes and each
    must equal the recorded one. A photo the ledger never hashed cannot be checked: then only
    INCONCLUSIVE is possible (without that photo's hash)."""
    shown = Evidence(_hex(given.probe_sha256), _hex(given.enrolled_sha256))
    for label, value, recorded in (("probe", shown.probe_sha256, probe),
                                   ("enrolled", shown.enrolled_sha256, enrolled)):
        if recorded is None:
            if decision == INCONCLUSIVE and value is None:
                continue
            raise ReviewRefusal(
                "evidence_unrecorded",
                f"The ledger recorded no SHA-256 for the {label} photo, so no file can be shown "
                "to be it; this candidate can only be found inconclusive (without that photo).")
        if value is None:
            raise ReviewRefusal(
                "evidence_required",
                f"A {decision} must name the {label} photo you compared by its SHA-256 "
                "(the console sends it once the file's hash matched the ledger's).")
        if len(value) != 64 or not set(value) <= SHA256_HEX:
            raise InvalidParameterException(f"The {label} photo's SHA-256 must be 64 hex digits.")
        if value != recorded.lower():
            raise ReviewRefusal(
                "evidence_mismatch",
                f"The {label} photo you compared (SHA-256 {value[:12]}…) is not the recorded "
                f"one ({recorded[:12]}…).")
    return shown


def settle(decisions: Sequence[str], required: int, verify_every: bool) -> str:
    """The status these decisions give. By default N confirmations confirm and the first
    other answer settles; with `verify_every`, N agreeing answers settle and any
    disagreement is INCONCLUSIVE (neither an identification nor an exclusion stands)."""
    kinds = set(decisions)
    if verify_every:
        if len(kinds) > 1:
            return INCONCLUSIVE
        return OUTCOME[decisions[0]] if decisions and len(decisions) >= required else PENDING
    for d in decisions:
        if d != CONFIRM:
            return OUTCOME[d]
    return CONFIRMED if len(decisions) >= required else PENDING


def has_decided(cand: Shape, reviewer: str) -> bool:
    return any(r["Reviewer"] == reviewer for r in cand["Reviews"])


def verification_stage(cand: Shape, verifier_sees_earlier: bool) -> bool:
    """Whether the next decision is the open final verification (policy, N > 1, and N - 1
    earlier decisions that agree: confirmations, or with VerifyEveryConclusion any one kind)."""
    decisions = {r["Decision"] for r in cand["Reviews"]}
    required = int(cand["ReviewersRequired"])
    return (verifier_sees_earlier and cand["Status"] == PENDING and required > 1
            and len(cand["Reviews"]) == required - 1 and len(decisions) == 1)


def blind(cand: Shape, viewer: str, *, may_decide: bool, verifier_sees_earlier: bool) -> Shape:
    """The candidate as `viewer` may see it: others' decisions, reasons and the count of
    confirmations are withheld while the viewer may still decide it (unless the policy opens
    the final verification). Adds MyDecision, DecisionsHidden and Stage."""
    out = dict(cand)
    mine = next((r for r in cand["Reviews"] if r["Reviewer"] == viewer), None)
    out["MyDecision"] = None if mine is None else mine["Decision"]
    stage = VERIFICATION if verification_stage(cand, verifier_sees_earlier) else INDEPENDENT
    out["Stage"] = stage
    open_ = (cand["Status"] != PENDING or mine is not None or not may_decide
             or stage == VERIFICATION)
    out["DecisionsHidden"] = not open_
    if not open_:
        out["Reviews"] = []
        out["Confirmations"] = None
    return out


def decide(conn: Connection, candidate_id: str, reviewer: str, decision: str, reason: str,
           now: datetime, *, evidence: Evidence = Evidence(),
           recorded: tuple[str | None, str | None] = (None, None),
           verifier_sees_earlier: bool = False, verify_every: bool = False,
           sees_decisions: bool = False) -> Shape:
    """Record one reviewer's decision and settle the candidate's status; return the candidate.

    `recorded` is (probe, enrolled) SHA-256 as the ledger has them; `evidence` what the reviewer
    compared (checked with `check_evidence`), checked before whether the candidate is still
    pending: a reviewer working blind gets the same answer for a settled candidate as for an
    open one until they have shown the photos, and a conclusion refused as late (not_pending)
    is one that met the evidence rule. `sees_decisions`: the reviewer can read the other
    reviewers' decisions elsewhere (the ledger), so may give only the first decision on the
    candidate's search and probe photo (blind review's scope: there is nothing to read yet)
    or the policy's open final verification. A confirmation that makes one probe face two
    people puts the candidates concerned in CONFLICT (the returned shape's ConflictsWith)."""
    reason = check_decision(decision, reason)
    c, r = schema.candidates, schema.reviews
    row = _locked(conn, candidate_id, reviewer)
    done = conn.execute(
        select(r.c.decision).where(r.c.candidate_id == candidate_id, r.c.reviewer == reviewer)
    ).first()
    if done is not None:
        raise ReviewConflict("duplicate_review",
                             f"{reviewer} has already reviewed candidate {candidate_id} "
                             f"({done[0]}); each reviewer decides once.")
    shown = check_evidence(decision, evidence, *recorded)
    _require_status(row, PENDING, "not_pending")
    before = get(conn, candidate_id)
    stage = VERIFICATION if verification_stage(before, verifier_sees_earlier) else INDEPENDENT
    others = decided_by_others(conn, before, reviewer) if sees_decisions else 0
    if others and stage != VERIFICATION:
        raise ReviewRefusal(
            "reviewer_reads_decisions",
            f"{reviewer} can read the ledger, where {others} decision(s) of other reviewers on "
            "this candidate, its search or its probe photo are recorded, so cannot decide it "
            "independently now: a reviewer-only key decides (a key that reads the ledger may "
            "give only the first decision on a search and its probe photo, or the open "
            "verification where the policy has one).")
    conn.execute(insert(r).values(candidate_id=candidate_id, reviewer=reviewer,
                                  decision=decision, reason=reason,
                                  time=format_time(now), probe_sha256=shown.probe_sha256,
                                  enrolled_sha256=shown.enrolled_sha256, stage=stage))
    decisions = [d for (d,) in conn.execute(
        select(r.c.decision).where(r.c.candidate_id == candidate_id).order_by(r.c.time))]
    status = settle(decisions, int(row.required), verify_every)
    if status == CONFIRMED and row.operation in SINGLE_PROBE and row.request_id:
        rivals = [other for other in query(conn, request_id=row.request_id, limit=4096)
                  if other["CandidateId"] != candidate_id
                  and other["Status"] in (CONFIRMED, CONFLICT)
                  and identity(other) != identity(before)]
        if rivals:
            status = CONFLICT
            conn.execute(update(c).where(c.c.id.in_([o["CandidateId"] for o in rivals]))
                         .values(status=CONFLICT))
    if status != PENDING:
        conn.execute(update(c).where(c.c.id == candidate_id).values(
            status=status, decided_at=format_time(now)))
    return get(conn, candidate_id)


def decided_by_others(conn: Connection, cand: Shape, reviewer: str) -> int:
    """The decisions other reviewers gave on `cand`, the other candidates of its search and
    those of other searches of its probe photo: what blind review keeps from a reviewer, and
    what a key that reads the ledger has read."""
    c, r = schema.candidates, schema.reviews
    scope = [c.c.id == cand["CandidateId"]]
    if cand["RequestId"]:
        scope.append(c.c.request_id == cand["RequestId"])
    if cand["ProbeImageSha256"]:
        scope.append(c.c.probe_sha256 == cand["ProbeImageSha256"])
    return int(conn.execute(
        select(func.count()).select_from(r.join(c, r.c.candidate_id == c.c.id))
        .where(or_(*scope), r.c.reviewer != reviewer)).scalar_one())


def check_decision(decision: str, reason: str) -> str:
    """The reason as stored, or InvalidParameterException: the decision must be one of
    DECISIONS, the reason as `check_reason` wants it."""
    if decision not in DECISIONS:
        raise InvalidParameterException(f"Decision must be one of {', '.join(DECISIONS)}.")
    return check_reason(reason)


def check_reason(reason: Any) -> str:
    """The reason as stored, or InvalidParameterException: 1 to MAX_REASON characters of text
    without control, bidirectional or invisible formatting characters (text.check_text; line
    breaks are kept)."""
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidParameterException(
            "Reason is required: say why you confirm, reject or find it inconclusive.")
    return check_text(reason, "Reason", max_chars=MAX_REASON, prose=True, lines=True)


def _locked(conn: Connection, candidate_id: str, who: str) -> Any:
    """The candidate's row, after taking its row lock (an update that changes nothing), so
    that two reviewers acting at once are settled one after another; refused if `who` ran
    its search."""
    c = schema.candidates
    request = conn.execute(select(c.c.request_id).where(c.c.id == candidate_id)).first()
    if request is None:
        raise ResourceNotFoundException(f"Review candidate {candidate_id} does not exist.")
    # Every candidate of the search at once (one statement, one order): two reviewers
    # confirming two candidates of one probe face at the same time must not both miss the
    # other's confirmation (PostgreSQL's READ COMMITTED locks rows, not the table).
    conn.execute(update(c).where(c.c.request_id == request[0] if request[0] else
                                 c.c.id == candidate_id).values(status=c.c.status))
    row = conn.execute(select(c).where(c.c.id == candidate_id)).one()
    if who == row.requested_by:
        raise ReviewRefusal("reviewer_not_independent",
                            f"{who} ran the search and cannot review its results.")
    return row


def _require_status(row: Any, status: str, rule: str) -> None:
    """Refused (ReviewConflict under `rule`) unless the candidate is in `status`."""
    if row.status != status:
        raise ReviewConflict(rule, f"Candidate {row.id} is already {row.status} (only a "
                                   f"{status} candidate can be {DOING[status]}).")


def resolve(conn: Connection, candidate_id: str, resolver: str, keep: Sequence[str],
            reason: str, now: datetime) -> dict[str, str]:
    """Resolve the conflict `candidate_id` is in: the candidates in `keep` stand (CONFIRMED:
    they show the one person the probe is, e.g. one person enrolled under two ids), the others
    of the conflict are REJECTED; keeping none leaves them all INCONCLUSIVE (neither stands,
    none is excluded). Returns each candidate's new status."""
    reason = check_reason(reason)
    row = _locked(conn, candidate_id, resolver)
    _require_status(row, CONFLICT, "not_in_conflict")
    c = schema.candidates
    group = [i for (i,) in conn.execute(select(c.c.id).where(
        c.c.request_id == row.request_id, c.c.status == CONFLICT).order_by(c.c.id))]
    stray = [k for k in keep if k not in group]
    if stray:
        raise InvalidParameterException(
            f"Candidate {stray[0]} is not one of this conflict's candidates "
            f"({', '.join(group)}).")
    statuses = {i: (CONFIRMED if i in keep else REJECTED if keep else INCONCLUSIVE)
                for i in group}
    note = json.dumps({"By": resolver, "Reason": reason, "Kept": sorted(keep),
                       "Time": format_time(now)}, sort_keys=True)
    for cid, status in statuses.items():
        conn.execute(update(c).where(c.c.id == cid).values(
            status=status, decided_at=format_time(now), resolution=note))
    return statuses
