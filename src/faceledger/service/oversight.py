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
from typing import Any

from sqlalchemy import Connection, select

from ..calibration.coverage import coverage_lines
from ..context import LOCAL, RequestContext
from ..errors import (
    InvalidParameterException,
    PolicyRefusedException,
    ResourceNotFoundException,
)
from ..ledger import review, schema
from ..ledger.events import SEARCH_OPERATIONS, format_time, parse_time
from ..ledger.policy import check_collection_id, load_policy
from ..ledger.refusals import RoleRequired
from ..shapes import Shape
from .governance import GovernanceOperations
from .users import UserOperations

REVIEW_READERS = ("reviewer", "auditor")
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

    def review_queue(self, *, ctx: RequestContext = LOCAL, limit: int = 200) -> Shape:
        """Pending candidates of the collections the caller may see, oldest first, each with
        its search's FacesSearched and ExpectedFalseMatches (the view is logged)."""
        self._need_role("ViewReviewQueue", ctx, REVIEW_READERS)
        with self.ledger.engine.connect() as conn:
            found = review.query(conn, status=review.PENDING, limit=4096)
            shown = [c for c in found if ctx.may_name(c["CollectionId"])][:limit]
            for cand in shown:
                cand["Search"] = _search_facts(conn, cand["RequestId"])
        with self.audit("ViewReviewQueue", ctx, uses_model=False) as op:
            op.record(candidate_ids=[c["CandidateId"] for c in shown])
        return {"Candidates": shown, "PublishedErrorRates": self.published_error_rates()}

    def review_case_file(self, candidate_id: str, *, ctx: RequestContext = LOCAL) -> Shape:
        """One candidate with what a reviewer checks: the probe's recorded SHA-256 and face
        geometry, the enrolled face's SHA-256 (from its IndexFaces) and geometry, the search's
        facts and the model's error rates. Logged as a ViewCandidate event."""
        self._need_role("ViewCandidate", ctx, REVIEW_READERS)
        cand = self.get_review_candidate(candidate_id, ctx=ctx)
        cid = cand["CollectionId"]
        self._need_role("ViewCandidate", ctx, REVIEW_READERS, cid)
        enrolled: Shape | None = None
        with self.ledger.engine.connect() as conn:
            search = _search_facts(conn, cand["RequestId"])
            if cand["FaceId"]:
                enrolled = self._enrolled_face(conn, cid, cand["FaceId"])
        # the view belongs to the search's case, so the case export shows who saw it
        vctx = dataclasses.replace(ctx, case=ctx.case or cand["CaseReference"],
                                   purpose=ctx.purpose or cand["Purpose"])
        with self.audit("ViewCandidate", vctx, collection=cid, uses_model=False) as op:
            op.record(candidate_id=cand["CandidateId"],
                      face_ids=[cand["FaceId"]] if cand["FaceId"] else [],
                      search_request_id=cand["RequestId"])
        return {"Candidate": cand, "Search": search, "EnrolledFace": enrolled,
                "PublishedErrorRates": self.published_error_rates()}

    def _enrolled_face(self, conn: Connection, cid: str, face_id: str) -> Shape:
        """The face's record in the catalog and the IndexFaces event that added it."""
        face: Shape = {"FaceId": face_id, "InCatalog": False}
        with self.catalog.read() as cconn:
            coll = self.catalog.collection(cconn, cid)
            rows = self.catalog.faces_by_id(cconn, coll.pk, [face_id])
        row = rows.get(face_id)
        if row is not None:
            w, h, left, top = row.box
            face.update({
                "InCatalog": True,
                "ExternalImageId": row.external_image_id,
                "ImageSha256": row.image_sha256,
                "BoundingBox": {"Width": w, "Height": h, "Left": left, "Top": top},
                "Landmarks": [{"Type": t, "X": x, "Y": y} for t, x, y in row.landmarks],
            })
        indexed = _index_event(conn, cid, face_id)
        face.setdefault("ImageSha256", None)
        if indexed is not None:
            face["IndexFacesEvent"] = indexed["seq"]
            face["IndexFacesImageSha256"] = indexed["image_sha256"]
        # The ledger's record is the authority; the catalog's copy serves faces whose
        # IndexFaces event is not found. Both are shown when they differ.
        face["ExpectedSha256"] = face.get("IndexFacesImageSha256") or face["ImageSha256"]
        return face

    def published_error_rates(self) -> Shape:
        """The model's published error rates from its calibration table: operating points,
        and per group where the table measured groups (rows as the table gives them)."""
        try:
            table = self.calibration
        except LookupError:
            return {"ModelVersion": self.pipeline.model_version, "Available": False}
        points = []
        for fmr in (1e-3, 1e-4, 1e-5):
            d = table.distance_for_fmr(fmr)
            points.append({"Similarity": 100 * (1 - fmr), "FalseMatchRate": fmr,
                           "FalseNonMatchRate": float(table.fnmr_at(d)),
                           "Credible": table.is_credible(fmr)})
        prov = table.provenance
        return {"ModelVersion": table.model_version, "Available": True,
                "Dataset": (prov.get("dataset") or {}).get("name"),
                "LowestCredibleFalseMatchRate": table.lowest_credible_fmr,
                "OperatingPoints": points,
                # the summary lines; the per-group lines are the rows of Groups
                "Populations": [ln for ln in coverage_lines(table) if not ln.startswith("  ")],
                "Groups": _group_rows(prov.get("coverage"))}

    def calibration_curve(self, points: int = 60) -> Shape:
        """The calibration as (distance, Similarity, FMR, FNMR) points for a chart."""
        t = self.calibration
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
                      ctx: RequestContext = LOCAL) -> Shape:
        """Events matching the filters, newest first (auditors; events hold hashes and ids,
        never images or templates, so browsing them is not itself logged)."""
        self._need_role("ListLedgerEvents", ctx, LEDGER_READERS)
        if not 1 <= limit <= MAX_EVENTS:
            raise InvalidParameterException(f"MaxResults must be from 1 to {MAX_EVENTS}.")
        e = schema.events
        columns = {"operation": e.c.operation, "collection": e.c.collection,
                   "principal": e.c.principal, "purpose": e.c.purpose, "case": e.c.case_ref,
                   "outcome": e.c.outcome}
        q = select(e.c.seq, e.c.hash, e.c.time, e.c.operation, e.c.principal, e.c.collection,
                   e.c.purpose, e.c.case_ref, e.c.outcome)
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
        if before_seq is not None:
            q = q.where(e.c.seq < before_seq)
        with self.ledger.engine.connect() as conn:
            rows = conn.execute(q.order_by(e.c.seq.desc()).limit(limit + 1)).all()
        events = [{"Seq": int(r.seq), "Hash": r.hash, "Time": r.time, "Operation": r.operation,
                   "Principal": r.principal, "CollectionId": r.collection,
                   "Purpose": r.purpose, "CaseReference": r.case_ref, "Outcome": r.outcome}
                  for r in rows[:limit]
                  if r.collection is None or ctx.may_name(r.collection)]
        out: Shape = {"Events": events}
        if len(rows) > limit:
            out["NextBeforeSeq"] = int(rows[limit - 1].seq)
        return out

    def ledger_event(self, seq: int, *, ctx: RequestContext = LOCAL) -> Shape:
        """One stored event: its body as hashed, its hash and the hash it links to."""
        self._need_role("GetLedgerEvent", ctx, LEDGER_READERS)
        stored = self.ledger.get(seq)
        if stored is None:
            raise ResourceNotFoundException(f"The ledger has no event #{seq}.")
        body = json.loads(stored.body)
        coll = body.get("collection") if isinstance(body, dict) else None
        if isinstance(coll, str) and not ctx.may_name(coll):
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
        return self.transparency_report(time_from, time_to, ctx=ctx)

    # -- collections -------------------------------------------------------------------

    def visible_collections(self, *, ctx: RequestContext = LOCAL) -> list[Shape]:
        """The collections the caller may see, with face counts and model versions."""
        self._need_role("ListCollections", ctx, ("reviewer", "auditor", "admin"))
        with self.catalog.read() as conn:
            rows = self.catalog.list_collections(conn, None, 10_000)
        return [{"CollectionId": r.collection_id, "FaceCount": r.face_count,
                 "FaceModelVersion": r.face_model_version}
                for r in rows if ctx.may_name(r.collection_id)]

    def collection_overview(self, collection_id: str, *, ctx: RequestContext = LOCAL) -> Shape:
        """A collection's faces, users, policy, retention and model (ListFaces is logged)."""
        cid = check_collection_id(collection_id)
        self._need_role("ViewCollection", ctx, ("reviewer", "auditor", "admin"), cid)
        described = self.describe_collection(cid, ctx=ctx)
        out: Shape = {"CollectionId": cid, "Description": described, "Faces": [], "Users": []}
        try:
            out["Faces"] = self.list_faces(cid, max_results=100, ctx=ctx).get("Faces", [])
            out["Users"] = self.list_users(cid, max_results=100, ctx=ctx).get("Users", [])
        except PolicyRefusedException as exc:
            # the collection's policy (e.g. RequirePurpose) refused the listing; it is logged
            out["ListingRefused"] = exc.message
        with self.ledger.engine.connect() as conn:
            policy = load_policy(conn, cid)
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


def _search_facts(conn: Connection, request_id: str | None) -> Shape:
    """FacesSearched, FalseMatchRate and ExpectedFalseMatches of the search event `request_id`."""
    if not request_id:
        return {}
    e = schema.events
    rows = conn.execute(
        select(e.c.seq, e.c.body).where(e.c.operation.in_(sorted(SEARCH_OPERATIONS)),
                                        e.c.body.like(f'%"request_id":"{_like(request_id)}"%',
                                                      escape="\\"))
    ).all()
    for seq, text in rows:
        body = json.loads(text)
        if body.get("request_id") != request_id:
            continue
        result, thresholds = body.get("result") or {}, body.get("thresholds") or {}
        return {"EventSeq": int(seq), "Time": body.get("time"),
                "FacesSearched": result.get("compared"),
                "ExpectedFalseMatches": result.get("expected_false_matches"),
                "ThresholdFalseMatchRate": thresholds.get("FalseMatchRate"),
                "ProbeImageSha256": (body.get("images") or [None])[0]}
    return {}


def _index_event(conn: Connection, cid: str, face_id: str) -> Shape | None:
    """The IndexFaces event that added `face_id` to `cid`: its seq and image SHA-256."""
    e = schema.events
    rows = conn.execute(
        select(e.c.seq, e.c.body).where(e.c.operation == "IndexFaces", e.c.collection == cid,
                                        e.c.outcome == "done",
                                        e.c.body.like(f"%{_like(face_id)}%", escape="\\"))
    ).all()
    for seq, text in rows:
        body = json.loads(text)
        if face_id in ((body.get("result") or {}).get("face_ids") or []):
            images = body.get("images") or [None]
            return {"seq": int(seq), "image_sha256": images[0]}
    return None


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _group_rows(coverage: Any) -> list[Shape]:
    """One row per group the calibration measured: people, pairs, whether the promise covers
    it (per threshold where the table checked it on held-out people), and the group's own FMR
    at the shipped 99.9 / 99.99 / 99.999 thresholds."""
    if not isinstance(coverage, Mapping):
        return []
    held = coverage.get("held_out")
    if isinstance(held, Mapping):
        rows: list[Shape] = []
        for g in held.get("groups", []):
            row: Shape = {"Group": g["group"], "Held-out people": g["people"],
                          "Impostor pairs": g["impostor_pairs"]}
            for t in g["thresholds"]:
                status = {"covered": "yes", "not shown": "no (not shown)",
                          "broken": "NO (broken)"}.get(t["status"], "no")
                row[f"Covered at {t['similarity']:g}"] = status
                fmr = t.get("fmr")
                if isinstance(fmr, Mapping) and fmr.get("value") is not None:
                    row[f"FMR at {t['similarity']:g}"] = (
                        f"{fmr['value']:.1e} ({t['impostor_matches']} of "
                        f"{g['impostor_pairs']:,})")
            rows.append(row)
        return rows
    rows = []
    for g in coverage.get("groups", []):
        row = {"Group": g["group"], "People": g["images"],
               "Impostor pairs": g["impostor_pairs"],
               "Covered": ("yes" if g["covered"] else "no")
               + (f" (through {g['covered_through']})" if g.get("covered_through") else "")}
        for t in g.get("at_thresholds", []):
            row[f"FMR at {t['similarity']:g}"] = (f"{t['fmr']:.1e} ({t['impostor_matches']} of "
                                                   f"{g['impostor_pairs']:,})")
        rows.append(row)
    return rows
