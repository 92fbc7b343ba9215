"""The server vector index: PostgreSQL with pgvector, in the catalog's own database.

Templates are written to `fl_vectors_<dim>` inside the catalog transaction that stores the face,
so catalog and index can never disagree: there is nothing to catch up and nothing to rebuild
after a crash (PostgreSQL's write-ahead log covers both). Each collection gets its own partial
HNSW index (`WHERE collection_pk = N`), so a search walks only that collection's graph instead
of post-filtering a shared one (which loses recall). The same SQL runs on a single server, on
a managed PostgreSQL, or distributed with Citus.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
import sqlalchemy as sa
from sqlalchemy import Connection

from ..errors import ResourceNotFoundException
from .catalog import Catalog
from .index import Distances, Keys, Vectors, check_k, check_query, float32_slack

# pgvector's ceiling for hnsw.ef_search; beyond it an iterative scan supplies the rest.
_MAX_EF = 1000


def vector_literal(v: Vectors) -> str:
    """pgvector's text form; repr() of each float32 (as float64) reads back bit-exactly."""
    return "[" + ",".join(repr(x) for x in np.asarray(v, dtype=np.float32).tolist()) + "]"


class PgVectorIndex:
    """VectorIndex on PostgreSQL + pgvector (the catalog must live in the same database)."""

    name = "pgvector"

    def __init__(self, catalog: Catalog, *, m: int = 16, ef_construction: int = 200,
                 ef_search: int = 128, half: bool = False) -> None:
        if catalog.dialect != "postgresql":
            raise ValueError("the pgvector index needs the catalog on PostgreSQL "
                             "(set FACELEDGER_DATABASE_URL=postgresql+psycopg://...)")
        self.catalog = catalog
        self.m, self.ef_construction, self.ef_search = m, ef_construction, ef_search
        # half: templates stored and searched as 16-bit floats (pgvector `halfvec`), in tables
        # of their own so that a database never mixes the two
        self.half = half
        self._type = "halfvec" if half else "vector"
        self._dims: dict[int, int] = {}
        self._lock = threading.Lock()
        with catalog.begin() as conn:
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
            self._convert(conn)

    def _convert(self, conn: Connection) -> None:
        """Tables of the other precision (written before `half` was changed) converted to
        this one, with every collection's partial index, in the caller's transaction."""
        other = "fl_vectors_" if self.half else "fl_halfvecs_"
        names = conn.execute(sa.text(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND tablename LIKE :p"), {"p": other + "%"}).scalars().all()
        for name in names:
            suffix = str(name)[len(other):]
            if not suffix.isdigit():
                continue
            # one converter at a time (several servers may start together)
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(2026120120)"))
            if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": str(name)}).scalar() is None:
                continue
            dim = int(suffix)
            colls = conn.execute(sa.text(
                f"SELECT DISTINCT collection_pk FROM {name}")).scalars().all()
            indexes = conn.execute(sa.text(
                "SELECT indexname FROM pg_indexes WHERE tablename = :t AND indexname LIKE "
                "'fl_vec_c%'"), {"t": str(name)}).scalars().all()
            pks = {int(str(i)[len("fl_vec_c"):]) for i in indexes} | {int(c) for c in colls}
            for pk in pks:
                conn.execute(sa.text(f"DROP INDEX IF EXISTS fl_vec_c{pk}"))
            table = self._create_table(conn, dim)
            conn.execute(sa.text(
                f"INSERT INTO {table} (face_pk, collection_pk, embedding) SELECT face_pk, "
                f"collection_pk, embedding::{self._type}({dim}) FROM {name}"))
            conn.execute(sa.text(f"DROP TABLE {name}"))
            for pk in sorted(pks):
                self.create_collection(conn, pk, dim)

    def _table(self, dim: int) -> str:
        return f"fl_{'halfvecs' if self.half else 'vectors'}_{int(dim)}"

    def _dim(self, conn: Connection, coll_pk: int) -> int:
        dim = self._dims.get(coll_pk)
        if dim is None:
            coll = self.catalog.collection_by_pk(conn, coll_pk)
            if coll is None:
                raise ResourceNotFoundException(f"Collection {coll_pk} does not exist.")
            dim = self._dims[coll_pk] = coll.dim
        return dim

    # --- writes, inside the catalog transaction ----------------------------------------------

    def _create_table(self, conn: Connection, dim: int) -> str:
        """The table of `dim`-d vectors at this index's precision (created if absent)."""
        table = self._table(dim)
        conn.execute(sa.text(
            f"CREATE TABLE IF NOT EXISTS {table} (face_pk BIGINT PRIMARY KEY, "
            f"collection_pk BIGINT NOT NULL, embedding {self._type}({int(dim)}) NOT NULL)"))
        return table

    def create_collection(self, conn: Connection, coll_pk: int, dim: int) -> None:
        table = self._create_table(conn, dim)
        conn.execute(sa.text(
            f"CREATE INDEX IF NOT EXISTS fl_vec_c{int(coll_pk)} ON {table} "
            f"USING hnsw (embedding {self._type}_l2_ops) "
            f"WITH (m = {int(self.m)}, ef_construction = {int(self.ef_construction)}) "
            f"WHERE collection_pk = {int(coll_pk)}"))
        self._dims[coll_pk] = dim

    def drop_collection(self, conn: Connection, coll_pk: int) -> None:
        dim = self._dim(conn, coll_pk)
        conn.execute(sa.text(f"DROP INDEX IF EXISTS fl_vec_c{int(coll_pk)}"))
        conn.execute(sa.text(f"DELETE FROM {self._table(dim)} WHERE collection_pk = :c"),
                     {"c": coll_pk})

    def add(self, conn: Connection, coll_pk: int, keys: Sequence[int], vectors: Vectors) -> None:
        if len(keys) == 0:
            return
        dim = self._dim(conn, coll_pk)
        rows = [{"k": int(k), "c": coll_pk, "v": vector_literal(v)}
                for k, v in zip(keys, vectors)]
        conn.execute(sa.text(
            f"INSERT INTO {self._table(dim)} (face_pk, collection_pk, embedding) "
            f"VALUES (:k, :c, CAST(:v AS {self._type}))"), rows)

    def remove(self, conn: Connection, coll_pk: int, keys: Sequence[int]) -> None:
        if len(keys) == 0:
            return
        dim = self._dim(conn, coll_pk)
        conn.execute(sa.text(
            f"DELETE FROM {self._table(dim)} WHERE collection_pk = :c AND face_pk = ANY(:ks)"),
            {"c": coll_pk, "ks": [int(k) for k in keys]})

    def forget(self, coll_pk: int) -> None:
        self._dims.pop(coll_pk, None)

    # --- reads -------------------------------------------------------------------------------

    def search(self, coll_pk: int, version: int, query: Vectors, k: int) -> Keys:
        return self.nearest(coll_pk, version, query, k)[0]

    def nearest(self, coll_pk: int, version: int, query: Vectors, k: int
                ) -> tuple[Keys, Distances]:
        check_k(k)
        with self.catalog.engine.begin() as conn:
            if self.catalog.collection_version(conn, coll_pk) is None:
                raise ResourceNotFoundException(f"Collection {coll_pk} does not exist.")
            dim = self._dim(conn, coll_pk)
            q = check_query(query, dim)
            ef = max(self.ef_search, k)
            conn.execute(sa.text("SELECT set_config('hnsw.ef_search', :ef, true)"),
                         {"ef": str(min(ef, _MAX_EF))})
            if ef > _MAX_EF:
                conn.execute(sa.text(
                    "SELECT set_config('hnsw.iterative_scan', 'strict_order', true)"))
            # The collection pk is inlined (an integer from the catalog) so that the planner
            # can match the collection's partial index.
            rows = conn.execute(sa.text(
                f"SELECT face_pk, embedding <-> CAST(:q AS {self._type}) AS d "
                f"FROM {self._table(dim)} WHERE collection_pk = {int(coll_pk)} "
                f"ORDER BY embedding <-> CAST(:q AS {self._type}) LIMIT :k"),
                {"q": vector_literal(q), "k": int(k)}).all()
        return (np.asarray([r[0] for r in rows], dtype=np.int64),
                np.asarray([r[1] for r in rows], dtype=np.float32))

    def distance_slack(self, query: Vectors, distances: Distances) -> NDArray[np.float64]:
        slack = float32_slack(distances)
        if self.half:
            # halfvec rounds each component to 11 significant bits (and the query too):
            # |d16 - d| <= 2^-11 (|q| + |x|) <= 2^-11 (2|q| + d), plus float16's subnormals
            qn = float(np.linalg.norm(np.asarray(query, dtype=np.float64)))
            slack = slack + 2.0**-11 * (2 * qn + np.asarray(distances, np.float64)) + 1e-6
        return slack

    def keys(self, coll_pk: int, version: int) -> Keys:
        with self.catalog.read() as conn:
            if self.catalog.collection_version(conn, coll_pk) is None:
                raise ResourceNotFoundException(f"Collection {coll_pk} does not exist.")
            dim = self._dim(conn, coll_pk)
            rows = conn.execute(sa.text(
                f"SELECT face_pk FROM {self._table(dim)} WHERE collection_pk = :c "
                f"ORDER BY face_pk"), {"c": coll_pk}).scalars().all()
        return np.asarray(rows, dtype=np.int64)

    def close(self) -> None:
        return None
