"""Re-enrolment: a collection's faces, indexed again from their original photos into a collection
bound to another face model. `start_reenrolment` plans a run and logs it; each photo then goes
through IndexFaces with its `ReenrolSource` (bulk.py `reenrol_images`); see source_faces.py.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable

from ..context import LOCAL, RequestContext
from ..errors import InvalidParameterException, ResourceNotFoundException
from ..ledger.policy import load_policy, store_policy
from . import collection_members as m
from .collections import CollectionOperations
from .source_faces import ReenrolPlan, SourceFace, all_faces


class ReenrolmentOperations(CollectionOperations):
    """Planning a re-enrolment run and carrying a photo's source faces over (see module doc)."""

    def start_reenrolment(self, source_id: str, target_id: str, photo_hashes: Iterable[str],
                          face_model_version: str | None = None, *,
                          ctx: RequestContext = LOCAL) -> ReenrolPlan:
        """Plan a run: match the photos (their SHA-256) to the source collection's faces; create
        the target bound to `face_model_version` (default: the configured model) with the
        source's policy, or check an existing one is bound to it; log `ReenrolCollection`."""
        src = m.collection_id(source_id)
        dst = m.collection_id(target_id)
        if src == dst:
            raise InvalidParameterException("Re-enrol into another collection than the source.")
        # the run's id: every IndexFaces event of the run names it
        run_id = ctx.request_id or str(uuid.uuid4())
        ctx = dataclasses.replace(ctx, request_id=run_id)
        model = (self.pipeline.model_version if face_model_version is None
                 else m.model_version(face_model_version))
        hashes = set(photo_hashes)
        with self.catalog.read() as conn:
            source = self.catalog.collection(conn, src)
            faces = all_faces(self.catalog, conn, source.pk)
            try:
                target = self.catalog.collection(conn, dst)
            except ResourceNotFoundException:
                target = None
        if target is not None and target.face_model_version != model:
            raise InvalidParameterException(
                f"Collection {dst} exists and is bound to face model "
                f"{target.face_model_version}, not {model}.")
        created = target is None
        if created:
            self.create_collection(dst, face_model_version=model, ctx=ctx)
        by_sha: dict[str, list[SourceFace]] = {}
        without_hash: list[str] = []
        for row in faces:
            if row.image_sha256 is None:
                without_hash.append(row.face_id)
            else:
                by_sha.setdefault(row.image_sha256, []).append(SourceFace.of(row))
        without_photo = [f.face_id for sha, fs in by_sha.items() if sha not in hashes for f in fs]
        not_in_source = sorted(h for h in hashes if h not in by_sha)
        with self.audit("ReenrolCollection", ctx, collection=dst) as op:
            op.model_version = model
            if created:  # the new collection is governed as the old one was
                policy = load_policy(op.conn, src)
                store_policy(op.conn, dst, policy, ctx.principal)
            op.note(SourceCollectionId=src, SourceFaceModelVersion=source.face_model_version,
                    TargetCollectionId=dst, TargetFaceModelVersion=model,
                    TargetCreated=created)
            op.record(source_faces=len(faces), photos=len(hashes),
                      photos_matched=sum(1 for h in hashes if h in by_sha),
                      photos_not_in_source=len(not_in_source),
                      source_faces_without_photo=without_photo,
                      source_faces_without_hash=without_hash)
        return ReenrolPlan(
            run_id=run_id, source=src,
            source_model=source.face_model_version, target=dst, target_model=model,
            target_created=created,
            by_sha256={k: tuple(v) for k, v in by_sha.items()},
            faces_without_photo=tuple(without_photo), faces_without_hash=tuple(without_hash),
            photos_not_in_source=tuple(not_in_source))
