"""Governance operations (faceledger extensions, not Rekognition operations): collection
policies, the human review queue, retention renewals and sweeps, ledger anchors and
verification, transparency reports and per-case exports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from ..context import LOCAL, RequestContext
from ..errors import (
    InvalidPaginationTokenException,
    InvalidParameterException,
    ResourceNotFoundException,
)
from ..ledger import Anchor, CollectionPolicy, FaceRemover, retention, review, verify
from ..ledger import export as case_export
from ..ledger.events import format_time, parse_time, utc_now
from ..ledger.lookup import index_event, own_event
from ..ledger.policy import check_collection_id, load_policy, policies_with_retention, store_policy
from ..ledger import comparison
from ..ledger.refusals import (
    AdminRequired,
    MalformedRequest,
    ReviewConflict,
    ReviewRefusal,
    RoleRequired,
)
from ..ledger.report import build as build_report
from ..shapes import Shape
from ..text import shown
from .core import ServiceCore, check_enum

MAX_FACE_IDS = 4096


def _optional_str(value: Any, field: str, max_len: int = 255) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise InvalidParameterException(f"{field} must be a string of 1-{max_len} characters.")
    return value


def _face_ids(value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise InvalidParameterException("FaceIds must be a non-empty list of face ids.")
    if len(value) > MAX_FACE_IDS:
        raise InvalidParameterException(f"FaceIds may hold at most {MAX_FACE_IDS} ids.")
    ids = [_optional_str(v, "FaceIds[]") for v in value]
    return [i for i in ids if i is not None]


class _CallableRemover:
    """Adapts a service's `remove_faces(conn, collection_id, face_ids)` method to FaceRemover."""

    def __init__(self, fn: Callable[[Connection, str, Sequence[str]], Sequence[str]]) -> None:
        self.fn = fn

    def remove_faces(self, conn: Connection, collection_id: str,
                     face_ids: Sequence[str]) -> Sequence[str]:
        return self.fn(conn, collection_id, face_ids)


class GovernanceOperations(ServiceCore):
    """Policies, review, retention, anchors, verification, reports and case exports."""

    def _require_admin(self, operation: str, ctx: RequestContext,
                       collection: str | None = None) -> None:
        if ctx.admin:
            return
        with self.audit(operation, ctx, collection=collection, uses_model=False):
            raise AdminRequired(f"{operation} needs an admin key; {ctx.principal} is not one.")

    def _require_role(self, operation: str, ctx: RequestContext, roles: Sequence[str],
                      collection: str | None = None) -> None:
        """Refuse (and log the refusal) unless the caller holds one of `roles` and may see
        `collection`."""
        if collection is not None and not ctx.may_name(collection):
            with self.audit(operation, ctx, collection=collection, uses_model=False):
                raise RoleRequired(f"{ctx.principal} may not see collection {collection}.")
        if ctx.has_role(*roles):
            return
        with self.audit(operation, ctx, collection=collection, uses_model=False):
            raise RoleRequired(f"{operation} needs the {' or '.join(roles)} role; "
                               f"{ctx.principal} does not hold it.")

    # -- policies ----------------------------------------------------------------------

    def put_collection_policy(self, collection_id: str, policy: Any, *,
                              ctx: RequestContext = LOCAL) -> Shape:
        """Set a collection's policy (admins only; logged with the old and the new policy)."""
        cid = check_collection_id(collection_id)
        new = CollectionPolicy.from_wire(policy)
        self._require_admin("PutCollectionPolicy", ctx, cid)
        with self.audit("PutCollectionPolicy", ctx, collection=cid, uses_model=False) as op:
            old = load_policy(op.conn, cid)
            store_policy(op.conn, cid, new, ctx.principal)
            op.note(policy=new.to_wire(), previous=old.to_wire())
        return {"CollectionId": cid, "Policy": new.to_wire(), "PreviousPolicy": old.to_wire()}

    def get_collection_policy(self, collection_id: str, *,
                              ctx: RequestContext = LOCAL) -> Shape:
        """A collection's policy (the default one if none was set)."""
        cid = check_collection_id(collection_id)
        with self.ledger.engine.connect() as conn:
            policy = load_policy(conn, cid)
        return {"CollectionId": cid, "Policy": policy.to_wire()}

    # -- review queue ------------------------------------------------------------------

    def list_review_candidates(self, collection_id: str | None = None,
                               status: str | None = review.PENDING,
                               request_id: str | None = None, case: str | None = None,
                               max_results: int = 100, next_token: str | None = None, *,
                               ctx: RequestContext = LOCAL) -> Shape:
        """Candidates awaiting (or past) review, oldest first; status None lists all."""
        cid = None if collection_id is None else check_collection_id(collection_id)
        st = None if status is None else check_enum(status, review.STATUSES, "Status")
        if isinstance(max_results, bool) or not isinstance(max_results, int) or not (
            1 <= max_results <= 4096
        ):
            raise InvalidParameterException("MaxResults must be an integer from 1 to 4096.")
        after: tuple[str, str] | None = None
        if next_token is not None:
            parts = next_token.split("|") if isinstance(next_token, str) else []
            if len(parts) != 2:
                raise InvalidPaginationTokenException("NextToken is not one this service gave.")
            after = (parts[0], parts[1])
        with self.ledger.engine.connect() as conn:
            found = review.query(
                conn, collection=cid, status=st,
                request_id=_optional_str(request_id, "RequestId"),
                case=_optional_str(case, "CaseReference"), after=after, limit=max_results + 1,
            )
            for cand in found[:max_results]:  # the enrolled photo a reviewer must bring
                cand["EnrolledImageSha256"] = self.recorded_enrolled_sha256(conn, cand)
        result: Shape = {"Candidates": found[:max_results]}
        if len(found) > max_results:
            last = found[max_results - 1]
            result["NextToken"] = f"{last['CreatedAt']}|{last['CandidateId']}"
        return result

    def get_review_candidate(self, candidate_id: str, *, ctx: RequestContext = LOCAL) -> Shape:
        """One candidate with every review decision so far."""
        cand = _optional_str(candidate_id, "CandidateId", 64)
        if cand is None:
            raise InvalidParameterException("CandidateId is required.")
        with self.ledger.engine.connect() as conn:
            return review.get(conn, cand)

    def review_candidate(self, candidate_id: str, decision: str, reason: str, *,
                         probe_sha256: str | None = None, enrolled_sha256: str | None = None,
                         features: Mapping[str, str] | None = None,
                         ctx: RequestContext = LOCAL) -> Shape:
        """Decide a candidate as reviewer `ctx.principal`: CONFIRM, REJECT or INCONCLUSIVE,
        with a reason (logged). Every decision names the two photos compared by their SHA-256,
        which must equal the recorded ones; the event records them, and the facial features
        compared (`ledger.comparison`) when given. A caller who can read the ledger (auditor,
        admin, the local operator) may give only the first decision on a candidate's search and
        probe photo, or the policy's open verification: it could have read the others
        (`reads_decisions`). A malformed decision is refused and logged (malformed_decision)."""
        current = self.get_review_candidate(candidate_id, ctx=ctx)
        self._require_role("ReviewCandidate", ctx, ("reviewer",), current["CollectionId"])
        # The decision belongs to the search's case, so the case export carries it.
        rctx = dataclasses.replace(ctx, case=ctx.case or current["CaseReference"],
                                   purpose=ctx.purpose or current["Purpose"])
        with self.audit("ReviewCandidate", rctx, collection=current["CollectionId"],
                        uses_model=False) as op:
            op.note(candidate_id=current["CandidateId"])
            try:  # a decision the rules cannot read is refused and logged, never stored
                check_enum(decision, review.DECISIONS, "Decision")
                reason = review.check_decision(decision, reason)
                given = review.Evidence(
                    _optional_str(probe_sha256, "ProbeImageSha256", 128),
                    _optional_str(enrolled_sha256, "EnrolledImageSha256", 128))
                compared = comparison.check_features(features)
            except InvalidParameterException as exc:
                op.note(submitted_decision=shown(decision, 40))
                raise MalformedRequest("malformed_decision", exc.message) from exc
            # ACE-V: whether the reviewer saw the scores before deciding, and when
            op.note(scores_revealed_at=scores_revealed(op.conn, current["CandidateId"],
                                                       ctx.principal))
            op.note(decision=decision, reason=reason,
                    submitted_probe_sha256=given.probe_sha256,
                    submitted_enrolled_sha256=given.enrolled_sha256,
                    **({comparison.EVENT_FIELD: compared} if compared else {}))
            recorded = (current["ProbeImageSha256"],
                        self.recorded_enrolled_sha256(op.conn, current))
            policy = load_policy(op.conn, current["CollectionId"])
            try:
                decided = review.decide(
                    op.conn, current["CandidateId"], ctx.principal, decision, reason,
                    utc_now(), evidence=given, recorded=recorded,
                    verifier_sees_earlier=policy.verifier_sees_earlier,
                    verify_every=policy.verify_every_conclusion,
                    sees_decisions=reads_decisions(ctx, current["CollectionId"]))
            except ReviewConflict as exc:
                if exc.rule != "not_pending" or not still_blind(op.conn, current, ctx):
                    raise
                # a late conclusion of a reviewer still working blind: refused and logged
                # like any, in words that do not name the outcome (every adapter shows them)
                raise ReviewConflict("not_pending", (
                    "Other reviewers settled this candidate before your decision: your "
                    "conclusion is in the ledger as a refused decision. Its outcome is shown "
                    f"{ONCE_DECIDED}")) from exc
            mine = next(r for r in decided["Reviews"] if r["Reviewer"] == ctx.principal)
            # the photos compared, as the event's images (probe first), and by role
            for sha in (mine["ProbeImageSha256"], mine["EnrolledImageSha256"]):
                if sha:
                    op.image(sha)
            op.record(candidate_id=decided["CandidateId"], status=decided["Status"],
                      decision=decision, stage=mine["Stage"],
                      compared={"probe_sha256": mine["ProbeImageSha256"],
                                "enrolled_sha256": mine["EnrolledImageSha256"]},
                      confirmations=decided["Confirmations"],
                      reviewers_required=decided["ReviewersRequired"],
                      verify_every_conclusion=policy.verify_every_conclusion,
                      face_ids=[decided["FaceId"]] if decided["FaceId"] else [],
                      user_ids=[decided["UserId"]] if decided["UserId"] else [],
                      external_image_id=decided["ExternalImageId"],
                      similarities=[decided["Similarity"]],
                      search_request_id=decided["RequestId"])
            if decided["ConflictsWith"]:
                op.record(conflicts_with=decided["ConflictsWith"])
        return decided

    def resolve_review_conflict(self, candidate_id: str, keep: Sequence[str], reason: str, *,
                                ctx: RequestContext = LOCAL) -> Shape:
        """Resolve the CONFLICT `candidate_id` is in (one probe face confirmed as different
        people): the candidates in `keep` stand, the conflict's others are rejected; keeping
        none leaves them all inconclusive. Reviewers only, with a reason (logged)."""
        current = self.get_review_candidate(candidate_id, ctx=ctx)
        if isinstance(keep, str) or not isinstance(keep, Sequence):
            raise InvalidParameterException("Keep must be a list of candidate ids (or empty).")
        kept = [k for k in (_optional_str(k, "Keep[]", 64) for k in keep) if k is not None]
        self._require_role("ResolveConflict", ctx, ("reviewer",), current["CollectionId"])
        rctx = dataclasses.replace(ctx, case=ctx.case or current["CaseReference"],
                                   purpose=ctx.purpose or current["Purpose"])
        with self.audit("ResolveConflict", rctx, collection=current["CollectionId"],
                        uses_model=False) as op:
            op.note(candidate_id=current["CandidateId"], keep=kept)
            try:  # a reason with control or bidirectional characters is never stored
                reason = review.check_reason(reason)
            except InvalidParameterException as exc:
                raise MalformedRequest("malformed_decision", exc.message) from exc
            op.note(reason=reason)
            if still_blind(op.conn, current, ctx):
                # before anything that would tell whether it is in conflict at all
                raise ReviewRefusal(
                    "blind_review",
                    "You still have candidates of this search (or of another search of the "
                    "same probe photo) to decide: its outcomes, conflicts among them, are "
                    f"shown and resolved {ONCE_DECIDED}")
            statuses = review.resolve(op.conn, current["CandidateId"], ctx.principal, kept,
                                      reason, utc_now())
            op.record(candidate_ids=sorted(statuses), statuses=statuses,
                      search_request_id=current["RequestId"])
        return {"Statuses": statuses, "Candidate": self.get_review_candidate(candidate_id)}

    def recorded_enrolled_sha256(self, conn: Connection, candidate: Shape) -> str | None:
        """The enrolled photo's SHA-256 as the ledger recorded it (the IndexFaces event that
        added the candidate's face)."""
        if not candidate.get("FaceId"):
            return None
        found = index_event(conn, candidate["CollectionId"], candidate["FaceId"])
        return None if found is None else found["image_sha256"]

    # -- retention ---------------------------------------------------------------------

    def renew_faces(self, collection_id: str, face_ids: Sequence[str], *,
                    ctx: RequestContext = LOCAL) -> Shape:
        """Restart the retention period of these faces (logged)."""
        cid = check_collection_id(collection_id)
        ids = _face_ids(face_ids)
        with self.audit("RenewFaces", ctx, collection=cid, uses_model=False) as op:
            renewed = retention.renew(op.conn, cid, ids, utc_now())
            unknown = [i for i in ids if i not in set(renewed)]
            op.record(face_ids=renewed, unknown_face_ids=unknown)
        return {"RenewedFaces": renewed, "UnknownFaces": unknown}

    def face_remover(self) -> FaceRemover | None:
        """How the retention sweep deletes faces: the face store's `remove_faces`, if present."""
        fn = getattr(self, "remove_faces", None)
        return _CallableRemover(fn) if callable(fn) else None

    def sweep_retention(self, *, now: datetime | None = None, remover: FaceRemover | None = None,
                        ctx: RequestContext = LOCAL) -> Shape:
        """Delete every face past its collection's RetentionDays; one ExpireFaces event each."""
        remover = remover or self.face_remover()
        if remover is None:
            raise InvalidParameterException(
                "No face store is wired for deletion, so expired faces cannot be removed."
            )
        at = now or utc_now()
        with self.ledger.engine.connect() as conn:
            targets = policies_with_retention(conn)
        expired: dict[str, list[str]] = {}
        for cid, policy in sorted(targets.items()):
            removed = self._expire_collection(cid, int(policy.retention_days or 0), at,
                                              remover, ctx)
            if removed:
                expired[cid] = removed
        return {"ExpiredFaces": expired, "SweptAt": format_time(at)}

    def _expire_collection(self, cid: str, days: int, at: datetime, remover: FaceRemover,
                           ctx: RequestContext) -> list[str]:
        """Expire one collection's due faces, a batch per transaction and event."""
        removed_all: list[str] = []
        after: tuple[str, str] | None = None
        while True:
            with self.audit("ExpireFaces", ctx, collection=cid, uses_model=False) as op:
                due = retention.expired(op.conn, cid, days, at, after=after)
                if not due:
                    op.record(face_ids=[], expired=0, retention_days=days)
                    return removed_all
                ids = [face_id for _, face_id in due]
                op.note(retention_days=days, cutoff=format_time(at))
                try:
                    removed = list(remover.remove_faces(op.conn, cid, ids))
                except ResourceNotFoundException:
                    # The collection itself is gone: its faces with it.
                    retention.forget(op.conn, cid)
                    op.record(face_ids=[], expired=0, collection_missing=True)
                    return removed_all
                retention.forget(op.conn, cid, removed)
                # Faces the store kept (e.g. associated to a user) stay due for the next sweep.
                op.record(face_ids=removed, expired=len(removed),
                          not_removed=[f for f in ids if f not in set(removed)])
            removed_all.extend(removed)
            after = due[-1]

    # -- the chain ---------------------------------------------------------------------

    def anchor_ledger(self, *, ctx: RequestContext = LOCAL) -> Shape:
        """Record and return the chain head, for an outside party to hold."""
        return self.ledger.anchor(ctx.principal).to_dict()

    def verify_ledger(self, anchors: Iterable[str | Anchor] = (), *,
                      ctx: RequestContext = LOCAL) -> Shape:
        """Walk the whole chain; name the first event that is not as written."""
        parsed = [a if isinstance(a, Anchor) else Anchor.parse(a) for a in anchors]
        return verify(self.ledger, parsed).to_dict()

    # -- reports and exports -----------------------------------------------------------

    def transparency_report(self, time_from: str | datetime, time_to: str | datetime, *,
                            ctx: RequestContext = LOCAL,
                            include: Callable[[Mapping[str, Any]], bool] | None = None
                            ) -> Shape:
        """Aggregates over [from, to): searches, candidates, refusals, deletions, models
        (of the events `include` accepts: a scoped auditor's)."""
        start, end = _time(time_from, "From"), _time(time_to, "To")
        if end <= start:
            raise InvalidParameterException("To must be later than From.")
        return build_report(self.ledger, start, end, generated_by=ctx.principal,
                            chain=verify(self.ledger).to_dict(), include=include)

    def export_case(self, case: str, *, ctx: RequestContext = LOCAL) -> Shape:
        """A case's events with the chain segment that proves them (admins only; logged)."""
        # the role first: whether a case exists is itself case data (no oracle for non-admins)
        self._require_admin("ExportCase", ctx)
        ref = _optional_str(case, "CaseReference")
        if ref is None:
            raise InvalidParameterException("CaseReference is required.")
        with self.ledger.engine.connect() as conn:
            count = case_export.count_case_events(conn, ref)
        if count == 0:
            raise ResourceNotFoundException(f"No ledger event carries case reference '{shown(ref)}'.")
        with self.audit("ExportCase", dataclasses.replace(ctx, case=ref),
                        uses_model=False) as op:
            op.record(events=count)
        # The export event is chained now: the bundle's segment ends with it.
        return case_export.build_bundle(self.ledger, ref, exported_by=ctx.principal)


def reads_decisions(ctx: RequestContext, collection: str) -> bool:
    """Whether `ctx` can read the reviewers' decisions on this collection's candidates outside
    blind review: the ledger's ReviewCandidate events (auditors, admins, and the local
    operator, who holds the database)."""
    return ctx.has_role("auditor") and ctx.may_name(collection)


# when a blind reviewer sees a search's outcomes (blind review covers search and probe photo)
ONCE_DECIDED = ("once you have decided every candidate of this search (and of other searches "
                "of the same probe photo) that is open to you: blind review.")


def open_to(pending: list[Shape], ctx: RequestContext) -> tuple[set[str], set[str]]:
    """The searches (request ids) and probe photos (SHA-256) in which the caller still has a
    pending candidate to decide (a reviewer, not its searcher, not decided yet): blind review
    hides every outcome of them from the caller. A key that reads the ledger is never blind
    (it has the decisions at hand: `review.decide` limits what it may decide instead)."""
    requests: set[str] = set()
    probes: set[str] = set()
    if not ctx.has_role("reviewer"):
        return requests, probes
    for c in pending:
        if (c["RequestedBy"] == ctx.principal or review.has_decided(c, ctx.principal)
                or not ctx.may_name(c["CollectionId"])
                or reads_decisions(ctx, c["CollectionId"])):
            continue
        if c["RequestId"]:
            requests.add(c["RequestId"])
        if c["ProbeImageSha256"]:
            probes.add(c["ProbeImageSha256"])
    return requests, probes


def still_blind(conn: Connection, cand: Shape, ctx: RequestContext) -> bool:
    """Whether blind review still hides `cand`'s outcome from the caller (they have a candidate
    of its search, or of another search of its probe photo, to decide)."""
    requests, probes = open_to(review.query(conn, status=review.PENDING, limit=4096), ctx)
    return cand["RequestId"] in requests or cand["ProbeImageSha256"] in probes


REVEAL_SCORES = "RevealCandidateScores"


def scores_revealed(conn: Connection, candidate_id: str, principal: str) -> str | None:
    """When `principal` asked to see `candidate_id`'s scores (the time of their first
    RevealCandidateScores event), or None: a reviewer who may decide sees no score before."""
    found = own_event(conn, REVEAL_SCORES, candidate_id, principal)
    return None if found is None else found[0]


def _time(value: Any, field: str) -> datetime:
    if isinstance(value, datetime):
        return parse_time(format_time(value)) if value.tzinfo else parse_time(value.isoformat())
    if not isinstance(value, str):
        raise InvalidParameterException(f"{field} must be a date or time (ISO 8601).")
    try:
        return parse_time(value)
    except ValueError as exc:
        raise InvalidParameterException(
            f"{field} '{shown(value)}' is not an ISO 8601 date or time (e.g. 2025-01-31)."
        ) from exc
