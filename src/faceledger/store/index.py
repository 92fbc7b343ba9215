"""The vector index Protocol: nearest templates within one collection.

The catalog stays the source of truth; an index is either written inside the catalog's
transaction (a server engine sharing the database: pgvector) or follows the catalog by version
(the embedded index, rebuildable from it at any time). Either way `search` returns candidate keys
only: the service re-scores them exactly from the templates in the catalog, so every engine gives
the same distances, and a candidate deleted meanwhile is simply not found in the catalog.

Both implementations raise the same exceptions: ResourceNotFoundException for an unknown
collection, InvalidParameterException for a query of the wrong shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Connection

from ..errors import InvalidParameterException

Vectors = NDArray[np.float32]
Keys = NDArray[np.int64]
Distances = NDArray[np.float32]


class VectorIndex(Protocol):
    """Templates of each collection, searchable by Euclidean distance."""

    name: str

    def create_collection(self, conn: Connection, coll_pk: int, dim: int) -> None:
        """Inside the catalog transaction that creates collection `coll_pk`."""

    def drop_collection(self, conn: Connection, coll_pk: int) -> None:
        """Inside the catalog transaction that deletes collection `coll_pk`."""

    def add(self, conn: Connection, coll_pk: int, keys: Sequence[int], vectors: Vectors) -> None:
        """Inside the catalog transaction that stores these faces."""

    def remove(self, conn: Connection, coll_pk: int, keys: Sequence[int]) -> None:
        """Inside the catalog transaction that deletes these faces."""

    def forget(self, coll_pk: int) -> None:
        """After a collection's deletion committed: drop caches and files held for it."""

    def nearest(self, coll_pk: int, version: int, query: Vectors, k: int
                ) -> tuple[Keys, Distances]:
        """Keys of up to `k` templates nearest to `query` (1-d), nearest first, with their
        Euclidean distances as the engine computed them (float32: re-score before reporting),
        reflecting at least catalog `version` of the collection."""

    def search(self, coll_pk: int, version: int, query: Vectors, k: int) -> Keys:
        """The keys of `nearest`."""

    def keys(self, coll_pk: int, version: int) -> Keys:
        """Every key the index holds for the collection, sorted (consistency checks)."""

    def distance_slack(self, query: Vectors, distances: Distances) -> NDArray[np.float64]:
        """How much lower than the exact distance each of `nearest`'s distances may be, at
        most (the engine's rounding): what a pre-filter must allow for."""

    def close(self) -> None:
        """Persist what can be persisted and release resources."""


def check_query(query: Vectors, dim: int) -> NDArray[np.float32]:
    """A 1-d float32 query of the collection's dimension, else InvalidParameterException."""
    q = np.asarray(query, dtype=np.float32)
    if q.ndim != 1 or q.shape[0] != dim:
        raise InvalidParameterException(
            f"Query template has shape {q.shape}; this collection holds {dim}-d templates."
        )
    if not np.all(np.isfinite(q)):
        raise InvalidParameterException("Query template has non-finite values.")
    return q


def float32_slack(distances: Distances) -> NDArray[np.float64]:
    """The rounding of distances computed in float32, far over-estimated."""
    return np.asarray(distances, dtype=np.float64) * 1e-4 + 1e-5


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidParameterException("The number of neighbours must be a positive integer.")
    return k
