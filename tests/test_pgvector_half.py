"""pgvector with templates at half precision (halfvec, the default): the rounding stays within
what the search pre-filter allows for, and a database written at the other precision is
converted on start with every collection's faces and partial index (a real PostgreSQL 18 +
pgvector server)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import sqlalchemy as sa

from faceledger.db import make_engine
from faceledger.settings import Settings
from faceledger.store import Catalog, PgVectorIndex, open_store


def _vectors(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, dim))
    out: np.ndarray = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    return out


def test_halfvec_distances_stay_within_the_slack(postgres_url: str) -> None:
    catalog = Catalog(make_engine(postgres_url))
    index = PgVectorIndex(catalog, half=True, ef_search=1000)
    vecs = _vectors(600, 256, 0)
    # templates that are not unit vectors too (dlib's are ~0.6 long), and tiny components
    vecs[:200] *= 0.6
    vecs[200:220, :128] = 1e-6
    with catalog.begin() as conn:
        coll = catalog.create_collection(conn, "h", "m", 256)
        index.create_collection(conn, coll.pk, 256)
        index.add(conn, coll.pk, list(range(1, 601)), vecs)
    worst = 0.0
    for q in _vectors(20, 256, 1):
        keys, approx = index.nearest(coll.pk, coll.version, q, 600)
        exact = np.linalg.norm(vecs[keys - 1].astype(np.float64) - q, axis=1)
        slack = index.distance_slack(q, approx)
        assert np.all(exact - approx <= slack)  # the pre-filter never drops a passing face
        worst = max(worst, float(np.max(np.abs(exact - approx))))
    assert 0 < worst < 1e-3  # rounded, but far below any threshold's width
    catalog.engine.dispose()


def test_a_database_is_converted_between_precisions(postgres_url: str) -> None:
    catalog = Catalog(make_engine(postgres_url))
    full = PgVectorIndex(catalog, half=False)
    vecs = _vectors(300, 128, 2)
    with catalog.begin() as conn:
        a = catalog.create_collection(conn, "a", "m", 128)
        full.create_collection(conn, a.pk, 128)
        full.add(conn, a.pk, list(range(1, 301)), vecs)
        b = catalog.create_collection(conn, "b", "m", 128)
        full.create_collection(conn, b.pk, 128)  # empty: its index must come back too
    q = vecs[7]
    before = full.search(a.pk, a.version, q, 10)
    half = PgVectorIndex(catalog, half=True)  # converts on start
    with catalog.read() as conn:
        tables = set(conn.execute(sa.text(
            "SELECT tablename FROM pg_tables WHERE tablename ~ '^fl_(vectors|halfvecs)_'"
        )).scalars())
        indexes = set(conn.execute(sa.text(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'fl_halfvecs_128'")).scalars())
    assert tables == {"fl_halfvecs_128"}
    assert {f"fl_vec_c{a.pk}", f"fl_vec_c{b.pk}"} <= indexes
    assert half.keys(a.pk, a.version).tolist() == list(range(1, 301))
    assert half.search(a.pk, a.version, q, 10)[0] == before[0] == 8
    # and back: the float32 layout again (what halfvec kept)
    again = PgVectorIndex(catalog, half=False)
    assert again.keys(a.pk, a.version).tolist() == list(range(1, 301))
    with catalog.read() as conn:
        plan = "\n".join(conn.execute(sa.text(
            f"EXPLAIN SELECT face_pk FROM fl_vectors_128 WHERE collection_pk = {a.pk} "
            "ORDER BY embedding <-> CAST(:q AS vector) LIMIT 10"),
            {"q": "[" + ",".join(["0"] * 128) + "]"}).scalars())
    assert f"fl_vec_c{a.pk}" in plan  # the collection's partial HNSW index is used
    catalog.engine.dispose()


def test_the_configured_hnsw_m_builds_the_index(postgres_url: str, tmp_path: Path) -> None:
    """FACELEDGER_PGVECTOR_HNSW_M reaches the collection's partial index (past ~1M faces the
    default m=16 loses recall that ef_search, capped at 1,000 by pgvector, cannot win back)."""
    settings = Settings(data_dir=tmp_path, database_url=postgres_url, vector_index="pgvector",
                        pgvector_hnsw_m=24)
    catalog, index = open_store(settings, make_engine(postgres_url))
    assert isinstance(index, PgVectorIndex) and index.m == 24
    with catalog.begin() as conn:
        coll = catalog.create_collection(conn, "wide", "m", 256)
        index.create_collection(conn, coll.pk, 256)
        ddl = conn.execute(sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"),
                           {"n": f"fl_vec_c{coll.pk}"}).scalar_one()
    assert "m='24'" in ddl.replace(" ", "") and "ef_construction='200'" in ddl.replace(" ", "")
    catalog.engine.dispose()
