"""The audit hook every service operation runs inside: policy check first, event with the change.

    with self.audit("SearchFacesByImage", ctx, collection=collection_id) as op:
        threshold = op.threshold(face_match_threshold, default=99.99)  # policy floor applies
        img = self.decode(image)
        op.image(img.sha256)
        ... search, reading/writing through op.conn (one transaction, opened on first use) ...
        return op.release(response, "FaceMatches", compared=collection_size)

On entry the collection's policy is loaded and checked (purpose, consent). A refusal raised
anywhere inside (a `Refusal`, e.g. `op.refuse(...)` or the threshold floor) rolls back whatever
the operation wrote and appends an event with outcome `refused` in a transaction of its own. Any
other error rolls back and leaves no event. On success the event is appended in `op.conn`'s
transaction, which then commits: the change and its event land together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from sqlalchemy import Connection, RootTransaction
from sqlalchemy.exc import SQLAlchemyError

from ..calibration.table import fmr_for_similarity
from ..context import RequestContext
from ..errors import FaceledgerError, InternalServerError, PolicyRefusedException
from ..shapes import Shape
from . import retention, review
from .chain import Ledger
from .events import (
    DONE,
    INDEX_OPERATIONS,
    LIST_OPERATIONS,
    REFUSED,
    SEARCH_OPERATIONS,
    Event,
    utc_now,
)
from .policy import CollectionPolicy, load_policy
from .refusals import PolicyRefusal, Refusal

# Redact compares every face of a video or photo with the collection's kept templates: a use of
# the collection's biometric data like a search, so a purpose rule covers it too.
PURPOSE_OPERATIONS = INDEX_OPERATIONS | SEARCH_OPERATIONS | LIST_OPERATIONS | {"Redact"}


class AuditedOperation:
    """One operation in progress: what it was asked, what it returned, its transaction."""

    def __init__(self, ledger: Ledger, operation: str, ctx: RequestContext,
                 collection: str | None = None, model_version: str | None = None) -> None:
        self.ledger = ledger
        self.operation = operation
        self.ctx = ctx
        self.collection = collection
        self.model_version = model_version
        self.policy = CollectionPolicy()
        self.images: list[str] = []
        self.thresholds: dict[str, Any] = {}
        self.params: dict[str, Any] = {}
        self.result: dict[str, Any] = {}
        # a search's probe face (box and landmarks), kept with candidates held for review
        self.probe_face: Shape | None = None
        # the probe photo's SHA-256 when it is not an input image (SearchFaces by FaceId: the
        # stored face's photo), so reviewers can show which photo they compared
        self.probe_sha256: str | None = None
        self._conn: Connection | None = None
        self._tx: RootTransaction | None = None

    # -- the transaction -------------------------------------------------------------------

    @property
    def conn(self) -> Connection:
        """The operation's connection; its transaction begins on first use, commits at the end."""
        if self._conn is None:
            self._conn = self.ledger.engine.connect()
            self._tx = self._conn.begin()
        return self._conn

    def _close(self, commit: bool) -> None:
        conn, tx = self._conn, self._tx
        self._conn = self._tx = None
        if conn is None or tx is None:
            return
        try:
            if commit:
                tx.commit()
            else:
                tx.rollback()
        finally:
            conn.close()

    # -- policy ----------------------------------------------------------------------------

    def check(self) -> None:
        """Load the collection's policy and refuse what it forbids before anything happens."""
        if self.collection is not None:
            with self.ledger.engine.connect() as conn:
                self.policy = load_policy(conn, self.collection)
        p, ctx = self.policy, self.ctx
        if p.require_purpose and self.operation in PURPOSE_OPERATIONS and not ctx.purpose:
            self.refuse_without_purpose()
        if p.require_consent and self.operation in INDEX_OPERATIONS and not ctx.consent:
            self.refuse("consent_required",
                        f"Collection {self.collection} requires a consent reference to index "
                        f"faces: give one with {ctx.consent_via}.")

    def refuse_without_purpose(self) -> NoReturn:
        """Refuse for want of a stated purpose, naming the caller's way of giving one."""
        self.refuse("purpose_required",
                    f"Collection {self.collection} requires a stated purpose for "
                    f"{self.operation}: give one with {self.ctx.purpose_via}.")

    def refuse(self, rule: str, message: str) -> NoReturn:
        """Refuse the operation under `rule`; the hook logs it and rolls back."""
        raise PolicyRefusal(rule, message)

    def threshold(self, requested: float | None, default: float,
                  name: str = "FaceMatchThreshold") -> float:
        """The similarity threshold to use, after the collection's floor; recorded in the event.

        A requested threshold below the floor is refused; without one, the stricter of the
        service default and the floor applies.
        """
        floor = self.policy.min_similarity_threshold
        if requested is not None and floor is not None and requested < floor:
            self.note_threshold(name, requested)
            self.refuse("threshold_floor",
                        f"{name} {requested:g} is below collection {self.collection}'s minimum "
                        f"of {floor:g}.")
        value = requested if requested is not None else max(default, floor or default)
        self.note_threshold(name, value)
        return value

    def note_threshold(self, name: str, similarity: float) -> None:
        """Record a similarity threshold and the false-match rate it stands for."""
        self.thresholds[name] = similarity
        self.thresholds["FalseMatchRate"] = fmr_for_similarity(similarity)

    # -- what went in, what came out -------------------------------------------------------

    def image(self, sha256: str) -> None:
        """Record an input image by its SHA-256 (the image itself is never kept)."""
        self.images.append(sha256)

    def note(self, **params: Any) -> None:
        """Record request parameters worth keeping (MaxFaces, QualityFilter, ...)."""
        self.params.update({k: v for k, v in params.items() if v is not None})

    def record(self, **summary: Any) -> None:
        """Record parts of the result summary (face_ids, similarities, counts, ...)."""
        self.result.update(summary)

    def indexed(self, face_ids: Sequence[str]) -> None:
        """Faces were indexed into the collection: record them and start their retention clock."""
        self.record(face_ids=list(face_ids))
        if self.collection is not None and face_ids:
            retention.track(self.conn, self.collection, face_ids, utc_now())

    def deleted(self, face_ids: Sequence[str]) -> None:
        """Faces were deleted from the collection: record them and stop their retention clock."""
        self.record(face_ids=list(face_ids), deleted=len(face_ids))
        if self.collection is not None and face_ids:
            retention.forget(self.conn, self.collection, face_ids)

    def collection_deleted(self, face_count: int | None = None) -> None:
        """The whole collection was deleted."""
        if face_count is not None:
            self.record(deleted=face_count)
        if self.collection is not None:
            retention.forget(self.conn, self.collection)

    def release(self, response: Shape, key: str = "FaceMatches", *,
                compared: int | None = None) -> Shape:
        """Record a search's matches and return the response the caller may see.

        In identification mode the matches are held as review candidates: the response then
        has no matches, `ReviewRequired: true` and the `ReviewCandidates` ids to follow up.
        `compared` (how many faces or users were searched) gives the expected false matches.
        """
        items = list(response.get(key) or [])
        matches = [_match(item) for item in items]
        self.record(
            face_ids=[m.face_id for m in matches if m.face_id],
            user_ids=[m.user_id for m in matches if m.user_id],
            similarities=[m.similarity for m in matches],
        )
        fmr = self.thresholds.get("FalseMatchRate")
        if compared is not None:
            self.record(compared=compared)
            if fmr is not None:
                self.record(expected_false_matches=compared * float(fmr))
        if not (self.policy.identification_mode and self.operation in SEARCH_OPERATIONS):
            return response
        if self.collection is None:  # pragma: no cover - searches always name a collection
            return response
        ids = review.hold(
            self.conn, matches, operation=self.operation,
            collection=self.collection, request_id=self.ctx.request_id,
            requested_by=self.ctx.principal, purpose=self.ctx.purpose, case=self.ctx.case,
            probe_sha256=self.images[0] if self.images else self.probe_sha256,
            required=self.policy.reviewers_required, now=utc_now(),
            probe_face=self.probe_face,
        )
        self.record(held_for_review=ids, reviewers_required=self.policy.reviewers_required)
        held = dict(response)
        held[key] = []
        held["ReviewRequired"] = True
        held["ReviewCandidates"] = [{"CandidateId": i, "Status": review.PENDING} for i in ids]
        return held

    # -- the event -------------------------------------------------------------------------

    def event(self, outcome: str = DONE, reason: str | None = None,
              rule: str | None = None) -> Event:
        ctx = self.ctx
        return Event(
            operation=self.operation, principal=ctx.principal,
            outcome=REFUSED if outcome == REFUSED else DONE, collection=self.collection,
            model_version=self.model_version, thresholds=dict(self.thresholds),
            purpose=ctx.purpose, case=ctx.case, consent=ctx.consent, images=tuple(self.images),
            params=dict(self.params), result=dict(self.result), request_id=ctx.request_id,
            reason=reason, rule=rule,
        )

    def commit(self) -> None:
        """Append the event in the operation's transaction and commit both."""
        try:
            self.ledger.append(self.conn, self.event())
            self._close(commit=True)
        except SQLAlchemyError as exc:
            self._close(commit=False)
            raise InternalServerError(
                f"The ledger could not record {self.operation}; nothing was changed."
            ) from exc

    def abort(self, exc: BaseException) -> None:
        """Roll back; if a rule refused the operation, log the refusal in its own transaction."""
        self._close(commit=False)
        if isinstance(exc, (Refusal, PolicyRefusedException)) and isinstance(
            exc, FaceledgerError
        ):
            rule = exc.rule if isinstance(exc, Refusal) else "policy"
            self.result = {}
            try:
                self.ledger.record(self.event(REFUSED, reason=exc.message, rule=rule))
            except SQLAlchemyError as db_exc:
                raise InternalServerError(
                    f"The ledger could not record the refusal of {self.operation}."
                ) from db_exc


def _match(item: Mapping[str, Any]) -> review.Match:
    face = item.get("Face") or {}
    user = item.get("User") or {}
    similarity = float(item.get("Similarity", 0.0))
    return review.Match(
        similarity=similarity,
        face_id=face.get("FaceId"),
        user_id=user.get("UserId") or face.get("UserId"),
        external_image_id=face.get("ExternalImageId"),
        false_match_rate=fmr_for_similarity(similarity),
    )


@contextmanager
def audited(ledger: Ledger, operation: str, ctx: RequestContext, *,
            collection: str | None = None,
            model_version: str | None = None) -> Iterator[AuditedOperation]:
    """Run one operation under its collection's policy and record it (see the module doc)."""
    op = AuditedOperation(ledger, operation, ctx, collection, model_version)
    try:
        op.check()
        yield op
    except BaseException as exc:
        op.abort(exc)
        raise
    op.commit()
