"""Oversight reads for people (the review console): the review queue with what each score means,
a candidate's case file, ledger browsing, collection overviews and the model's published error
rates. Each checks the caller's console role here, in the service, and each read that shows
biometric data (candidates, their faces' geometry) is itself a ledger event.

Roles (`RequestContext.roles`, from the signed-in key): reviewer decides candidates, auditor reads
the ledger and reports, admin changes policies (and holds every role). A context without roles
(the local operator) is not role-restricted.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from collections.abc import Mapping
from typing import Any, NoReturn

from sqlalchemy import Connection, or_, select

from ..calibration.coverage import (
    STATUS_WORDS,
    coverage_at,
    coverage_lines,
    threshold_coverage,
)
from ..calibration.table import fmr_for_similarity, similarity_for_fmr
from ..context import LOCAL, RequestContext
from ..errors import (
    InvalidParameterException,
    PolicyRefusedException,
    ResourceNotFoundException,
    ResourceNotReadyException,
)
from ..ledger import review, schema
from ..ledger.events import PAGE_VIEWS, SEARCH_OPERATIONS, format_time, parse_time
from ..ledger.policy import check_collection_id, load_policy
from ..ledger.refusals import FormRefused, RoleRequired
from ..model_versions import canonical
from ..rates import pairs_of_different_people, wilson_interval
from ..shapes import Shape
from ..store.thresholds import default_search_fmr
from ..ledger.lookup import index_event, like_escape, own_event
from . import collection_members as members
from .governance import (
    REVEAL_SCORES,
    GovernanceOperations,
    open_to,
    reads_decisions,
    scores_revealed,
)
from .users import UserOperations

REVIEW_READERS = ("reviewer", "auditor")
# Beyond these a face is too turned for a like-for-like comparison (FISWG: pose differences
# change which features are visible and how they look); the reviewer is told so, in degrees.
TURNED_YAW, TURNED_PITCH, POSE_APART = 30.0, 25.0, 30.0

LEDGER_READERS = ("auditor",)
EVENT_FILTERS = ("operation", "collection", "principal", "purpose", "case", "outcome")
MAX_EVENTS = 500


class OversightOperations(UserOperations, GovernanceOperations):
    """What the review console reads, with the caller's role checked and the view logged."""

    def _need_role(self, operation: str, ctx: RequestContext, roles: tuple[str, ...],
                   collection: str | None = None) -> None:
        """Refuse (logged) unless the caller holds one of `roles` and may see `collection`."""
        if ctx.has_role(*roles) and (collection is None or ctx.may_name(collection)):
            return
        with self.audit(operation, ctx, collection=collection, uses_model=False):
            if not ctx.has_role(*roles):
                raise RoleRequired(f"{operation} needs the {' or '.join(roles)} role; "
                                   f"{ctx.principal} does not hold it.")
            raise RoleRequired(f"{ctx.principal} may not see collection {collection}.")

    # -- the review queue --------------------------------------------------------------

    def review_queue(self, *, ctx: RequestContext = LOCAL, limit: int = 200,
                     needs_my_decision: bool = False) -> Shape:
        """Pending candidates of the collections the caller may see, grouped by search (oldest
        search first, candidates ranked by Similarity), each as the caller may see it (blind
        review: no other reviewer's decision before one's own). The view is logged."""
        self._need_role("ViewReviewQueue", ctx, REVIEW_READERS)
        with self.ledger.engine.connect() as conn:
            found = review.query(conn, status=review.PENDING, limit=4096)
            opened = open_to(found, ctx)
            # blind review: a search (or probe photo) still open to the caller keeps every
            # candidate listed, settled or not, so none leaving the queue tells of a decision
            found += _settled_in(conn, *opened)
            visible = [c for c in found if ctx.may_name(c["CollectionId"])]
            shaped = [self._as_seen(conn, c, ctx, opened) for c in visible]
            needing = sum(1 for c in shaped if c["YourPart"]["State"] == "needs_decision")
            if needs_my_decision:
                shaped = [c for c in shaped if c["YourPart"]["State"] == "needs_decision"]
            shown = shaped[:limit]
            groups: dict[str, Shape] = {}
            for cand in shown:
                key = cand["RequestId"] or cand["CandidateId"]
                if key not in groups:
                    ranks = _ranks(conn, cand["RequestId"])
                    groups[key] = {
                        "RequestId": cand["RequestId"], "CaseReference": cand["CaseReference"],
                        "Purpose": cand["Purpose"], "RequestedBy": cand["RequestedBy"],
                        "CreatedAt": cand["CreatedAt"], "CollectionId": cand["CollectionId"],
                        "Operation": cand["Operation"],
                        "Search": self._strength(conn, cand), "CandidatesHeld": len(ranks),
                        "Candidates": [], "_ranks": ranks}
                group = groups[key]
                cand["Rank"] = (None if cand["ScoresHidden"]
                                else group["_ranks"].get(cand["CandidateId"]))
                group["Candidates"].append(cand)
            for group in groups.values():
                group.pop("_ranks")
                if any(c["ScoresHidden"] for c in group["Candidates"]):
                    # the others' ranks and scores would tell the hidden one's
                    for c in group["Candidates"]:
                        c.update(ScoresHidden=True, Rank=None, Similarity=None,
                                 FalseMatchRate=None)
                group["Candidates"].sort(key=lambda c: (c["Rank"] or 0, c["CandidateId"]))
            # probe faces confirmed as different people wait for a resolution, not a decision
            conflicts = [{k: c[k] for k in ("CandidateId", "CaseReference", "CollectionId",
                                            "ExternalImageId", "ConflictsWith", "RequestId")}
                         for c in review.query(conn, status=review.CONFLICT, limit=4096)
                         if ctx.may_name(c["CollectionId"])
                         # blind review: a conflict is an outcome (listed above as open)
                         and c["RequestId"] not in opened[0]
                         and c["ProbeImageSha256"] not in opened[1]]
        with self.audit("ViewReviewQueue", ctx, uses_model=False) as op:
            op.record(candidate_ids=[c["CandidateId"] for c in shown + conflicts])
        return {"Searches": list(groups.values()), "Candidates": shown, "Conflicts": conflicts,
                "PendingVisible": len(visible), "NeedsYourDecision": needing,
                "PublishedErrorRates": self.published_error_rates()}

    def _as_seen(self, conn: Connection, cand: Shape, ctx: RequestContext,
                 opened: tuple[set[str], set[str]] | None = None) -> Shape:
        """`cand` as the caller may see it, with YourPart: may they decide, and if not why.
        Blind review covers the whole search and probe: while the caller still has a candidate
        of the same search (or of another search of the same probe photo) to decide, they see
        no other reviewer's decision, reason, name or count, and no outcome, on any of them."""
        if opened is None:
            opened = open_to(review.query(conn, status=review.PENDING, limit=4096), ctx)
        policy = load_policy(conn, cand["CollectionId"])
        reviewer = ctx.has_role("reviewer")
        own = cand["RequestedBy"] == ctx.principal
        decided = review.has_decided(cand, ctx.principal)
        # a key that reads the ledger has the others' decisions at hand anyway: nothing is
        # withheld from it, and it may decide only while nobody has (or as the open verifier)
        reader = reads_decisions(ctx, cand["CollectionId"])
        seen = review.blind(cand, ctx.principal, may_decide=reviewer and not own and not reader,
                            verifier_sees_earlier=policy.verifier_sees_earlier)
        if cand["Status"] == review.CONFLICT:
            part = {"State": "conflict", "CanDecide": False,
                    "CanResolve": reviewer and not own,
                    "Why": "This probe face was confirmed as different people (CONFLICT): no "
                           "identification stands until a reviewer resolves the conflict."}
        elif cand["Status"] != review.PENDING:
            part = {"State": "settled", "CanDecide": False,
                    "Why": f"This candidate is settled: {cand['Status']}."}
        elif decided:
            part = {"State": "decided", "CanDecide": False,
                    "Why": f"You decided this candidate ({seen['MyDecision']}); each reviewer "
                           "decides once. It waits for other reviewers."}
        elif own:
            part = {"State": "own_search", "CanDecide": False,
                    "Why": "You ran this search, so you may not review its results: other "
                           "reviewers decide."}
        elif not reviewer:
            part = {"State": "not_reviewer", "CanDecide": False,
                    "Why": "Your key has no reviewer role: you may read this case file, not "
                           "decide it."}
        elif (reader and seen["Stage"] != review.VERIFICATION
              and review.decided_by_others(conn, cand, ctx.principal)):
            part = {"State": "reads_decisions", "CanDecide": False,
                    "Why": "Your key can read the ledger, where other reviewers' decisions on "
                           "this candidate or on its search's other candidates (or other "
                           "searches of its probe photo) are recorded, so your decision would "
                           "not be independent: a reviewer-only key decides it."}
        else:
            part = {"State": "needs_decision", "CanDecide": True, "Why": None}
        requests, probes = opened
        verifying = part["CanDecide"] and seen["Stage"] == review.VERIFICATION
        if (cand["RequestId"] in requests or cand["ProbeImageSha256"] in probes) and not verifying:
            # a sibling's outcome is a colleague's conclusion about the same probe face: every
            # candidate of the search and probe looks the same to the caller, settled or not
            seen["Reviews"] = [r for r in seen["Reviews"] if r["Reviewer"] == ctx.principal]
            seen["Confirmations"] = None
            seen["DecisionsHidden"] = True
            seen["Status"] = None  # PENDING or settled would tell what others decided
            # a CONFLICT counts as settled here: that two people were confirmed for this
            # probe, and how it was resolved, are other reviewers' conclusions
            seen["ConflictsWith"], seen["Resolution"] = [], None
            late = None
            if cand["Status"] != review.PENDING and reviewer and not own and not decided:
                # settled by others before the caller decided it: still open to the caller's
                # conclusion, which the service refuses as a decision (logged, with the
                # reason); after that attempt it reads as decided
                late = own_event(conn, "ReviewCandidate", cand["CandidateId"], ctx.principal,
                                 outcome="refused", rule="not_pending")
                if late is None:
                    part = {"State": "needs_decision", "CanDecide": True, "Why": None}
            if not part["CanDecide"]:
                given = (late[1].get("params") or {}).get("decision") if late else None
                mine = (f"You decided this candidate ({seen['MyDecision']}). "
                        if seen["MyDecision"] else
                        f"You gave your conclusion ({given}) after other reviewers had settled "
                        "this candidate: it is in the ledger, not counted as a decision. "
                        if late else "This candidate is not open to your decision. ")
                part = {"State": "blind", "CanDecide": False,
                        "Why": mine + "Its status and other reviewers' decisions are hidden "
                               "from you until you have decided every candidate of this search "
                               "(and of other searches of the same probe photo) that is open "
                               "to you: blind review."}
        part.setdefault("CanResolve", False)
        seen["YourPart"] = part
        seen["ReadsDecisions"] = reader
        seen["VerifierSeesEarlier"] = policy.verifier_sees_earlier
        seen["VerifyEveryConclusion"] = policy.verify_every_conclusion
        # ACE-V: analysis before comparison. Whoever may decide sees no score (Similarity,
        # its false-match rate, rank) until they ask for it after a first look (logged).
        seen["ScoresRevealedAt"] = (scores_revealed(conn, cand["CandidateId"], ctx.principal)
                                    if part["CanDecide"] else None)
        seen["ScoresHidden"] = part["CanDecide"] and seen["ScoresRevealedAt"] is None
        if seen["ScoresHidden"]:
            seen["Similarity"] = seen["FalseMatchRate"] = None
        return seen

    def _strength(self, conn: Connection, cand: Shape) -> Shape:
        """How strong the search behind `cand` was: its threshold as Similarity and FMR, the
        default threshold for a search of that size, expected false matches, and warnings."""
        facts = _search_facts(conn, cand["RequestId"])
        threshold, fmr = facts.get("Threshold"), facts.get("ThresholdFalseMatchRate")
        searched = facts.get("FacesSearched")
        warnings: list[str] = []
        # a candidate whose search event is not found (held by an older version, or by hand)
        # still has every field, as unknown
        out: Shape = {k: None for k in ("EventSeq", "Threshold", "ThresholdFalseMatchRate",
                                        "FacesSearched", "ExpectedFalseMatches",
                                        "ProbeImageSha256", "FaceModelVersion")}
        out.update(facts)
        try:
            table = self.calibration
        except LookupError:
            table = None
        if table is not None and isinstance(searched, int):
            d_fmr = default_search_fmr(searched, self.settings.search_expected_false_matches,
                                       table.lowest_credible_fmr)
            out["DefaultThreshold"] = similarity_for_fmr(d_fmr)
            out["DefaultFalseMatchRate"] = d_fmr
        floor = load_policy(conn, cand["CollectionId"]).min_similarity_threshold
        out["PolicyMinimum"] = floor
        expected = facts.get("ExpectedFalseMatches")
        if isinstance(threshold, (int, float)):
            fmr = fmr if isinstance(fmr, (int, float)) else fmr_for_similarity(threshold)
            one_in = pairs_of_different_people(fmr)
            default = out.get("DefaultThreshold")
            if isinstance(default, float) and threshold < default - 1e-9:
                expect = (f"; {expected:.3g} false matches expected in this search"
                          if isinstance(expected, (int, float)) else "")
                warnings.append(
                    f"This search ran at {threshold:g}, below the default of {default:.6g} "
                    f"for {searched} faces: {one_in} score this "
                    f"high{expect}.")
            if table is not None and fmr < table.lowest_credible_fmr:
                warnings.append(
                    f"This search ran at {threshold:g}: its false-match rate ({fmr:.2g}) is "
                    f"below what the calibration can show (lowest credible "
                    f"{table.lowest_credible_fmr:.2g}); the rate is extrapolated, not measured.")
        if isinstance(expected, (int, float)) and expected >= 1 and not warnings:
            warnings.append(f"{expected:.3g} false matches are expected in this search: "
                            "a candidate may well be someone else.")
        out["Warnings"] = warnings
        out["Weak"] = bool(warnings)
        return out

    def review_case_file(self, candidate_id: str, *, ctx: RequestContext = LOCAL) -> Shape:
        """One candidate with what a reviewer checks: the probe's recorded SHA-256 and face
        geometry, the enrolled face's SHA-256 (from its IndexFaces) and geometry, the search's
        strength, the candidate's rank and siblings, and the model's error rates. Others'
        decisions are withheld until the caller has decided (blind review). Logged as a
        ViewCandidate event."""
        self._need_role("ViewCandidate", ctx, REVIEW_READERS)
        cand = self.get_review_candidate(candidate_id, ctx=ctx)
        cid = cand["CollectionId"]
        self._need_role("ViewCandidate", ctx, REVIEW_READERS, cid)
        enrolled: Shape | None = None
        with self.ledger.engine.connect() as conn:
            search = self._strength(conn, cand)
            if cand["FaceId"]:
                enrolled = self._enrolled_face(conn, cid, cand["FaceId"])
            seen = self._as_seen(conn, cand, ctx)
            ranks = _ranks(conn, cand["RequestId"])
            siblings = []
            if cand["RequestId"]:
                for other in review.query(conn, request_id=cand["RequestId"], limit=4096):
                    if other["CandidateId"] == cand["CandidateId"]:
                        continue
                    hidden = seen["ScoresHidden"]  # a sibling's rank tells this one's
                    siblings.append({
                        "CandidateId": other["CandidateId"],
                        "Rank": None if hidden else ranks.get(other["CandidateId"]),
                        "Similarity": None if hidden else other["Similarity"],
                        "FalseMatchRate": None if hidden else other["FalseMatchRate"],
                        "ExternalImageId": other["ExternalImageId"], "FaceId": other["FaceId"],
                        # another candidate's outcome is a colleague's conclusion too
                        "Status": None if seen["DecisionsHidden"] else other["Status"]})
                siblings.sort(key=lambda o: (o["Rank"] or 0, o["CandidateId"]))
        seen["Rank"] = None if seen["ScoresHidden"] else ranks.get(cand["CandidateId"])
        # the view belongs to the search's case, so the case export shows who saw it
        vctx = dataclasses.replace(ctx, case=ctx.case or cand["CaseReference"],
                                   purpose=ctx.purpose or cand["Purpose"])
        with self.audit("ViewCandidate", vctx, collection=cid, uses_model=False) as op:
            op.record(candidate_id=cand["CandidateId"],
                      face_ids=[cand["FaceId"]] if cand["FaceId"] else [],
                      search_request_id=cand["RequestId"],
                      decisions_shown=not seen["DecisionsHidden"],
                      scores_shown=not seen["ScoresHidden"])
        return {"Candidate": seen, "Search": search, "EnrolledFace": enrolled,
                "Suitability": suitability(cand.get("ProbeFace"), enrolled),
                "Rank": seen["Rank"], "CandidatesHeld": len(ranks), "Siblings": siblings,
                "PublishedErrorRates": self.published_error_rates(
                    search.get("FaceModelVersion"),
                    search["Threshold"] if isinstance(search.get("Threshold"), (int, float))
                    else None)}

    def reveal_scores(self, candidate_id: str, *, probe_sha256: str | None = None,
                      enrolled_sha256: str | None = None,
                      ctx: RequestContext = LOCAL) -> Shape:
        """Show a reviewer the candidate's scores after their own first look (ACE-V: analysis
        before comparison): its Similarity, false-match rate and rank, and the search's other
        candidates' scores. Logged as RevealCandidateScores with `photos_checked` (both hashes
        given and equal to the recorded ones: the photos were open in the reviewer's browser);
        from then on the reviewer's pages show the scores, and their decision event says when
        they saw them."""
        self._need_role(REVEAL_SCORES, ctx, REVIEW_READERS)
        cand = self.get_review_candidate(candidate_id, ctx=ctx)
        cid = cand["CollectionId"]
        self._need_role(REVEAL_SCORES, ctx, REVIEW_READERS, cid)
        with self.ledger.engine.connect() as conn:
            ranks = _ranks(conn, cand["RequestId"])
            enrolled = self.recorded_enrolled_sha256(conn, cand)
            others = review.query(conn, request_id=cand["RequestId"], limit=4096) \
                if cand["RequestId"] else []
        given = [(v or "").strip().lower() or None for v in (probe_sha256, enrolled_sha256)]
        checked = given == [cand["ProbeImageSha256"], enrolled] and None not in given
        vctx = dataclasses.replace(ctx, case=ctx.case or cand["CaseReference"],
                                   purpose=ctx.purpose or cand["Purpose"])
        with self.audit(REVEAL_SCORES, vctx, collection=cid, uses_model=False) as op:
            op.record(candidate_id=cand["CandidateId"], photos_checked=checked,
                      search_request_id=cand["RequestId"])
        return {"CandidateId": cand["CandidateId"], "CaseReference": cand["CaseReference"],
                "ExternalImageId": cand["ExternalImageId"], "Similarity": cand["Similarity"],
                "FalseMatchRate": cand["FalseMatchRate"], "Rank": ranks.get(cand["CandidateId"]),
                "CandidatesHeld": len(ranks), "PhotosChecked": checked,
                "Others": sorted(({"CandidateId": o["CandidateId"],
                                   "ExternalImageId": o["ExternalImageId"],
                                   "Similarity": o["Similarity"],
                                   "Rank": ranks.get(o["CandidateId"])}
                                  for o in others if o["CandidateId"] != cand["CandidateId"]),
                                 key=lambda o: o["Rank"] or 0)}

    def recorded_enrolled_sha256(self, conn: Connection, candidate: Shape) -> str | None:
        """The ledger's IndexFaces hash, else the catalog's (faces indexed before the ledger
        kept image hashes): the same hash the case file shows as expected."""
        if not candidate.get("FaceId"):
            return None
        face = self._enrolled_face(conn, candidate["CollectionId"], candidate["FaceId"])
        found = face.get("ExpectedSha256")
        return found if isinstance(found, str) else None

    def _enrolled_face(self, conn: Connection, cid: str, face_id: str) -> Shape:
        """The face's record in the catalog and the IndexFaces event that added it."""
        face: Shape = {"FaceId": face_id, "InCatalog": False}
        try:
            with self.catalog.read() as cconn:
                coll = self.catalog.collection(cconn, cid)
                rows = self.catalog.faces_by_id(cconn, coll.pk, [face_id])
        except ResourceNotFoundException:  # the collection was deleted since
            rows = {}
        row = rows.get(face_id)
        if row is not None:
            w, h, left, top = row.box
            face.update({
                "InCatalog": True,
                "ExternalImageId": row.external_image_id,
                "ImageSha256": row.image_sha256,
                "BoundingBox": {"Width": w, "Height": h, "Left": left, "Top": top},
                "Landmarks": [{"Type": t, "X": x, "Y": y} for t, x, y in row.landmarks],
                **(dict(row.detail) if row.detail else {}),
            })
        indexed = index_event(conn, cid, face_id)
        face.setdefault("ImageSha256", None)
        if indexed is not None:
            face["IndexFacesEvent"] = indexed["seq"]
            face["IndexFacesImageSha256"] = indexed["image_sha256"]
        # The ledger's record is the authority; the catalog's copy serves faces whose
        # IndexFaces event is not found. Both are shown when they differ.
        face["ExpectedSha256"] = face.get("IndexFacesImageSha256") or face["ImageSha256"]
        return face

    def published_error_rates(self, model_version: str | None = None,
                              threshold: float | None = None) -> Shape:
        """A model's (default: the configured one's) published error rates from its
        calibration table: operating points at the thresholds the table checked, whom the
        promise holds for at each (`calibration.coverage`, the one source of these words), and
        per group where the table measured groups. With `threshold` (a search's), the coverage
        at exactly that threshold, if the table checked it."""
        version = canonical(model_version or self.pipeline.model_version)
        try:
            table = self.calibration_for(version)
        except (LookupError, ResourceNotReadyException):
            return {"ModelVersion": version, "Available": False}
        prov = table.provenance
        coverage = threshold_coverage(table)
        sims = [t.similarity for t in coverage] or [
            float(row["similarity"]) for row in prov.get("summary", [])
            if isinstance(row, Mapping) and 0 < float(row.get("fmr", 1)) < 1]
        points = []
        for sim in sims:
            fmr = fmr_for_similarity(sim)
            d = table.distance_for_fmr(fmr)
            checked = next((t for t in coverage if t.similarity == sim), None)
            points.append({"Similarity": sim, "FalseMatchRate": fmr,
                           "FalseNonMatchRate": float(table.fnmr_at(d)),
                           "Credible": table.is_credible(fmr),
                           "Coverage": None if checked is None else checked.as_dict()})
        groups = _group_rows(prov.get("coverage"))
        at = None if threshold is None else coverage_at(table, threshold)
        return {"ModelVersion": table.model_version, "Available": True,
                "Dataset": (prov.get("dataset") or {}).get("name"),
                "LowestCredibleFalseMatchRate": table.lowest_credible_fmr,
                "OperatingPoints": points,
                # the summary lines; the per-group lines are the rows of Groups
                "Populations": [ln.rstrip(":") for ln in coverage_lines(table)
                                if not ln.startswith("  ")],
                "Coverage": [t.as_dict() for t in coverage],
                "Threshold": threshold, "AtThreshold": None if at is None else at.as_dict(),
                "Groups": groups, "GroupsMeasured": len(groups),
                # groups whose own rate at a shipped threshold is above the promise beyond
                # chance (the whole 95% interval above it): said next to every decision
                "GroupsAbovePromise": [
                    {"Group": g["Group"], "Similarity": t["Similarity"],
                     "FalseMatches": t["FalseMatches"], "ImpostorPairs": g["ImpostorPairs"]}
                    for g in groups for t in g["AtThresholds"] if t["AbovePromise"]]}

    def calibration_curve(self, points: int = 60, model_version: str | None = None) -> Shape:
        """A model's (default: the configured one's) calibration as (distance, Similarity,
        FMR, FNMR) points for a chart; no points when it has no table."""
        version = canonical(model_version or self.pipeline.model_version)
        try:
            t = self.calibration_for(version)
        except (LookupError, ResourceNotReadyException):
            return {"ModelVersion": version, "Points": []}
        n = len(t.distance)
        step = max(1, n // points)
        idx = list(range(0, n, step)) + ([n - 1] if (n - 1) % step else [])
        return {"ModelVersion": t.model_version,
                "Points": [{"Distance": float(t.distance[i]),
                            "FalseMatchRate": float(10 ** t.log10_fmr[i]),
                            "Similarity": float(100 * (1 - 10 ** t.log10_fmr[i])),
                            "FalseNonMatchRate": float(t.fnmr[i])} for i in idx]}

    # -- the ledger --------------------------------------------------------------------

    def ledger_events(self, filters: Mapping[str, str | None] | None = None,
                      time_from: str | None = None, time_to: str | None = None,
                      before_seq: int | None = None, limit: int = 50, *,
                      hide_page_views: bool = False,
                      ctx: RequestContext = LOCAL) -> Shape:
        """Events matching the filters, newest first, each with its review decision and
        candidates (auditors; events hold hashes and ids, never images or templates, so
        browsing them is not itself logged). A scoped auditor sees only its collections'
        events and its own collection-less ones; `hide_page_views` leaves out the console's
        page views (ViewCandidate, ViewReviewQueue, ...)."""
        self._need_role("ListLedgerEvents", ctx, LEDGER_READERS)
        if not 1 <= limit <= MAX_EVENTS:
            raise InvalidParameterException(f"MaxResults must be from 1 to {MAX_EVENTS}.")
        e = schema.events
        columns = {"operation": e.c.operation, "collection": e.c.collection,
                   "principal": e.c.principal, "purpose": e.c.purpose, "case": e.c.case_ref,
                   "outcome": e.c.outcome}
        q = select(e.c.seq, e.c.hash, e.c.time, e.c.operation, e.c.principal, e.c.collection,
                   e.c.purpose, e.c.case_ref, e.c.outcome, e.c.body)
        for name, value in (filters or {}).items():
            if name not in columns:
                raise InvalidParameterException(f"Unknown ledger filter {name!r}.")
            if value:
                q = q.where(columns[name] == value)
        for value, field, after in ((time_from, "From", True), (time_to, "To", False)):
            if value:
                try:
                    bound = parse_time(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                except ValueError as exc:
                    raise InvalidParameterException(
                        f"{field} {value!r} is not an ISO 8601 date or time.") from exc
                q = q.where(e.c.time >= bound if after else e.c.time < bound)
        if hide_page_views:
            q = q.where(e.c.operation.not_in(sorted(PAGE_VIEWS)))
        events: list[Shape] = []
        more: int | None = None
        cursor = before_seq
        with self.ledger.engine.connect() as conn:
            operations = sorted(r[0] for r in conn.execute(select(e.c.operation).distinct()))
            while len(events) < limit:  # a scoped auditor's pages skip others' events
                page = q if cursor is None else q.where(e.c.seq < cursor)
                rows = conn.execute(page.order_by(e.c.seq.desc()).limit(limit + 1)).all()
                for r in rows:
                    if len(events) == limit:
                        more = events[-1]["Seq"]
                        break
                    if event_visible(ctx, r.collection, r.principal):
                        events.append(_event_row(r))
                if more is not None or len(rows) <= limit:
                    break
                cursor = int(rows[-1].seq)
        out: Shape = {"Events": events, "Operations": operations}
        if more is not None:
            out["NextBeforeSeq"] = more
        return out

    def ledger_event(self, seq: int, *, ctx: RequestContext = LOCAL) -> Shape:
        """One stored event: its body as hashed, its hash and the hash it links to."""
        self._need_role("GetLedgerEvent", ctx, LEDGER_READERS)
        stored = self.ledger.get(seq)
        if stored is None:
            raise ResourceNotFoundException(f"The ledger has no event #{seq}.")
        body = json.loads(stored.body)
        coll = body.get("collection") if isinstance(body, dict) else None
        principal = body.get("principal") if isinstance(body, dict) else None
        if not event_visible(ctx, coll if isinstance(coll, str) else None,
                             principal if isinstance(principal, str) else None):
            raise ResourceNotFoundException(f"The ledger has no event #{seq} you may see.")
        return {"Seq": stored.seq, "Prev": stored.prev, "Hash": stored.hash,
                "Body": body, "BodyText": stored.body,
                "Next": seq + 1 if self.ledger.get(seq + 1) is not None else None}

    def verify_ledger_as(self, *, ctx: RequestContext = LOCAL) -> Shape:
        """`verify_ledger` for an auditor, with the latest recorded anchor."""
        self._need_role("VerifyLedger", ctx, LEDGER_READERS)
        result: Shape = dict(self.verify_ledger(ctx=ctx))
        anchors = self.ledger.anchors()
        result["latest_anchor"] = anchors[-1].to_dict() if anchors else None
        return result

    def report_as(self, time_from: str, time_to: str, *,
                  ctx: RequestContext = LOCAL) -> Shape:
        """`transparency_report` for an auditor (aggregates only: no biometric data)."""
        self._need_role("TransparencyReport", ctx, LEDGER_READERS)
        return self.transparency_report(time_from, time_to, ctx=ctx,
                                        include=lambda body: event_visible(
                                            ctx, body.get("collection"), body.get("principal")))

    # -- collections -------------------------------------------------------------------

    def visible_collections(self, *, ctx: RequestContext = LOCAL) -> list[Shape]:
        """The collections the caller may see, with face counts and model versions."""
        self._need_role("ListCollections", ctx, ("reviewer", "auditor", "admin"))
        with self.catalog.read() as conn:
            rows = self.catalog.list_collections(conn, None, 10_000)
        return [{"CollectionId": r.collection_id, "FaceCount": r.face_count,
                 "FaceModelVersion": r.face_model_version}
                for r in rows if ctx.may_name(r.collection_id)]

    def collection_overview(self, collection_id: str, *, listing: bool = True,
                            ctx: RequestContext = LOCAL) -> Shape:
        """A collection's counts, policy, retention and model, and (with `listing`) its first
        100 faces and users, recorded as one ListFaces event (the listing obeys the collection's
        purpose rule: without a purpose where one is required, nothing is listed or logged)."""
        cid = check_collection_id(collection_id)
        self._need_role("ViewCollection", ctx, ("reviewer", "auditor", "admin"), cid)
        with self.catalog.read() as conn:  # counts and the model: aggregates, not logged
            coll = self.catalog.collection(conn, cid)
            user_count = self.catalog.user_count(conn, coll.pk)
        described: Shape = {"FaceCount": coll.face_count, "UserCount": user_count,
                            "FaceModelVersion": coll.face_model_version,
                            "CreationTimestamp": coll.created_at}
        out: Shape = {"CollectionId": cid, "Description": described, "Faces": [], "Users": [],
                      "ListingNeedsPurpose": False}
        with self.ledger.engine.connect() as conn:
            policy = load_policy(conn, cid)
        if policy.require_purpose and not ctx.purpose:
            # asked for a purpose first, rather than listing and being refused
            out["ListingNeedsPurpose"] = listing
        elif listing:
            try:
                out["Faces"], out["Users"] = self._list_for_console(cid, ctx)
            except PolicyRefusedException as exc:
                # the collection's policy refused the listing; it is logged
                out["ListingRefused"] = exc.message
        with self.ledger.engine.connect() as conn:
            r = schema.retention
            ids = [f["FaceId"] for f in out["Faces"]]
            since = dict(conn.execute(select(r.c.face_id, r.c.since).where(
                r.c.collection == cid, r.c.face_id.in_(ids))).all()) if ids else {}
        out["Policy"] = policy.to_wire()
        for face in out["Faces"]:
            started = since.get(face["FaceId"])
            face["RetainedSince"] = started
            if started and policy.retention_days:
                face["ExpiresAt"] = format_time(
                    parse_time(started) + timedelta(days=policy.retention_days))
        return out

    def _list_for_console(self, cid: str, ctx: RequestContext,
                          limit: int = 100) -> tuple[list[Shape], list[Shape]]:
        """The first `limit` faces and users of `cid`, in one ListFaces event (a page is one
        view: not a DescribeCollection, a ListFaces and a ListUsers)."""
        with self.audit("ListFaces", ctx, collection=cid, uses_model=False) as op:
            op.note(MaxResults=limit, Users=True, Via="console")
            with self.catalog.read() as conn:
                coll = self.catalog.collection(conn, cid)
                faces = self.catalog.list_faces(conn, coll.pk, 0, limit + 1)
                users = self.catalog.list_users(conn, coll.pk, 0, limit + 1)
            op.record(face_ids=[f.face_id for f in faces[:limit]],
                      user_ids=[u.user_id for u in users[:limit]],
                      more=len(faces) > limit or len(users) > limit)
        return ([members.face_shape(f, coll.face_model_version) for f in faces[:limit]],
                [{"UserId": u.user_id, "UserStatus": members.status(u.face_count)}
                 for u in users[:limit]])

    def refuse_console_form(self, operation: str, message: str, *,
                            candidate_id: str | None = None,
                            ctx: RequestContext = LOCAL) -> NoReturn:
        """Log a console form refused for its CSRF token, as a refused `operation` of the
        signed-in key (rule csrf: a forged request in that key's name), and raise it."""
        with self.audit(operation, ctx, uses_model=False) as op:
            op.note(form="console", candidate_id=candidate_id)
            raise FormRefused(message)


def _search_facts(conn: Connection, request_id: str | None) -> Shape:
    """FacesSearched, FalseMatchRate and ExpectedFalseMatches of the search event `request_id`."""
    if not request_id:
        return {}
    e = schema.events
    rows = conn.execute(
        select(e.c.seq, e.c.body).where(e.c.operation.in_(sorted(SEARCH_OPERATIONS)),
                                        e.c.body.like(f'%"request_id":"{like_escape(request_id)}"%',
                                                      escape="\\"))
    ).all()
    for seq, text in rows:
        body = json.loads(text)
        if body.get("request_id") != request_id:
            continue
        result, thresholds = body.get("result") or {}, body.get("thresholds") or {}
        named = [(k, v) for k, v in thresholds.items() if k != "FalseMatchRate"]
        return {"EventSeq": int(seq), "Time": body.get("time"),
                "ThresholdName": named[0][0] if named else None,
                "Threshold": named[0][1] if named else None,
                "FacesSearched": result.get("compared"),
                "ExpectedFalseMatches": result.get("expected_false_matches"),
                "ThresholdFalseMatchRate": thresholds.get("FalseMatchRate"),
                "ProbeImageSha256": (body.get("images") or [None])[0],
                # the model that ran (events keep the name they were written with)
                "FaceModelVersion": canonical(str(body["model_version"]))
                if body.get("model_version") else None}
    return {}


def suitability(probe: Shape | None, enrolled: Shape | None) -> list[str]:
    """Warnings about how comparable the two faces are, from the pose the detector recorded
    for each (the probe at the search, the enrolled face at indexing)."""
    poses = {name: (face or {}).get("Pose") for name, face in (("probe", probe),
                                                                ("enrolled", enrolled))}
    out = []
    for name, pose in poses.items():
        if not isinstance(pose, Mapping):
            continue
        yaw, pitch = float(pose.get("Yaw") or 0.0), float(pose.get("Pitch") or 0.0)
        if abs(yaw) >= TURNED_YAW:
            out.append(f"The {name} face is turned {abs(yaw):.0f}° to the side (yaw "
                       f"{yaw:+.0f}°): the far half of the face is hidden and foreshortened, "
                       "so its features cannot be compared like for like, and the picture "
                       "below scales it by its eye-to-mouth height, not its narrowed eyes.")
        if abs(pitch) >= TURNED_PITCH:
            out.append(f"The {name} face is tilted {abs(pitch):.0f}° up or down (pitch "
                       f"{pitch:+.0f}°): heights of the nose, mouth and chin are foreshortened.")
    p, e = poses["probe"], poses["enrolled"]
    if isinstance(p, Mapping) and isinstance(e, Mapping):
        apart = abs(float(p.get("Yaw") or 0.0) - float(e.get("Yaw") or 0.0))
        if apart >= POSE_APART:
            out.append(f"The two faces are turned {apart:.0f}° apart: compare only features "
                       "visible in both; a conclusion on these photos may not be possible "
                       "(inconclusive).")
    return out


def _settled_in(conn: Connection, requests: set[str], probes: set[str]) -> list[Shape]:
    """The settled candidates of these searches and probe photos (at most 4096)."""
    if not requests and not probes:
        return []
    c = schema.candidates
    ids = conn.execute(
        select(c.c.id).where(c.c.status != review.PENDING,
                             or_(c.c.request_id.in_(sorted(requests)),
                                 c.c.probe_sha256.in_(sorted(probes))))
        .order_by(c.c.created_at, c.c.id).limit(4096)).scalars().all()
    return [review.get(conn, i) for i in ids]


def _ranks(conn: Connection, request_id: str | None) -> dict[str, int]:
    """Rank (1 = highest Similarity) of every candidate the search `request_id` held."""
    if not request_id:
        return {}
    c = schema.candidates
    rows = conn.execute(select(c.c.id, c.c.similarity).where(c.c.request_id == request_id)).all()
    ordered = sorted(rows, key=lambda r: (-float(r.similarity), r.id))
    return {r.id: i + 1 for i, r in enumerate(ordered)}


def event_visible(ctx: RequestContext, collection: Any, principal: Any) -> bool:
    """Whether the caller may see an event: one naming a collection it may see, or, without a
    collection, any (unscoped callers) or its own (a scoped caller: other keys' key, job and
    queue events may concern collections outside its scope)."""
    if isinstance(collection, str):
        return ctx.may_name(collection)
    return "*" in ctx.collections or principal == ctx.principal


def _event_row(r: Any) -> Shape:
    """A ledger row with what an auditor looks for: the decision and the candidates."""
    row: Shape = {"Seq": int(r.seq), "Hash": r.hash, "Time": r.time, "Operation": r.operation,
                  "Principal": r.principal, "CollectionId": r.collection,
                  "Purpose": r.purpose, "CaseReference": r.case_ref, "Outcome": r.outcome,
                  "Decision": None, "CandidateIds": [], "Rule": None}
    try:
        body = json.loads(r.body)
    except ValueError:
        return row
    if not isinstance(body, dict):
        return row
    result = body.get("result") or {}
    params = body.get("params") or {}
    row["Rule"] = body.get("rule")
    if r.operation == "ReviewCandidate":
        row["Decision"] = params.get("decision")
        row["Status"] = result.get("status")
        cid = params.get("candidate_id") or result.get("candidate_id")
        row["CandidateIds"] = [cid] if cid else []
    elif r.operation == "ResolveConflict":
        row["Decision"] = "RESOLVE"
        row["CandidateIds"] = list(result.get("candidate_ids") or [])
    elif r.operation in ("ViewCandidate", REVEAL_SCORES):
        cid = result.get("candidate_id")
        row["CandidateIds"] = [cid] if cid else []
    else:
        row["CandidateIds"] = list(result.get("held_for_review") or [])
    return row


def _group_rows(coverage: Any) -> list[Shape]:
    """One row per group the calibration measured: people, impostor pairs, whether the
    published rate covers it, and at each shipped threshold the group's own false matches
    (count of pairs), rate and 95% Wilson interval. Tables of format 4 and later measure
    groups on held-out people and decide coverage per threshold ("covered", "not shown",
    "broken"); older ones decided it per group."""
    if not isinstance(coverage, Mapping):
        return []
    held = coverage.get("held_out")
    per_threshold = isinstance(held, Mapping)
    groups = held.get("groups", []) if isinstance(held, Mapping) else coverage.get("groups", [])
    rows: list[Shape] = []
    for g in groups:
        pairs = int(g["impostor_pairs"])
        points = []
        for t in g.get("thresholds" if per_threshold else "at_thresholds", []):
            k = int(t["impostor_matches"])
            lo, hi = wilson_interval(k, pairs)
            low = 0.0 if k == 0 else float(lo)  # (not 1e-19 from rounding)
            promised = float(t.get("promised_fmr", 1.0 - float(t["similarity"]) / 100.0))
            raw = t.get("fmr")
            fmr = float(raw.get("value") or 0.0) if isinstance(raw, Mapping) else float(raw or 0.0)
            status = str(t["status"]) if per_threshold else ("covered" if g["covered"] else "not covered")
            points.append({"Similarity": float(t["similarity"]),
                           "PromisedFalseMatchRate": promised,
                           "FalseMatches": k, "FalseMatchRate": fmr,
                           "Low": low, "High": float(hi), "Status": status,
                           "StatusWords": STATUS_WORDS.get(status, status),
                           # above the promise beyond chance: the whole interval is above it
                           "AbovePromise": low > promised,
                           "PointAbovePromise": fmr > promised})
        # covered at every threshold checked (a summary for code; pages state it per threshold)
        covered = all(p["Status"] == "covered" for p in points) if per_threshold else bool(g["covered"])
        rows.append({"Group": g["group"], "People": int(g["people"] if per_threshold else g["images"]),
                     "ImpostorPairs": pairs, "Covered": covered, "HeldOut": per_threshold,
                     "CoveredThrough": g.get("covered_through"), "AtThresholds": points})
    return rows
