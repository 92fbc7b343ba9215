"""Collections, faces, users and search: Rekognition's collection operations over the store.

Every operation runs inside the audit hook (`self.audit`, see ledger/audit.py): the collection's
policy is checked on entry, each write happens in the hook's one transaction (`op.conn`, taken
right after the collection's row lock, so locks go collection first, ledger head second) and the
ledger event is appended in it, so a change and its event commit together or not at all.
Validation errors leave no event; policy refusals are logged as refused and change nothing.

Each collection keeps the face model that made its templates (`FaceModelVersion`): indexing
into it and searching it embed with that model, whatever the configured default (which new
collections get), and score with that model's calibration table.

Searches re-score the index's candidates exactly from the catalog's templates, report calibrated
Similarity, and state how many faces were searched and how many false matches the threshold
lets through on average (see store/thresholds.py for the default threshold); the threshold goes
through the policy's floor first, and in identification mode matches are held for review.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Connection

from ..context import LOCAL, RequestContext
from ..calibration import CalibrationTable
from ..errors import (
    InvalidParameterException,
    ResourceNotReadyException,
)
from ..imaging import AnalysedImage, DecodedImage
from ..ledger import AuditedOperation
from ..ledger.lookup import index_event
from ..model_versions import canonical
from ..shapes import Shape, bounding_box, face_detail, landmarks, pose_quality
from ..sources import ImageInput
from ..store import Catalog, CollectionRow, FaceRow, NewFace, VectorIndex, open_store
from ..store.catalog import request_hash
from ..store.thresholds import (
    default_search_fmr,
    fmr_for_similarity,
    similarity_for_fmr,
)
from ..vision.quality import QUALITY_FILTERS, quality_reasons
from ..vision.types import FaceAnalysis
from . import collection_members as m
from . import paging
from .core import ServiceCore, check_enum
from .images import attributes_not_returned
from .source_faces import NOT_IN_SOURCE, ReenrolSource, SourceFace, link_faces, match_faces

ARN_PREFIX = "arn:faceledger:rekognition:local:000000000000:collection/"

MAX_SEARCH_FACES = 4096
# With score normalisation the index's raw-distance ranking is re-scored: candidates fetched
# per face asked for (at least EXTRA more), so that a face moved up by normalisation is seen.
NORMALISED_CANDIDATES_FACTOR = 4
NORMALISED_CANDIDATES_EXTRA = 64
DEFAULT_SEARCH_FACES = 100
DEFAULT_LIST_RESULTS = 1000
MAX_LIST_RESULTS = 4096


_STORE_LOCK = threading.Lock()


class CollectionOperations(ServiceCore):
    """CreateCollection ... SearchUsersByImage (Rekognition request and response shapes)."""

    @property
    def _store(self) -> tuple[Catalog, VectorIndex]:
        store: tuple[Catalog, VectorIndex] | None = self.__dict__.get("_opened_store")
        if store is None:
            with _STORE_LOCK:  # two first requests at once must not open two indexes
                store = self.__dict__.get("_opened_store")
                if store is None:
                    store = open_store(self.settings, self.engine)
                    self.__dict__["_opened_store"] = store
        return store

    @property
    def catalog(self) -> Catalog:
        """The SQL catalog (collections, faces with templates, users)."""
        return self._store[0]

    @property
    def index(self) -> VectorIndex:
        """The vector index configured in settings."""
        return self._store[1]

    def close(self) -> None:
        """Snapshot what the vector index keeps in memory (a clean shutdown reopens fast)."""
        if "_opened_store" in self.__dict__:
            self.index.close()

    # --- collections -------------------------------------------------------------------------

    def create_collection(self, collection_id: str | None = None,
                          tags: Mapping[str, str] | None = None, *,
                          face_model_version: str | None = None,
                          ctx: RequestContext = LOCAL) -> Shape:
        """CreateCollection: an empty collection bound to the configured face model, or to
        `face_model_version` (not a Rekognition parameter: the CLI and Python API's, for
        re-enrolment into a chosen model)."""
        cid = m.collection_id(collection_id)
        tag_map = m.tags(tags)
        model = self.pipeline.model_version if face_model_version is None else (
            m.model_version(face_model_version))
        dim = int(self.pipeline.embedder_for(model).dim)  # the model must run here
        with self.audit("CreateCollection", ctx, collection=cid) as op:
            op.model_version = model
            op.note(TagKeys=sorted(tag_map) if tag_map else None)
            conn = op.conn  # the insert takes the write lock before the ledger head
            coll = self.catalog.create_collection(conn, cid, model, dim, tag_map)
            self.index.create_collection(conn, coll.pk, dim)
            op.record(collection_arn=ARN_PREFIX + cid, face_model_version=model)
        return {"StatusCode": 200, "CollectionArn": ARN_PREFIX + cid, "FaceModelVersion": model}

    def delete_collection(self, collection_id: str | None = None, *,
                          ctx: RequestContext = LOCAL) -> Shape:
        """DeleteCollection: the collection and every face, template and user it held."""
        cid = m.collection_id(collection_id)
        with self.audit("DeleteCollection", ctx, collection=cid, uses_model=False) as op:
            conn = op.conn
            coll = self.catalog.lock_collection(conn, cid)
            users = self.catalog.user_count(conn, coll.pk)
            self.index.drop_collection(conn, coll.pk)
            self.catalog.delete_collection(conn, cid)
            op.collection_deleted(coll.face_count)
            op.record(users=users)
        self.index.forget(coll.pk)  # only once the deletion (and its event) committed
        return {"StatusCode": 200}

    def list_collections(self, next_token: str | None = None, max_results: int | None = None,
                         *, ctx: RequestContext = LOCAL) -> Shape:
        """ListCollections, in collection id order, NextToken paging."""
        limit = m.page_size(max_results, DEFAULT_LIST_RESULTS, MAX_LIST_RESULTS, "MaxResults")
        start = None if next_token is None else paging.read_token(next_token, "c", 0)
        with self.audit("ListCollections", ctx, uses_model=False) as op:
            with self.catalog.read() as conn:
                rows = self._visible_collections(conn, start, limit + 1, ctx)
            op.record(collections=min(len(rows), limit))  # a count only
        page = rows[:limit]
        out: dict[str, Any] = {
            "CollectionIds": [c.collection_id for c in page],
            "FaceModelVersions": [c.face_model_version for c in page],
        }
        if len(rows) > limit:
            out["NextToken"] = paging.make_token("c", 0, page[-1].pk, page[-1].collection_id)
        return out

    def _visible_collections(self, conn: Connection, start: paging.Position | None, n: int,
                             ctx: RequestContext) -> list[CollectionRow]:
        """Up to `n` collections the caller may name, in id order, after `start`."""
        after: str | None = None
        if start is not None:
            last = self.catalog.collection_by_pk(conn, start.row_pk)
            # deleted, or not the caller's to see (indistinguishable): resume after the prefix
            usable = (last is not None and ctx.may_name(last.collection_id)
                      and last.collection_id.startswith(start.prefix))
            after = last.collection_id if usable and last is not None else start.prefix
        found: list[CollectionRow] = []
        batch = max(n, 100)
        while len(found) < n:
            rows = self.catalog.list_collections(conn, after, batch)
            found += [r for r in rows if ctx.may_name(r.collection_id)]
            if len(rows) < batch:
                break
            after = rows[-1].collection_id
        return found[:n]

    def describe_collection(self, collection_id: str | None = None, *,
                            ctx: RequestContext = LOCAL) -> Shape:
        """DescribeCollection: face and user counts, model version, ARN, creation time."""
        cid = m.collection_id(collection_id)
        with self.audit("DescribeCollection", ctx, collection=cid, uses_model=False) as op:
            with self.catalog.read() as conn:
                coll = self.catalog.collection(conn, cid)
                users = self.catalog.user_count(conn, coll.pk)
            op.record(face_count=coll.face_count, user_count=users)
        return {
            "FaceCount": coll.face_count,
            "FaceModelVersion": coll.face_model_version,
            "CollectionARN": ARN_PREFIX + cid,
            # epoch seconds: the JSON protocol's timestamp form (boto3 makes it a datetime)
            "CreationTimestamp": coll.created_at,
            "UserCount": users,
        }

    # --- faces -------------------------------------------------------------------------------

    def index_faces(self, collection_id: str | None = None, image: ImageInput | None = None,
                    external_image_id: str | None = None,
                    detection_attributes: Sequence[str] | None = None,
                    max_faces: int | None = None, quality_filter: str | None = None, *,
                    reenrol_from: ReenrolSource | None = None,
                    ctx: RequestContext = LOCAL, analysed: AnalysedImage | None = None) -> Shape:
        """IndexFaces: detect, filter by quality (default AUTO), keep the MaxFaces largest, store
        their templates (never the photo). `reenrol_from` (re-enrolment, not a Rekognition
        parameter): keep only the faces of the photo that are these source faces, each with its
        source face's ExternalImageId, user and retention clock, and link them in the event.

        `analysed` (bulk enrolment only, never from a request): the image was decoded and its
        faces found and embedded by a worker elsewhere with the collection's model; `image` is
        then not read, and everything else (checks, quality filter, catalog, index, ledger
        event) is as for any request."""
        cid = m.collection_id(collection_id)
        ext = None if external_image_id is None else m.match(
            external_image_id, m.EXTERNAL_IMAGE_ID, "ExternalImageId")
        m.attributes(detection_attributes, "DetectionAttributes")
        limit = None if max_faces is None else m.integer(max_faces, 1, (1 << 31) - 1, "MaxFaces")
        qf = "AUTO" if quality_filter is None else check_enum(
            quality_filter, QUALITY_FILTERS, "QualityFilter")
        # consent and purpose are checked on entry, before the photo is even decoded
        with self.audit("IndexFaces", ctx, collection=cid) as op:
            with self.catalog.read() as conn:
                model = self._usable(self.catalog.collection(conn, cid), op).face_model_version
            img: DecodedImage | AnalysedImage
            if analysed is None:
                img = self.decode(m.image(image), ctx=ctx)
            else:
                if canonical(analysed.model_version) != canonical(model):
                    raise InvalidParameterException(
                        f"The image was analysed with face model {analysed.model_version}, "
                        f"not {model}.")
                img = analysed
            op.image(img.sha256)
            op.note(MaxFaces=limit, QualityFilter=qf, ExternalImageId=ext,
                    DetectionAttributes=list(detection_attributes or []) or None)
            found = (self.pipeline.analyze(img.pixels, embed=True, model_version=model)
                     if isinstance(img, DecodedImage) else img.faces)
            carried: dict[int, SourceFace] = {}
            if reenrol_from is not None:
                op.note(ReenrolRun=reenrol_from.run_id,
                        SourceCollectionId=reenrol_from.collection_id,
                        SourceFaceModelVersion=reenrol_from.model_version)
                carried = {i: reenrol_from.faces[j] for i, j in match_faces(
                    reenrol_from.faces,
                    [{"BoundingBox": bounding_box(f.box, img.width, img.height),
                      "Landmarks": landmarks(f, img.width, img.height)} for f in found],
                    img.width, img.height).items()}
            chosen: list[FaceAnalysis] = []
            sources: list[SourceFace | None] = []
            unindexed: list[Shape] = []
            for i, face in enumerate(found):
                reasons = quality_reasons(qf, face.confidence, face.box, face.pose, face.quality)
                if reenrol_from is not None and i not in carried:
                    reasons = [NOT_IN_SOURCE]  # a face the source collection never held
                if not reasons and limit is not None and len(chosen) >= limit:
                    reasons = ["EXCEEDS_MAX_FACES"]
                if reasons:
                    unindexed.append({"Reasons": reasons,
                                      "FaceDetail": face_detail(face, img.width, img.height)})
                else:
                    chosen.append(face)
                    sources.append(carried.get(i))
            image_id = m.new_id()
            new = [
                NewFace(
                    face_id=m.new_id(), image_id=image_id,
                    external_image_id=ext if sf is None else sf.external_image_id,
                    box=m.box(bounding_box(f.box, img.width, img.height)),
                    confidence=f.confidence, embedding=m.template(f),
                    image_sha256=img.sha256,
                    landmarks=tuple((lm["Type"], lm["X"], lm["Y"])
                                    for lm in landmarks(f, img.width, img.height)),
                    detail=pose_quality(f),
                )
                for f, sf in zip(chosen, sources)
            ]
            keys: list[int] = []
            coll_pk = 0
            if new:
                conn = op.conn  # the write transaction: collection lock first
                coll = self._usable(self.catalog.lock_collection(conn, cid), op, model)
                keys = self.catalog.add_faces(conn, coll, new)
                coll_pk = coll.pk
                self.index.add(conn, coll.pk, keys,
                               np.stack([n.embedding for n in new]).astype(np.float32))
            op.indexed([n.face_id for n in new])
            link: Shape = {}
            if reenrol_from is not None:  # after `indexed`: the source's retention clocks win
                link = link_faces(self.catalog, op, reenrol_from, coll_pk, {
                    n.face_id: (key, sf) for n, key, sf in zip(new, keys, sources)
                    if sf is not None})
                op.record(**link)
            op.record(faces_detected=len(found), unindexed=[u["Reasons"] for u in unindexed])
            if new:
                op.record(image_id=image_id)
        records = []
        for n, f in zip(new, chosen):
            shape: dict[str, Any] = {
                "FaceId": n.face_id,
                "BoundingBox": bounding_box(f.box, img.width, img.height),
                "ImageId": n.image_id,
                "Confidence": f.confidence,
                "IndexFacesModelVersion": model,
            }
            if n.external_image_id is not None:
                shape["ExternalImageId"] = n.external_image_id
            records.append({"Face": shape, "FaceDetail": face_detail(f, img.width, img.height)})
        out = {"FaceRecords": records, "FaceModelVersion": model, "UnindexedFaces": unindexed,
               **attributes_not_returned(detection_attributes)}
        if reenrol_from is not None:  # faceledger's, for the re-enrolment report
            out["SourceFaceIds"] = link["source_face_ids"]
            out["SourceFacesNotFound"] = link["source_faces_not_found"]
        return out

    def list_faces(self, collection_id: str | None = None, next_token: str | None = None,
                   max_results: int | None = None, user_id: str | None = None,
                   face_ids: Sequence[str] | None = None, *,
                   ctx: RequestContext = LOCAL) -> Shape:
        """ListFaces: faces in index order, optionally of one user or among FaceIds."""
        cid = m.collection_id(collection_id)
        limit = m.page_size(max_results, DEFAULT_LIST_RESULTS, MAX_LIST_RESULTS, "MaxResults")
        uid = None if user_id is None else m.match(user_id, m.USER_ID, "UserId")
        fids = None if face_ids is None else m.face_ids(face_ids, "FaceIds", 1, 4096)
        with self.audit("ListFaces", ctx, collection=cid, uses_model=False) as op:
            op.note(UserId=uid, FaceIds=fids, MaxResults=limit)
            with self.catalog.read() as conn:
                coll = self.catalog.collection(conn, cid)
                after = 0 if next_token is None else (
                    paging.read_token(next_token, "f", coll.pk).row_pk)
                user_pk: int | None = None
                rows: list[FaceRow] = []
                if uid is not None:
                    user = self.catalog.user(conn, coll.pk, uid)
                    user_pk = -1 if user is None else user.pk
                rows = self.catalog.list_faces(conn, coll.pk, after, limit + 1, user_pk, fids)
            page = rows[:limit]
            op.record(face_ids=[r.face_id for r in page], more=len(rows) > limit)
        out: dict[str, Any] = {
            "Faces": [m.face_shape(r, coll.face_model_version) for r in page],
            "FaceModelVersion": coll.face_model_version,
        }
        if len(rows) > limit:
            out["NextToken"] = paging.make_token("f", coll.pk, page[-1].pk)
        return out

    def delete_faces(self, collection_id: str | None = None,
                     face_ids: Sequence[str] | None = None, *,
                     ctx: RequestContext = LOCAL) -> Shape:
        """DeleteFaces: templates leave catalog and index together; faces of a user stay."""
        cid = m.collection_id(collection_id)
        fids = m.face_ids(face_ids, "FaceIds", 1, 4096)
        with self.audit("DeleteFaces", ctx, collection=cid, uses_model=False) as op:
            deleted, failed = self._delete_faces(op.conn, cid, fids)  # locks the collection
            op.deleted(deleted)
            op.record(unsuccessful=m.unsuccessful(failed))
        return {"DeletedFaces": deleted, "UnsuccessfulFaceDeletions": failed}

    def remove_faces(self, conn: Connection, collection_id: str,
                     face_ids: Sequence[str]) -> list[str]:
        """Delete faces inside the caller's transaction (retention sweeps), faces of users
        included (retention outranks association); the ids that existed and were deleted."""
        return self._delete_faces(conn, collection_id, list(face_ids), force=True)[0]

    def _delete_faces(self, conn: Connection, cid: str, fids: list[str], force: bool = False
                      ) -> tuple[list[str], list[Shape]]:
        deleted: list[str] = []
        failed: list[Shape] = []
        coll = self.catalog.lock_collection(conn, cid)
        found = self.catalog.faces_by_id(conn, coll.pk, fids)
        keys = []
        for fid in dict.fromkeys(fids):
            row = found.get(fid)
            if row is None:
                failed.append({"FaceId": fid, "Reasons": ["FACE_NOT_FOUND"]})
            elif row.user_id is not None and not force:
                failed.append({"FaceId": fid, "UserId": row.user_id,
                               "Reasons": ["ASSOCIATED_TO_AN_EXISTING_USER"]})
            else:
                deleted.append(fid)
                keys.append(row.pk)
        self.catalog.delete_faces(conn, coll, keys)
        self.index.remove(conn, coll.pk, keys)
        return deleted, failed

    # --- search ------------------------------------------------------------------------------

    def search_faces(self, collection_id: str | None = None, face_id: str | None = None,
                     max_faces: int | None = None, face_match_threshold: float | None = None,
                     *, ctx: RequestContext = LOCAL) -> Shape:
        """SearchFaces: faces like a stored face (the face itself excluded)."""
        cid = m.collection_id(collection_id)
        fid = m.face_id(face_id, "FaceId")
        k = m.page_size(max_faces, DEFAULT_SEARCH_FACES, MAX_SEARCH_FACES, "MaxFaces", low=1)
        threshold = m.threshold(face_match_threshold, "FaceMatchThreshold")
        with self.audit("SearchFaces", ctx, collection=cid) as op:
            op.note(FaceId=fid, MaxFaces=k)
            with self.catalog.read() as conn:
                # templates are compared with templates: the model itself need not be loaded
                coll = self._usable(self.catalog.collection(conn, cid), op, embeds=False)
                probe = self.catalog.faces_by_id(conn, coll.pk, [fid],
                                                 with_embedding=True).get(fid)
            if probe is None or probe.embedding is None:
                raise InvalidParameterException(f"faceId {fid} was not found in the collection.")
            # held candidates' probe photo: the face's, as its IndexFaces event recorded it
            indexed = index_event(op.conn, cid, fid)
            op.probe_sha256 = indexed["image_sha256"] if indexed else probe.image_sha256
            searched = max(coll.face_count - 1, 0)  # the searched face itself is excluded
            point = self._threshold(op, coll, threshold, searched, "FaceMatchThreshold")
            matches, info = self._search(coll, probe.embedding, k, point, searched,
                                         exclude={probe.pk})
            response = {"SearchedFaceId": fid, "FaceMatches": matches,
                        "FaceModelVersion": coll.face_model_version, **info}
            return op.release(response, "FaceMatches", compared=searched)

    def search_faces_by_image(self, collection_id: str | None = None,
                              image: ImageInput | None = None, max_faces: int | None = None,
                              face_match_threshold: float | None = None,
                              quality_filter: str | None = None, *,
                              ctx: RequestContext = LOCAL) -> Shape:
        """SearchFacesByImage: faces like the largest face in the image."""
        cid = m.collection_id(collection_id)
        k = m.page_size(max_faces, DEFAULT_SEARCH_FACES, MAX_SEARCH_FACES, "MaxFaces", low=1)
        threshold = m.threshold(face_match_threshold, "FaceMatchThreshold")
        qf = "NONE" if quality_filter is None else check_enum(
            quality_filter, QUALITY_FILTERS, "QualityFilter")
        with self.audit("SearchFacesByImage", ctx, collection=cid) as op:
            op.note(MaxFaces=k, QualityFilter=qf)
            with self.catalog.read() as conn:
                coll = self._usable(self.catalog.collection(conn, cid), op)
            model = coll.face_model_version
            # the floor is checked before the photo is processed (a refusal analyses nothing)
            point = self._threshold(op, coll, threshold, coll.face_count, "FaceMatchThreshold")
            img = self.decode(m.image(image), ctx=ctx)
            op.image(img.sha256)
            faces = self.pipeline.analyze(img.pixels, embed=False, model_version=model)
            usable = [f for f in faces
                      if not quality_reasons(qf, f.confidence, f.box, f.pose, f.quality)]
            if not usable:
                raise InvalidParameterException(
                    "No face was found in Image"
                    + ("" if qf == "NONE" or not faces else f" that meets QualityFilter {qf}")
                    + ".")
            face = usable[0]
            # where the probe's face is, kept with any review candidate (never the photo)
            op.probe_face = {"BoundingBox": bounding_box(face.box, img.width, img.height),
                             "Landmarks": landmarks(face, img.width, img.height),
                             # what the detector measured, shown to the reviewer
                             **pose_quality(face)}
            vec = self.pipeline.embed_boxes(img.pixels, [face.box], [face.landmarks],
                                            model_version=model)[0]
            with self.catalog.read() as conn:  # faces may have come and gone meanwhile
                coll = self._usable(self.catalog.collection(conn, cid), op, model)
            searched = coll.face_count
            matches, info = self._search(coll, vec, k, point, searched, exclude=set())
            response = {
                "SearchedFaceBoundingBox": bounding_box(face.box, img.width, img.height),
                "SearchedFaceConfidence": face.confidence,
                "FaceMatches": matches,
                "FaceModelVersion": coll.face_model_version,
                **info,
            }
            return op.release(response, "FaceMatches", compared=searched)

    def _search(self, coll: CollectionRow, probe: NDArray[np.float32], k: int,
                point: tuple[float, float], searched: int, exclude: set[int]
                ) -> tuple[list[Shape], Shape]:
        fmr, sim_threshold = point
        rows, dist = self._nearest(coll, [probe], k + len(exclude), exclude,
                                   min_similarity=sim_threshold)
        sims = self._calibration_of(coll).similarity(dist)
        order = [i for i in np.lexsort((np.arange(len(rows)), dist)) if sims[i] >= sim_threshold]
        matches = [{"Similarity": float(sims[i]),
                    "Face": m.face_shape(rows[i], coll.face_model_version)}
                   for i in order[:k]]
        return matches, self._info(coll, "FaceMatchThreshold", sim_threshold, fmr, searched)

    def _calibration_of(self, coll: CollectionRow) -> CalibrationTable:
        """The calibration table of the collection's model."""
        return self.calibration_for(coll.face_model_version)

    def _operating_point(self, coll: CollectionRow, threshold: float | None, searched: int
                         ) -> tuple[float, float]:
        """(FMR, Similarity threshold): the caller's, or the default for `searched` faces."""
        if threshold is None:
            fmr = default_search_fmr(searched, self.settings.search_expected_false_matches,
                                     self._calibration_of(coll).lowest_credible_fmr)
            return fmr, similarity_for_fmr(fmr)
        return fmr_for_similarity(threshold), threshold

    def _threshold(self, op: AuditedOperation, coll: CollectionRow, requested: float | None,
                   searched: int, name: str) -> tuple[float, float]:
        """The (FMR, Similarity) a search uses: the caller's threshold or the default for
        `searched` faces, after the collection policy's floor (a lower request is refused);
        recorded in the event with the exact FMR the response states."""
        fmr, default = self._operating_point(coll, None, searched)
        similarity = op.threshold(requested, default=default, name=name)
        if requested is not None or similarity != default:
            fmr = fmr_for_similarity(similarity)
        op.thresholds["FalseMatchRate"] = fmr
        return fmr, similarity

    def _nearest(self, coll: CollectionRow, probes: Sequence[NDArray[np.float32]], k: int,
                 exclude: set[int], with_user: bool = False,
                 min_similarity: float | None = None
                 ) -> tuple[list[FaceRow], NDArray[np.float64]]:
        """Candidate faces from the index, re-scored exactly: rows and their distance to the
        nearest probe (float64, from the catalog's templates). Candidates that cannot reach
        `min_similarity` are dropped before the catalog is read."""
        cal = self._calibration_of(coll)
        if cal.normaliser is not None:
            # The index ranks by raw distance; normalisation can reorder neighbours a little:
            # take more candidates than asked, re-score them all, keep the best.
            k = max(NORMALISED_CANDIDATES_FACTOR * k, k + NORMALISED_CANDIDATES_EXTRA)
        k = min(k, max(coll.face_count, 1))
        keys: dict[int, None] = {}
        for p in probes:
            near, approx = self.index.nearest(coll.pk, coll.version, p, k)
            if min_similarity is not None and len(near) and cal.normaliser is None:
                # The engine's distances, shrunk by more than their rounding error (float32, or
                # float16 templates in pgvector's halfvec): an optimistic similarity, so that
                # no face that really passes is dropped. (Normalised scores depend on each
                # face's template: all are re-scored below.)
                shrunk = np.maximum(approx.astype(np.float64)
                                    - self.index.distance_slack(p, approx), 0.0)
                near = near[cal.similarity(shrunk) >= min_similarity]
            for key in near.tolist():
                if key not in exclude:
                    keys[key] = None
        with self.catalog.read() as conn:
            found = self.catalog.faces_by_key(conn, coll.pk, list(keys), with_embedding=True)
        rows = [found[key] for key in keys if key in found
                and (not with_user or found[key].user_pk is not None)]
        if not rows:
            return [], np.zeros(0, dtype=np.float64)
        mat = np.stack([r.embedding for r in rows if r.embedding is not None])
        dist = cal.distances(np.stack(probes), mat).min(axis=0)
        return rows, dist

    def _info(self, coll: CollectionRow, name: str, similarity: float, fmr: float,
              searched: int) -> Shape:
        cal = self._calibration_of(coll)
        fnmr = float(cal.fnmr_at(cal.distance_for_fmr(fmr))) if fmr < 1.0 else 0.0
        return m.search_info(name, similarity, fmr, searched, fnmr)

    # --- helpers -----------------------------------------------------------------------------

    def _usable(self, coll: CollectionRow, op: AuditedOperation | None = None,
                model: str | None = None, *, embeds: bool = True) -> CollectionRow:
        """The collection, if this server can run its model (`embeds`: the operation embeds a
        photo with it); ResourceNotReadyException saying why not. The operation's event names
        the collection's model. `model`: the one the operation started with, which must still
        be the collection's (a collection deleted and re-created meanwhile may have another)."""
        version = coll.face_model_version
        if model is not None and version != model:
            raise InvalidParameterException(
                f"Collection {coll.collection_id} now holds templates of face model {version}, "
                f"not {model}: retry the request.")
        if op is not None:
            op.model_version = version
        if embeds:
            try:
                self.pipeline.embedder_for(version)
            except ResourceNotReadyException as exc:
                raise ResourceNotReadyException(
                    f"Collection {coll.collection_id} is bound to face model {version}, which "
                    f"this server cannot run: {exc.message}") from exc
        return coll

    def _same_model(self, coll: CollectionRow) -> CollectionRow:
        """The collection, if its templates come from the configured model: video analysis
        and redaction embed with that one only."""
        model = self.pipeline.model_version
        if coll.face_model_version != model:
            raise InvalidParameterException(
                f"Collection {coll.collection_id} holds templates of face model "
                f"{coll.face_model_version}; video and redaction run the configured model "
                f"{model}, and templates of different models cannot be compared. Re-enrol the "
                "collection into the configured model (faceledger collection reenrol).")
        return coll

    def _recall(self, op: AuditedOperation, coll: CollectionRow, name: str, token: str | None,
                params: dict[str, Any]) -> Shape | None:
        """The stored response of an earlier request with this ClientRequestToken, if any; the
        retry is still an event (marked as a replay: nothing changed this time)."""
        if token is None:
            return None
        earlier = self.catalog.recall(op.conn, coll.pk, name, token, request_hash(params))
        if earlier is not None:
            op.record(replay=True)
            if name in ("AssociateFaces", "DisassociateFaces"):
                op.record(**m.membership(str(params["UserId"]), earlier))
        return earlier

    def _remember(self, conn: Connection, coll: CollectionRow, op: str, token: str | None,
                  params: dict[str, Any], response: Shape) -> Shape:
        if token is not None:
            self.catalog.remember(conn, coll.pk, op, token, request_hash(params), response)
        return response

