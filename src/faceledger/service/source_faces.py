"""Re-enrolment's pieces: the source collection's faces, the plan of a run, matching a photo's
faces to the source faces, and carrying users and retention clocks over.

Re-enrolment: a collection's faces, indexed again from their original photos into a collection
bound to another face model (templates of different models cannot be compared, so a model
change means new templates, and faceledger never keeps photos to make them from).

The photos are matched to the source collection's faces by the image SHA-256 the catalog kept
for each face; each photo is then indexed into the target through IndexFaces (bulk.py, the same
path as `collection index`), keeping only faces that correspond to a source face (by landmarks,
else by box), with the source face's ExternalImageId, user and retention clock. The ledger links
the two collections: a `ReenrolCollection` event names both collections and both models, and
each IndexFaces event of the run names the run, and for each new face the source face it
replaces.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, select

from ..ledger import AuditedOperation, retention, schema
from ..ledger.events import parse_time
from ..shapes import Shape
from ..store import Catalog, FaceRow

# A new face is the source face if its landmarks lie within this share of the source face's
# eye distance of the source's (on average), or, without landmarks, its box centre within this
# share of the source box's longer side: other faces in a photo are at least about one face
# away, and two detectors' landmarks of one face differ by far less.
MATCH_DISTANCE = 0.5
NOT_IN_SOURCE = "NOT_IN_SOURCE_COLLECTION"


@dataclass(frozen=True)
class SourceFace:
    """A face of the source collection, as the new photo's faces are matched against it."""

    face_id: str
    external_image_id: str | None
    user_id: str | None
    box: tuple[float, float, float, float]  # BoundingBox ratios: width, height, left, top
    landmarks: tuple[tuple[str, float, float], ...] = ()

    @classmethod
    def of(cls, row: FaceRow) -> SourceFace:
        return cls(row.face_id, row.external_image_id, row.user_id, row.box, row.landmarks)


@dataclass(frozen=True)
class ReenrolSource:
    """What one photo's IndexFaces needs to re-enrol: the run, the source and its faces."""

    run_id: str
    collection_id: str
    model_version: str
    faces: tuple[SourceFace, ...]


@dataclass(frozen=True)
class ReenrolPlan:
    """A re-enrolment run: source and target, and which photos hold which source faces."""

    run_id: str
    source: str
    source_model: str
    target: str
    target_model: str
    target_created: bool
    by_sha256: Mapping[str, tuple[SourceFace, ...]]
    # source faces whose photo was not among those given, and faces stored without a hash
    faces_without_photo: tuple[str, ...] = ()
    faces_without_hash: tuple[str, ...] = ()
    photos_not_in_source: tuple[str, ...] = field(default=())  # their SHA-256

    def source_for(self, sha256: str) -> ReenrolSource | None:
        faces = self.by_sha256.get(sha256)
        if faces is None:
            return None
        return ReenrolSource(self.run_id, self.source, self.source_model, faces)


def _pixels(points: Iterable[tuple[str, float, float]], w: int, h: int
            ) -> dict[str, tuple[float, float]]:
    return {t: (x * w, y * h) for t, x, y in points}


def match_faces(source: Sequence[SourceFace], found: Sequence[Shape], width: int, height: int
                ) -> dict[int, int]:
    """Which found face (index; each a {"BoundingBox", "Landmarks"} of ratios) is which source
    face (index): greedy by distance, each at most once, within MATCH_DISTANCE."""
    costs: list[tuple[float, int, int]] = []
    for j, s in enumerate(source):
        sw, sh, sl, st = s.box
        src_lm = _pixels(s.landmarks, width, height)
        eyes = (src_lm.get("eyeLeft"), src_lm.get("eyeRight"))
        scale_lm = math.dist(eyes[0], eyes[1]) if eyes[0] and eyes[1] else 0.0
        for i, f in enumerate(found):
            new_lm = _pixels(((p["Type"], p["X"], p["Y"]) for p in f.get("Landmarks", [])),
                             width, height)
            common = [t for t in src_lm if t in new_lm]
            if common and scale_lm > 0:
                d = sum(math.dist(src_lm[t], new_lm[t]) for t in common) / len(common)
                cost = d / scale_lm
            else:
                b = f["BoundingBox"]
                c_src = ((sl + sw / 2) * width, (st + sh / 2) * height)
                c_new = ((b["Left"] + b["Width"] / 2) * width,
                         (b["Top"] + b["Height"] / 2) * height)
                cost = math.dist(c_src, c_new) / max(sw * width, sh * height, 1e-9)
            if cost <= MATCH_DISTANCE:
                costs.append((cost, i, j))
    out: dict[int, int] = {}
    used: set[int] = set()
    for _, i, j in sorted(costs):
        if i not in out and j not in used:
            out[i] = j
            used.add(j)
    return out


def link_faces(catalog: Catalog, op: AuditedOperation, reenrol: ReenrolSource, coll_pk: int,
               new: Mapping[str, tuple[int, SourceFace]]) -> Shape:
    """In the IndexFaces transaction (`op.conn`, the target collection locked): the source
    faces' users and retention clocks carried over to the new faces (`new`: face id -> (key,
    source face)); returns what the event and the response record."""
    conn = op.conn
    target = op.collection or ""
    users: dict[str, int] = {}
    for fid, (key, sf) in new.items():
        if sf.user_id is None:
            continue
        pk = users.get(sf.user_id)
        if pk is None:
            user = catalog.user(conn, coll_pk, sf.user_id)
            if user is None:
                catalog.create_user(conn, catalog.collection(conn, target), sf.user_id)
                user = catalog.user(conn, coll_pk, sf.user_id)
            assert user is not None
            pk = users[sf.user_id] = user.pk
        catalog.set_user(conn, coll_pk, [key], pk)
    r = schema.retention
    since = dict(conn.execute(select(r.c.face_id, r.c.since).where(
        r.c.collection == reenrol.collection_id,
        r.c.face_id.in_([sf.face_id for _, sf in new.values()]))).all()) if new else {}
    for fid, (_, sf) in new.items():
        started = since.get(sf.face_id)
        if started is not None:  # the clock of the face, not of its new template
            retention.track(conn, target, [fid], parse_time(str(started)))
    matched = {sf.face_id for _, sf in new.values()}
    return {
        "source_face_ids": {fid: sf.face_id for fid, (_, sf) in new.items()},
        "users": {fid: sf.user_id for fid, (_, sf) in new.items() if sf.user_id},
        "source_faces_not_found": [f.face_id for f in reenrol.faces if f.face_id not in matched],
    }


def all_faces(catalog: Catalog, conn: Connection, coll_pk: int) -> list[FaceRow]:
    """Every face of a collection (without templates), in key order."""
    out: list[FaceRow] = []
    after = 0
    while True:
        page = catalog.list_faces(conn, coll_pk, after, 5000)
        out += page
        if len(page) < 5000:
            return out
        after = page[-1].pk
