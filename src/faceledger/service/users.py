"""Users: CreateUser, DeleteUser, ListUsers, AssociateFaces, DisassociateFaces, SearchUsers and
SearchUsersByImage, over the same store, audit hook and scoring as the face operations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..context import LOCAL, RequestContext
from ..errors import (
    InvalidParameterException,
    ResourceNotFoundException,
    ServiceQuotaExceededException,
)
from ..shapes import Shape, face_detail
from ..sources import ImageInput
from ..store import CollectionRow, FaceRow
from ..store.thresholds import (
    MAX_DEFAULT_FMR,
    similarity_for_fmr,
)
from ..vision.quality import QUALITY_FILTERS, quality_reasons
from ..vision.types import FaceAnalysis
from . import collection_members as m
from . import paging
from .collections import CollectionOperations
from .core import check_enum

MAX_USERS = 500
DEFAULT_USERS = 100
USER_FACE_LIMIT = 100
# Candidates read from the index per probe when searching users (faces of users are a subset).
USER_CANDIDATES = 1024
# AssociateFaces: a face joins a user only if it matches the user's faces at FMR <= 1e-4
# (Similarity 99.99), not Rekognition's 75, which on a calibrated scale means FMR 0.25.
DEFAULT_USER_ASSOCIATION_SIMILARITY = similarity_for_fmr(MAX_DEFAULT_FMR)


class UserOperations(CollectionOperations):
    """Rekognition's user operations: named groups of faces in a collection."""

    def create_user(self, collection_id: str | None = None, user_id: str | None = None,
                    client_request_token: str | None = None, *,
                    ctx: RequestContext = LOCAL) -> Shape:
        """CreateUser: a user id unique in the collection (ConflictException if taken)."""
        cid = m.collection_id(collection_id)
        uid = m.match(user_id, m.USER_ID, "UserId")
        token = m.request_token(client_request_token)
        params = {"CollectionId": cid, "UserId": uid}
        with self.audit("CreateUser", ctx, collection=cid, uses_model=False) as op:
            op.note(UserId=uid, ClientRequestToken=token)
            conn = op.conn
            coll = self.catalog.lock_collection(conn, cid)
            op.record(user_ids=[uid])
            earlier = self._recall(op, coll, "CreateUser", token, params)
            if earlier is not None:
                return earlier
            self.catalog.create_user(conn, coll, uid)
            return self._remember(conn, coll, "CreateUser", token, params, {})

    def delete_user(self, collection_id: str | None = None, user_id: str | None = None,
                    client_request_token: str | None = None, *,
                    ctx: RequestContext = LOCAL) -> Shape:
        """DeleteUser: its faces stay in the collection, disassociated."""
        cid = m.collection_id(collection_id)
        uid = m.match(user_id, m.USER_ID, "UserId")
        token = m.request_token(client_request_token)
        params = {"CollectionId": cid, "UserId": uid}
        with self.audit("DeleteUser", ctx, collection=cid, uses_model=False) as op:
            op.note(UserId=uid, ClientRequestToken=token)
            conn = op.conn
            coll = self.catalog.lock_collection(conn, cid)
            op.record(user_ids=[uid])
            earlier = self._recall(op, coll, "DeleteUser", token, params)
            if earlier is not None:
                return earlier
            user = self.catalog.user(conn, coll.pk, uid)
            if user is None:
                raise ResourceNotFoundException(f"The user id: {uid} does not exist.")
            self.catalog.delete_user(conn, user)
            op.record(disassociated=user.face_count)
            return self._remember(conn, coll, "DeleteUser", token, params, {})

    def list_users(self, collection_id: str | None = None, max_results: int | None = None,
                   next_token: str | None = None, *, ctx: RequestContext = LOCAL) -> Shape:
        """ListUsers, in creation order, NextToken paging."""
        cid = m.collection_id(collection_id)
        limit = m.page_size(max_results, DEFAULT_USERS, MAX_USERS, "MaxResults", low=1)
        with self.audit("ListUsers", ctx, collection=cid, uses_model=False) as op:
            op.note(MaxResults=limit)
            with self.catalog.read() as conn:
                coll = self.catalog.collection(conn, cid)
                after = 0 if next_token is None else (
                    paging.read_token(next_token, "u", coll.pk).row_pk)
                rows = self.catalog.list_users(conn, coll.pk, after, limit + 1)
            page = rows[:limit]
            op.record(user_ids=[u.user_id for u in page], more=len(rows) > limit)
        out: dict[str, Any] = {"Users": [{"UserId": u.user_id, "UserStatus": m.status(u.face_count)}
                                         for u in page]}
        if len(rows) > limit:
            out["NextToken"] = paging.make_token("u", coll.pk, page[-1].pk)
        return out

    def associate_faces(self, collection_id: str | None = None, user_id: str | None = None,
                        face_ids: Sequence[str] | None = None,
                        user_match_threshold: float | None = None,
                        client_request_token: str | None = None, *,
                        ctx: RequestContext = LOCAL) -> Shape:
        """AssociateFaces: a face joins the user only if it matches the user's faces at
        UserMatchThreshold (default 99.99, FMR 1e-4); a user holds at most 100 faces."""
        cid = m.collection_id(collection_id)
        uid = m.match(user_id, m.USER_ID, "UserId")
        fids = m.face_ids(face_ids, "FaceIds", 1, 100)
        threshold = m.threshold(user_match_threshold, "UserMatchThreshold")
        if threshold is None:
            threshold = DEFAULT_USER_ASSOCIATION_SIMILARITY
        token = m.request_token(client_request_token)
        params = {"CollectionId": cid, "UserId": uid, "FaceIds": fids,
                  "UserMatchThreshold": threshold}
        with self.audit("AssociateFaces", ctx, collection=cid) as op:
            op.note(UserId=uid, FaceIds=fids, ClientRequestToken=token)
            op.note_threshold("UserMatchThreshold", threshold)
            conn = op.conn
            coll = self._usable(self.catalog.lock_collection(conn, cid), op, embeds=False)
            cal = self._calibration_of(coll)
            earlier = self._recall(op, coll, "AssociateFaces", token, params)
            if earlier is not None:
                return earlier
            user = self.catalog.user(conn, coll.pk, uid)
            if user is None:
                raise ResourceNotFoundException(f"The user id: {uid} does not exist.")
            members = [r.embedding for r in self.catalog.user_faces(conn, coll.pk, user.pk)
                       if r.embedding is not None]
            found = self.catalog.faces_by_id(conn, coll.pk, fids, with_embedding=True)
            joined: list[FaceRow] = []
            failed: list[Shape] = []
            for fid in dict.fromkeys(fids):
                row = found.get(fid)
                if row is None:
                    failed.append({"FaceId": fid, "Reasons": ["FACE_NOT_FOUND"]})
                    continue
                if row.user_pk == user.pk:
                    continue  # already this user's: ignored, as Rekognition does
                if row.user_pk is not None:
                    failed.append({"FaceId": fid, "UserId": row.user_id,
                                   "Reasons": ["ASSOCIATED_TO_A_DIFFERENT_USER"]})
                    continue
                assert row.embedding is not None
                if members:
                    d = float(np.min(cal.distances(row.embedding, np.stack(members))))
                    sim = float(cal.similarity(d))
                    if sim < threshold:
                        failed.append({"FaceId": fid, "UserId": uid, "Confidence": sim,
                                       "Reasons": ["LOW_MATCH_CONFIDENCE"]})
                        continue
                # faces joining together must also match each other
                members.append(row.embedding)
                joined.append(row)
            if user.face_count + len(joined) > USER_FACE_LIMIT:
                raise ServiceQuotaExceededException(
                    f"User {uid} would hold {user.face_count + len(joined)} faces; "
                    f"the limit is {USER_FACE_LIMIT}.")
            self.catalog.set_user(conn, coll.pk, [r.pk for r in joined], user.pk)
            out = {"AssociatedFaces": [{"FaceId": r.face_id} for r in joined],
                   "UnsuccessfulFaceAssociations": failed,
                   "UserStatus": m.status(user.face_count + len(joined))}
            op.record(**m.membership(uid, out))
            return self._remember(conn, coll, "AssociateFaces", token, params, out)

    def disassociate_faces(self, collection_id: str | None = None, user_id: str | None = None,
                           client_request_token: str | None = None,
                           face_ids: Sequence[str] | None = None, *,
                           ctx: RequestContext = LOCAL) -> Shape:
        """DisassociateFaces: the faces stay in the collection, without the user."""
        cid = m.collection_id(collection_id)
        uid = m.match(user_id, m.USER_ID, "UserId")
        fids = m.face_ids(face_ids, "FaceIds", 1, 100)
        token = m.request_token(client_request_token)
        params = {"CollectionId": cid, "UserId": uid, "FaceIds": fids}
        with self.audit("DisassociateFaces", ctx, collection=cid, uses_model=False) as op:
            op.note(UserId=uid, FaceIds=fids, ClientRequestToken=token)
            conn = op.conn
            coll = self.catalog.lock_collection(conn, cid)
            earlier = self._recall(op, coll, "DisassociateFaces", token, params)
            if earlier is not None:
                return earlier
            user = self.catalog.user(conn, coll.pk, uid)
            if user is None:
                raise ResourceNotFoundException(f"The user id: {uid} does not exist.")
            found = self.catalog.faces_by_id(conn, coll.pk, fids)
            left: list[FaceRow] = []
            failed: list[Shape] = []
            for fid in dict.fromkeys(fids):
                row = found.get(fid)
                if row is None:
                    failed.append({"FaceId": fid, "Reasons": ["FACE_NOT_FOUND"]})
                elif row.user_pk is not None and row.user_pk != user.pk:
                    failed.append({"FaceId": fid, "UserId": row.user_id,
                                   "Reasons": ["ASSOCIATED_TO_A_DIFFERENT_USER"]})
                elif row.user_pk == user.pk:
                    left.append(row)
            self.catalog.set_user(conn, coll.pk, [r.pk for r in left], None)
            out = {"DisassociatedFaces": [{"FaceId": r.face_id} for r in left],
                   "UnsuccessfulFaceDisassociations": failed,
                   "UserStatus": m.status(user.face_count - len(left))}
            op.record(**m.membership(uid, out))
            return self._remember(conn, coll, "DisassociateFaces", token, params, out)

    def search_users(self, collection_id: str | None = None, user_id: str | None = None,
                     face_id: str | None = None, user_match_threshold: float | None = None,
                     max_users: int | None = None, *, ctx: RequestContext = LOCAL) -> Shape:
        """SearchUsers by FaceId or UserId: users whose faces match (a user's similarity is its
        best face's); the searched user itself is not returned."""
        cid = m.collection_id(collection_id)
        if (user_id is None) == (face_id is None):
            raise InvalidParameterException("Give exactly one of UserId or FaceId.")
        threshold = m.threshold(user_match_threshold, "UserMatchThreshold")
        k = m.page_size(max_users, DEFAULT_USERS, MAX_USERS, "MaxUsers", low=1)
        fid = None if face_id is None else m.face_id(face_id, "FaceId")
        uid = None if user_id is None else m.match(user_id, m.USER_ID, "UserId")
        out: dict[str, Any] = {}
        with self.audit("SearchUsers", ctx, collection=cid) as op:
            op.note(FaceId=fid, UserId=uid, MaxUsers=k)
            with self.catalog.read() as conn:
                coll = self._usable(self.catalog.collection(conn, cid), op, embeds=False)
                if fid is not None:
                    row = self.catalog.faces_by_id(conn, coll.pk, [fid],
                                                   with_embedding=True).get(fid)
                    if row is None:
                        raise InvalidParameterException(
                            f"faceId {fid} was not found in the collection.")
                    probes, exclude_faces, exclude_user = [row], {row.pk}, None
                    out["SearchedFace"] = {"FaceId": fid}
                else:
                    assert uid is not None
                    user = self.catalog.user(conn, coll.pk, uid)
                    if user is None:
                        raise ResourceNotFoundException(f"The user id: {uid} does not exist.")
                    probes = self.catalog.user_faces(conn, coll.pk, user.pk)
                    exclude_faces, exclude_user = {r.pk for r in probes}, user.pk
                    out["SearchedUser"] = {"UserId": uid}
                searched = max(self.catalog.associated_face_count(conn, coll.pk) - sum(
                    1 for r in probes if r.user_pk is not None), 0)
            point = self._threshold(op, coll, threshold, searched, "UserMatchThreshold")
            vecs = [r.embedding for r in probes if r.embedding is not None]
            matches, info = self._search_users(coll, vecs, k, point, exclude_faces,
                                               exclude_user, searched)
            response = {"UserMatches": matches, "FaceModelVersion": coll.face_model_version,
                        **out, **info}
            return op.release(response, "UserMatches", compared=info["FacesSearched"])

    def search_users_by_image(self, collection_id: str | None = None,
                              image: ImageInput | None = None,
                              user_match_threshold: float | None = None,
                              max_users: int | None = None, quality_filter: str | None = None,
                              *, ctx: RequestContext = LOCAL) -> Shape:
        """SearchUsersByImage: users matching the largest usable face; other faces are listed
        in UnsearchedFaces. No usable face gives no matches, not an error (as Rekognition)."""
        cid = m.collection_id(collection_id)
        threshold = m.threshold(user_match_threshold, "UserMatchThreshold")
        k = m.page_size(max_users, DEFAULT_USERS, MAX_USERS, "MaxUsers", low=1)
        qf = "NONE" if quality_filter is None else check_enum(
            quality_filter, QUALITY_FILTERS, "QualityFilter")
        with self.audit("SearchUsersByImage", ctx, collection=cid) as op:
            op.note(MaxUsers=k, QualityFilter=qf)
            with self.catalog.read() as conn:
                coll = self._usable(self.catalog.collection(conn, cid), op)
                searched = self.catalog.associated_face_count(conn, coll.pk)
            model = coll.face_model_version
            # the floor is checked before the photo is processed (a refusal analyses nothing)
            point = self._threshold(op, coll, threshold, searched, "UserMatchThreshold")
            img = self.decode(m.image(image), ctx=ctx)
            op.image(img.sha256)
            searched_face: FaceAnalysis | None = None
            unsearched: list[Shape] = []
            for f in self.pipeline.analyze(img.pixels, embed=False, model_version=model):
                reasons = quality_reasons(qf, f.confidence, f.box, f.pose, f.quality)
                if not reasons and searched_face is None:
                    searched_face = f
                    continue
                if not reasons:
                    reasons = ["FACE_NOT_LARGEST"]
                unsearched.append({"FaceDetails": face_detail(f, img.width, img.height),
                                   "Reasons": reasons})
            with self.catalog.read() as conn:  # faces may have come and gone meanwhile
                coll = self._usable(self.catalog.collection(conn, cid), op, model)
                searched = self.catalog.associated_face_count(conn, coll.pk)
            response: dict[str, Any] = {"FaceModelVersion": coll.face_model_version,
                                        "UnsearchedFaces": unsearched}
            vecs: list[NDArray[np.float32]] = []
            if searched_face is not None:
                vecs = [self.pipeline.embed_boxes(img.pixels, [searched_face.box],
                                                  [searched_face.landmarks],
                                                  model_version=model)[0]]
                response["SearchedFace"] = {
                    "FaceDetail": face_detail(searched_face, img.width, img.height)}
            matches, info = self._search_users(coll, vecs, k, point, set(), None, searched)
            response.update({"UserMatches": matches, **info})
            return op.release(response, "UserMatches", compared=info["FacesSearched"])

    def _search_users(self, coll: CollectionRow, probes: list[NDArray[np.float32]], k: int,
                      point: tuple[float, float], exclude_faces: set[int],
                      exclude_user: int | None, searched: int) -> tuple[list[Shape], Shape]:
        fmr, sim_threshold = point
        if not probes:  # no face to search with: nothing was compared
            return [], self._info(coll, "UserMatchThreshold", sim_threshold, fmr, 0)
        rows, dist = self._nearest(coll, probes, USER_CANDIDATES, exclude_faces, with_user=True,
                                   min_similarity=sim_threshold)
        best: dict[int, float] = {}
        for r, d in zip(rows, dist.tolist()):
            if r.user_pk is not None and r.user_pk != exclude_user:
                best[r.user_pk] = min(d, best.get(r.user_pk, np.inf))
        ranked = sorted(best.items(), key=lambda kv: (kv[1], kv[0]))
        with self.catalog.read() as conn:
            users = self.catalog.users_by_pk(conn, [pk for pk, _ in ranked])
        matches: list[Shape] = []
        for pk, d in ranked:
            sim = float(self._calibration_of(coll).similarity(d))
            if sim >= sim_threshold and pk in users and len(matches) < k:
                u = users[pk]
                matches.append({"Similarity": sim, "User": {
                    "UserId": u.user_id, "UserStatus": m.status(u.face_count)}})
        return matches, self._info(coll, "UserMatchThreshold", sim_threshold, fmr, searched)

