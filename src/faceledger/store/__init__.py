"""Collections, faces and users: the SQL catalog (source of truth, templates included) and the
vector index behind one Protocol (embedded by default, PostgreSQL + pgvector as the server)."""

from __future__ import annotations

from sqlalchemy import Engine

from ..permissions import data_subdir
from ..settings import Settings
from .catalog import Catalog, CollectionRow, FaceRow, NewFace, UserRow
from .embedded import EmbeddedIndex, HnswParams
from .index import VectorIndex
from .pgvector import PgVectorIndex


def open_index(settings: Settings, catalog: Catalog) -> VectorIndex:
    """The vector index chosen in settings, over `catalog`."""
    match settings.vector_index:
        case "embedded":
            return EmbeddedIndex(
                catalog,
                data_subdir(settings.data_dir, "index"),
                exact_below=settings.index_exact_below,
                snapshot_changes=settings.index_snapshot_changes,
                params=HnswParams(ef_search=settings.index_ef_search),
            )
        case "pgvector":
            return PgVectorIndex(catalog, m=settings.pgvector_hnsw_m,
                                 ef_search=settings.index_ef_search,
                                 half=settings.pgvector_halfvec)
        case other:
            raise ValueError(f"unknown vector index {other!r}: choose embedded or pgvector")


def open_store(settings: Settings, engine: Engine) -> tuple[Catalog, VectorIndex]:
    """The catalog on `engine` and the configured index over it."""
    catalog = Catalog(engine)
    return catalog, open_index(settings, catalog)


__all__ = [
    "Catalog",
    "CollectionRow",
    "EmbeddedIndex",
    "FaceRow",
    "HnswParams",
    "NewFace",
    "PgVectorIndex",
    "UserRow",
    "VectorIndex",
    "open_index",
    "open_store",
]
