"""The catalog: collections, faces (with their templates), users, tombstones and idempotency
tokens in SQL (SQLite file by default, PostgreSQL by URL), through SQLAlchemy Core.

The catalog is the source of truth. Templates (embeddings, never photos) are stored in the faces
table, in the same transaction as the face's metadata, so an acknowledged IndexFaces is durable
once its transaction commits. Vector indexes are derived from it: each collection carries a
`version` counter bumped by every change, each face the version that added it, and each deletion
leaves a tombstone, so an index can catch up from any version it reflects.

Every mutating function takes the `Connection` of an open transaction (`Catalog.begin()`), so
that other writers (the audit ledger) can append to the same transaction. Write transactions
start by locking their collection row (`lock_collection`), which serialises writers per
collection on PostgreSQL and takes SQLite's write lock up front.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray
from sqlalchemy import Connection, Engine

from ..db import add_missing_columns, create_tables
from ..errors import (
    ConflictException,
    IdempotentParameterMismatchException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
)
from ..model_versions import canonical

metadata = sa.MetaData()

collections = sa.Table(
    "fl_collections",
    metadata,
    sa.Column("pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("collection_id", sa.String(255), nullable=False, unique=True),
    sa.Column("face_model_version", sa.String(64), nullable=False),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # bumped by every change; faces record the version that added them
    sa.Column("version", sa.BigInteger, nullable=False, default=0),
    sa.Column("face_count", sa.BigInteger, nullable=False, default=0),
    sa.Column("tags", sa.Text, nullable=True),
    sqlite_autoincrement=True,  # never reuse a pk: index files are named by it
)

users = sa.Table(
    "fl_users",
    metadata,
    sa.Column("pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column(
        "collection_pk",
        sa.ForeignKey("fl_collections.pk", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("collection_pk", "user_id", name="uq_fl_users_collection_user"),
    sqlite_autoincrement=True,
)

faces = sa.Table(
    "fl_faces",
    metadata,
    # the vector indexes' label: never reused
    sa.Column("pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column(
        "collection_pk",
        sa.ForeignKey("fl_collections.pk", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("face_id", sa.String(36), nullable=False),
    sa.Column("image_id", sa.String(36), nullable=False),
    sa.Column("external_image_id", sa.String(255), nullable=True),
    sa.Column("box_width", sa.Float, nullable=False),
    sa.Column("box_height", sa.Float, nullable=False),
    sa.Column("box_left", sa.Float, nullable=False),
    sa.Column("box_top", sa.Float, nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("user_pk", sa.ForeignKey("fl_users.pk", ondelete="SET NULL"), nullable=True),
    sa.Column("added_version", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # float32 little-endian template
    sa.Column("embedding", sa.LargeBinary, nullable=False),
    # SHA-256 of the image the face was indexed from (NULL for faces indexed before it was
    # kept): a reviewer's copy of the photo is checked against it; bulk enrolment resumes by it
    sa.Column("image_sha256", sa.String(64), nullable=True),
    # the five landmarks as JSON [[type, x, y], ...] ratios of the image (NULL: not recorded)
    sa.Column("landmarks", sa.Text, nullable=True),
    # the detector's pose and quality of the face as JSON {"Pose": {...}, "Quality": {...}}
    # (NULL: not recorded), shown to a reviewer beside the face
    sa.Column("detail", sa.Text, nullable=True),
    sa.Index("ix_fl_faces_collection_face", "collection_pk", "face_id", unique=True),
    sa.Index("ix_fl_faces_collection_image_sha256", "collection_pk", "image_sha256"),
    sa.Index("ix_fl_faces_collection_version", "collection_pk", "added_version"),
    sa.Index("ix_fl_faces_user", "user_pk"),
    sqlite_autoincrement=True,
)

tombstones = sa.Table(
    "fl_face_tombstones",
    metadata,
    sa.Column(
        "collection_pk",
        sa.ForeignKey("fl_collections.pk", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("face_pk", sa.BigInteger, nullable=False),
    sa.Index("ix_fl_tombstones_collection_version", "collection_pk", "version"),
)

request_tokens = sa.Table(
    "fl_request_tokens",
    metadata,
    sa.Column(
        "collection_pk",
        sa.ForeignKey("fl_collections.pk", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("operation", sa.String(64), nullable=False),
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("response", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.PrimaryKeyConstraint("collection_pk", "operation", "token"),
)


@dataclass(frozen=True)
class CollectionRow:
    """One collection as the catalog holds it."""

    pk: int
    collection_id: str
    face_model_version: str
    dim: int
    created_at: float
    version: int
    face_count: int


@dataclass(frozen=True)
class NewFace:
    """A face to add: its metadata (BoundingBox ratios) and template."""

    face_id: str
    image_id: str
    external_image_id: str | None
    box: tuple[float, float, float, float]  # width, height, left, top
    confidence: float
    embedding: NDArray[np.float32]
    image_sha256: str | None = None
    landmarks: tuple[tuple[str, float, float], ...] = ()
    detail: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class FaceRow:
    """One stored face; `embedding` is loaded only when asked for."""

    pk: int
    face_id: str
    image_id: str
    external_image_id: str | None
    box: tuple[float, float, float, float]
    confidence: float
    user_pk: int | None
    user_id: str | None
    embedding: NDArray[np.float32] | None = None
    image_sha256: str | None = None
    landmarks: tuple[tuple[str, float, float], ...] = ()
    detail: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class UserRow:
    pk: int
    user_id: str
    face_count: int


@dataclass(frozen=True)
class Changes:
    """What a collection gained and lost after some version, up to `version`."""

    version: int
    added_keys: NDArray[np.int64]
    added_vectors: NDArray[np.float32]
    removed_keys: NDArray[np.int64]


def vector_bytes(v: NDArray[np.float32]) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def bytes_vector(b: bytes) -> NDArray[np.float32]:
    return np.frombuffer(b, dtype="<f4").astype(np.float32)


def _collection(row: Any) -> CollectionRow:
    return CollectionRow(
        pk=int(row.pk),
        collection_id=str(row.collection_id),
        face_model_version=str(row.face_model_version),
        dim=int(row.dim),
        created_at=float(row.created_at),
        version=int(row.version),
        face_count=int(row.face_count),
    )


_FACE_COLUMNS = (
    faces.c.pk,
    faces.c.face_id,
    faces.c.image_id,
    faces.c.external_image_id,
    faces.c.box_width,
    faces.c.box_height,
    faces.c.box_left,
    faces.c.box_top,
    faces.c.confidence,
    faces.c.user_pk,
    users.c.user_id,
    faces.c.image_sha256,
    faces.c.landmarks,
    faces.c.detail,
)


def _face_query(with_embedding: bool) -> sa.Select[Any]:
    cols: list[Any] = list(_FACE_COLUMNS)
    if with_embedding:
        cols.append(faces.c.embedding)
    return sa.select(*cols).select_from(
        faces.outerjoin(users, faces.c.user_pk == users.c.pk)
    )


def _face(row: Any, with_embedding: bool) -> FaceRow:
    return FaceRow(
        pk=int(row.pk),
        face_id=str(row.face_id),
        image_id=str(row.image_id),
        external_image_id=row.external_image_id,
        box=(float(row.box_width), float(row.box_height), float(row.box_left),
             float(row.box_top)),
        confidence=float(row.confidence),
        user_pk=None if row.user_pk is None else int(row.user_pk),
        user_id=row.user_id,
        embedding=bytes_vector(row.embedding) if with_embedding else None,
        image_sha256=row.image_sha256,
        landmarks=_landmarks(row.landmarks),
        detail=json.loads(row.detail) if row.detail else None,
    )


def _landmarks(text: str | None) -> tuple[tuple[str, float, float], ...]:
    if not text:
        return ()
    return tuple((str(t), float(x), float(y)) for t, x, y in json.loads(text))


def request_hash(params: dict[str, Any]) -> str:
    """A stable digest of an operation's parameters (for idempotency tokens)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


class Catalog:
    """Collections, faces, users and tokens in SQL; the source of truth for every vector index."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(engine, metadata)
        add_missing_columns(engine, metadata)  # image_sha256, landmarks on older databases
        _add_missing_indexes(engine)
        _number_model_versions(engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction: commits when the block ends, rolls back on an exception."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads (one consistent snapshot on PostgreSQL)."""
        with self.engine.connect() as conn:
            yield conn

    # --- collections -------------------------------------------------------------------------

    def create_collection(
        self,
        conn: Connection,
        collection_id: str,
        face_model_version: str,
        dim: int,
        tags: dict[str, str] | None = None,
    ) -> CollectionRow:
        """Add a collection; ResourceAlreadyExistsException if the id is taken."""
        # The insert comes first so that it takes the write lock; a duplicate id aborts the
        # transaction, which the caller's `with` block then rolls back.
        try:
            res = conn.execute(
                collections.insert().values(
                    collection_id=collection_id,
                    face_model_version=face_model_version,
                    dim=dim,
                    created_at=time.time(),
                    version=0,
                    face_count=0,
                    tags=json.dumps(tags) if tags else None,
                )
            )
        except sa.exc.IntegrityError as exc:
            raise ResourceAlreadyExistsException(
                f"The collection id: {collection_id} already exists"
            ) from exc
        return self.collection(conn, collection_id, pk=_inserted_pk(res))

    def collection(self, conn: Connection, collection_id: str, *, pk: int | None = None
                   ) -> CollectionRow:
        """The collection named `collection_id`, or ResourceNotFoundException."""
        q = sa.select(collections)
        q = q.where(collections.c.pk == pk) if pk is not None else q.where(
            collections.c.collection_id == collection_id
        )
        row = conn.execute(q).first()
        if row is None:
            raise ResourceNotFoundException(f"The collection id: {collection_id} does not exist")
        return _collection(row)

    def lock_collection(self, conn: Connection, collection_id: str,
                        face_delta: int = 0) -> CollectionRow:
        """Start a change of `collection_id`: bump its version (taking the row's write lock) and
        return it with the new version. Call first in a write transaction."""
        res = conn.execute(
            collections.update()
            .where(collections.c.collection_id == collection_id)
            .values(version=collections.c.version + 1,
                    face_count=collections.c.face_count + face_delta)
        )
        if res.rowcount == 0:
            raise ResourceNotFoundException(f"The collection id: {collection_id} does not exist")
        return self.collection(conn, collection_id)

    def collection_tags(self, conn: Connection, collection_id: str, *,
                        for_update: bool = False) -> dict[str, str]:
        """The collection's tags, or ResourceNotFoundException. `for_update`: take the row's
        write lock first (a no-op update), so that a read-modify-write of the tags in this
        transaction loses no concurrent change; the collection's version is left alone (tags
        change no face)."""
        if for_update:
            done = conn.execute(collections.update()
                                .where(collections.c.collection_id == collection_id)
                                .values(tags=collections.c.tags))
            if done.rowcount == 0:
                raise ResourceNotFoundException(
                    f"The collection id: {collection_id} does not exist")
        row = conn.execute(sa.select(collections.c.tags)
                           .where(collections.c.collection_id == collection_id)).first()
        if row is None:
            raise ResourceNotFoundException(f"The collection id: {collection_id} does not exist")
        found = json.loads(row.tags) if row.tags else {}
        return {str(k): str(v) for k, v in found.items()}

    def set_collection_tags(self, conn: Connection, collection_id: str,
                            tags: Mapping[str, str]) -> None:
        """Replace the collection's tags (after `collection_tags(..., for_update=True)`)."""
        conn.execute(collections.update().where(collections.c.collection_id == collection_id)
                     .values(tags=json.dumps(dict(tags), sort_keys=True) if tags else None))

    def adjust_face_count(self, conn: Connection, coll: CollectionRow, delta: int) -> None:
        if delta:
            conn.execute(
                collections.update()
                .where(collections.c.pk == coll.pk)
                .values(face_count=collections.c.face_count + delta)
            )

    def delete_collection(self, conn: Connection, collection_id: str) -> CollectionRow:
        """Remove a collection and everything it holds (faces, templates, users, tokens)."""
        coll = self.lock_collection(conn, collection_id)
        for table in (request_tokens, tombstones, faces, users):
            conn.execute(table.delete().where(table.c.collection_pk == coll.pk))
        conn.execute(collections.delete().where(collections.c.pk == coll.pk))
        return coll

    def list_collections(self, conn: Connection, after: str | None, limit: int
                         ) -> list[CollectionRow]:
        q = sa.select(collections).order_by(collections.c.collection_id).limit(limit)
        if after is not None:
            q = q.where(collections.c.collection_id > after)
        return [_collection(r) for r in conn.execute(q)]

    def all_collection_pks(self, conn: Connection) -> set[int]:
        return {int(r[0]) for r in conn.execute(sa.select(collections.c.pk))}

    def collection_by_pk(self, conn: Connection, pk: int) -> CollectionRow | None:
        row = conn.execute(sa.select(collections).where(collections.c.pk == pk)).first()
        return None if row is None else _collection(row)

    def collection_version(self, conn: Connection, pk: int) -> int | None:
        v = conn.execute(
            sa.select(collections.c.version).where(collections.c.pk == pk)
        ).scalar()
        return None if v is None else int(v)

    # --- faces -------------------------------------------------------------------------------

    def add_faces(self, conn: Connection, coll: CollectionRow, new: Sequence[NewFace]
                  ) -> list[int]:
        """Store faces in a collection locked by `lock_collection`; returns their keys."""
        now = time.time()
        keys = []
        for f in new:
            w, h, left, top = f.box
            res = conn.execute(
                faces.insert().values(
                    collection_pk=coll.pk,
                    face_id=f.face_id,
                    image_id=f.image_id,
                    external_image_id=f.external_image_id,
                    box_width=w,
                    box_height=h,
                    box_left=left,
                    box_top=top,
                    confidence=f.confidence,
                    user_pk=None,
                    added_version=coll.version,
                    created_at=now,
                    embedding=vector_bytes(f.embedding),
                    image_sha256=f.image_sha256,
                    landmarks=json.dumps([list(p) for p in f.landmarks]) if f.landmarks else None,
                    detail=json.dumps(dict(f.detail)) if f.detail else None,
                )
            )
            keys.append(_inserted_pk(res))
        self.adjust_face_count(conn, coll, len(keys))
        return keys

    def add_vectors(self, conn: Connection, coll: CollectionRow, vectors: NDArray[np.float32],
                    face_ids: Sequence[str], external_image_ids: Sequence[str | None]
                    ) -> None:
        """Bulk insert of bare templates (benchmarks and tests): one statement per batch."""
        now = time.time()
        rows = [
            {
                "collection_pk": coll.pk, "face_id": fid, "image_id": fid,
                "external_image_id": ext, "box_width": 1.0, "box_height": 1.0,
                "box_left": 0.0, "box_top": 0.0, "confidence": 100.0, "user_pk": None,
                "added_version": coll.version, "created_at": now,
                "embedding": vector_bytes(v),
            }
            for v, fid, ext in zip(vectors, face_ids, external_image_ids)
        ]
        if rows:
            conn.execute(faces.insert(), rows)
        self.adjust_face_count(conn, coll, len(rows))

    def delete_faces(self, conn: Connection, coll: CollectionRow, keys: Sequence[int]) -> None:
        """Remove faces (and their templates) and leave tombstones for the indexes."""
        if not keys:
            return
        for chunk in _chunks(list(keys), 500):
            conn.execute(faces.delete().where(faces.c.collection_pk == coll.pk,
                                              faces.c.pk.in_(chunk)))
        conn.execute(
            tombstones.insert(),
            [{"collection_pk": coll.pk, "version": coll.version, "face_pk": k} for k in keys],
        )
        self.adjust_face_count(conn, coll, -len(keys))

    def faces_by_id(self, conn: Connection, coll_pk: int, face_ids: Sequence[str],
                    with_embedding: bool = False) -> dict[str, FaceRow]:
        out: dict[str, FaceRow] = {}
        for chunk in _chunks(list(dict.fromkeys(face_ids)), 500):
            q = _face_query(with_embedding).where(
                faces.c.collection_pk == coll_pk, faces.c.face_id.in_(chunk)
            )
            for r in conn.execute(q):
                out[str(r.face_id)] = _face(r, with_embedding)
        return out

    def faces_by_key(self, conn: Connection, coll_pk: int, keys: Sequence[int],
                     with_embedding: bool = False) -> dict[int, FaceRow]:
        out: dict[int, FaceRow] = {}
        for chunk in _chunks([int(k) for k in keys], 500):
            q = _face_query(with_embedding).where(
                faces.c.collection_pk == coll_pk, faces.c.pk.in_(chunk)
            )
            for r in conn.execute(q):
                out[int(r.pk)] = _face(r, with_embedding)
        return out

    def list_faces(self, conn: Connection, coll_pk: int, after_key: int, limit: int,
                   user_pk: int | None = None, face_ids: Sequence[str] | None = None
                   ) -> list[FaceRow]:
        q = (_face_query(False)
             .where(faces.c.collection_pk == coll_pk, faces.c.pk > after_key)
             .order_by(faces.c.pk).limit(limit))
        if user_pk is not None:
            q = q.where(faces.c.user_pk == user_pk)
        if face_ids is not None:
            q = q.where(faces.c.face_id.in_(list(face_ids)))
        return [_face(r, False) for r in conn.execute(q)]

    def image_hashes(self, conn: Connection, coll_pk: int) -> set[str]:
        """SHA-256 of every image that has a face in the collection (faces stored without one,
        before the column existed, are not counted)."""
        return {str(h) for h in conn.execute(
            sa.select(faces.c.image_sha256).distinct()
            .where(faces.c.collection_pk == coll_pk, faces.c.image_sha256.is_not(None))
        ).scalars()}

    def changes_since(self, conn: Connection, coll_pk: int, version: int) -> Changes | None:
        """Faces added and removed after `version` (None: the collection is gone)."""
        current = self.collection_version(conn, coll_pk)
        if current is None:
            return None
        added = conn.execute(
            sa.select(faces.c.pk, faces.c.embedding)
            .where(faces.c.collection_pk == coll_pk, faces.c.added_version > version)
            .order_by(faces.c.pk)
        ).all()
        removed = conn.execute(
            sa.select(tombstones.c.face_pk)
            .where(tombstones.c.collection_pk == coll_pk, tombstones.c.version > version)
        ).scalars().all()
        keys = np.fromiter((r[0] for r in added), dtype=np.int64, count=len(added))
        vecs = (np.frombuffer(b"".join(r[1] for r in added), dtype="<f4")
                .astype(np.float32).reshape(len(added), -1)) if added else (
            np.zeros((0, 0), dtype=np.float32))
        return Changes(current, keys, vecs, np.asarray(removed, dtype=np.int64))

    def iter_vectors(self, conn: Connection, coll_pk: int, batch: int = 50_000
                     ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
        """Every template of a collection, in key order, in batches."""
        after = 0
        while True:
            rows = conn.execute(
                sa.select(faces.c.pk, faces.c.embedding)
                .where(faces.c.collection_pk == coll_pk, faces.c.pk > after)
                .order_by(faces.c.pk).limit(batch)
            ).all()
            if not rows:
                return
            keys = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").astype(
                np.float32).reshape(len(rows), -1)
            yield keys, vecs
            after = int(keys[-1])

    def live_keys(self, conn: Connection, coll_pk: int) -> NDArray[np.int64]:
        ks = conn.execute(
            sa.select(faces.c.pk).where(faces.c.collection_pk == coll_pk).order_by(faces.c.pk)
        ).scalars().all()
        return np.asarray(ks, dtype=np.int64)

    # --- users -------------------------------------------------------------------------------

    def create_user(self, conn: Connection, coll: CollectionRow, user_id: str) -> None:
        """Add a user to a collection locked by `lock_collection`; ConflictException if taken."""
        if self.user(conn, coll.pk, user_id) is not None:
            raise ConflictException(f"The user id: {user_id} already exists in the collection.")
        conn.execute(users.insert().values(collection_pk=coll.pk, user_id=user_id,
                                           created_at=time.time()))

    def user(self, conn: Connection, coll_pk: int, user_id: str) -> UserRow | None:
        row = conn.execute(
            sa.select(users.c.pk, users.c.user_id)
            .where(users.c.collection_pk == coll_pk, users.c.user_id == user_id)
        ).first()
        if row is None:
            return None
        count = conn.execute(
            sa.select(sa.func.count()).select_from(faces).where(faces.c.user_pk == row.pk)
        ).scalar_one()
        return UserRow(int(row.pk), str(row.user_id), int(count))

    def delete_user(self, conn: Connection, user: UserRow) -> None:
        conn.execute(faces.update().where(faces.c.user_pk == user.pk).values(user_pk=None))
        conn.execute(users.delete().where(users.c.pk == user.pk))

    def list_users(self, conn: Connection, coll_pk: int, after_pk: int, limit: int
                   ) -> list[UserRow]:
        counts = (sa.select(faces.c.user_pk, sa.func.count().label("n"))
                  .where(faces.c.collection_pk == coll_pk, faces.c.user_pk.is_not(None))
                  .group_by(faces.c.user_pk).subquery())
        q = (sa.select(users.c.pk, users.c.user_id, counts.c.n)
             .select_from(users.outerjoin(counts, counts.c.user_pk == users.c.pk))
             .where(users.c.collection_pk == coll_pk, users.c.pk > after_pk)
             .order_by(users.c.pk).limit(limit))
        return [UserRow(int(r.pk), str(r.user_id), int(r.n or 0)) for r in conn.execute(q)]

    def user_count(self, conn: Connection, coll_pk: int) -> int:
        return int(conn.execute(
            sa.select(sa.func.count()).select_from(users).where(users.c.collection_pk == coll_pk)
        ).scalar_one())

    def set_user(self, conn: Connection, coll_pk: int, keys: Sequence[int],
                 user_pk: int | None) -> None:
        for chunk in _chunks(list(keys), 500):
            conn.execute(faces.update()
                         .where(faces.c.collection_pk == coll_pk, faces.c.pk.in_(chunk))
                         .values(user_pk=user_pk))

    def user_faces(self, conn: Connection, coll_pk: int, user_pk: int) -> list[FaceRow]:
        q = _face_query(True).where(faces.c.collection_pk == coll_pk, faces.c.user_pk == user_pk)
        return [_face(r, True) for r in conn.execute(q)]

    def users_by_pk(self, conn: Connection, pks: Sequence[int]) -> dict[int, UserRow]:
        out: dict[int, UserRow] = {}
        for chunk in _chunks(list(pks), 500):
            q = (sa.select(users.c.pk, users.c.user_id, sa.func.count(faces.c.pk).label("n"))
                 .select_from(users.outerjoin(faces, faces.c.user_pk == users.c.pk))
                 .where(users.c.pk.in_(chunk)).group_by(users.c.pk, users.c.user_id))
            for r in conn.execute(q):
                out[int(r.pk)] = UserRow(int(r.pk), str(r.user_id), int(r.n))
        return out

    def associated_face_count(self, conn: Connection, coll_pk: int) -> int:
        return int(conn.execute(
            sa.select(sa.func.count()).select_from(faces)
            .where(faces.c.collection_pk == coll_pk, faces.c.user_pk.is_not(None))
        ).scalar_one())

    # --- idempotency tokens ------------------------------------------------------------------

    def recall(self, conn: Connection, coll_pk: int, operation: str, token: str,
               params_hash: str) -> dict[str, Any] | None:
        """The stored response of an earlier request with this token, if any; a token reused
        with other parameters raises IdempotentParameterMismatchException."""
        row = conn.execute(
            sa.select(request_tokens.c.request_hash, request_tokens.c.response).where(
                request_tokens.c.collection_pk == coll_pk,
                request_tokens.c.operation == operation,
                request_tokens.c.token == token,
            )
        ).first()
        if row is None:
            return None
        if row.request_hash != params_hash:
            raise IdempotentParameterMismatchException(
                f"ClientRequestToken {token} was used with different parameters."
            )
        out: dict[str, Any] = json.loads(row.response)
        return out

    def remember(self, conn: Connection, coll_pk: int, operation: str, token: str,
                 params_hash: str, response: dict[str, Any]) -> None:
        conn.execute(request_tokens.insert().values(
            collection_pk=coll_pk, operation=operation, token=token, request_hash=params_hash,
            response=json.dumps(response), created_at=time.time()))


def _add_missing_indexes(engine: Engine) -> None:
    """Indexes declared on faces that an older database lacks (create_all skips existing tables)."""
    have = {ix["name"] for ix in sa.inspect(engine).get_indexes(faces.name)}
    for index in faces.indexes:
        if index.name in have:
            continue
        try:
            index.create(engine, checkfirst=True)
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):
            pass  # another process made it between our look and our CREATE INDEX


def _number_model_versions(engine: Engine) -> None:
    """Rewrite model names stored before versions were numbers ("dlib-resnet-v1" -> "1.0",
    "onnx-<hex>" -> "100.<n>"; model_versions.py). Idempotent, one UPDATE per name found; the
    templates are untouched (the same model, another name). Ledger events keep their text."""
    col = collections.c.face_model_version
    with engine.begin() as conn:
        stored = conn.execute(sa.select(col).distinct()).scalars().all()
        for name in stored:
            number = canonical(str(name))
            if number != name:
                conn.execute(collections.update().where(col == name)
                             .values(face_model_version=number))


def _inserted_pk(res: sa.CursorResult[Any]) -> int:
    pk = res.inserted_primary_key
    assert pk is not None
    return int(pk[0])


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]
