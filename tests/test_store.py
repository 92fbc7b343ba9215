"""The store on real storage (SQLite files in tmp dirs, a real PostgreSQL + pgvector server):
catalog transactions, the embedded index (exact and HNSW) and the pgvector index, the same
synthetic gallery searched through each, snapshots, catch-up and deletion.

The vectors are synthetic (clusters of near-duplicates, as a face gallery has) so that these
tests need no model; tests/test_store_congruence.py repeats the comparison on real faces.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from faceledger.db import make_engine
from faceledger.errors import (
    InvalidParameterException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
)
from faceledger.store import Catalog, CollectionRow, EmbeddedIndex, PgVectorIndex, VectorIndex
from faceledger.store.thresholds import (
    MAX_DEFAULT_FMR,
    MIN_DEFAULT_FMR,
    default_search_fmr,
    expected_false_matches,
)

DIM = 128


def gallery(identities: int, per: int, seed: int = 0
            ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Clusters: `per` near-duplicates (spread 0.05) around each of `identities` centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (identities, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(identities), per)
    vecs = centres[labels] + rng.normal(0, 0.05 / np.sqrt(DIM), (len(labels), DIM))
    return vecs.astype(np.float32), labels.astype(np.int64)


def add(catalog: Catalog, index: VectorIndex, cid: str, vecs: NDArray[np.float32]) -> None:
    """Store templates in one transaction, as IndexFaces does (catalog and index together)."""
    with catalog.begin() as conn:
        coll = catalog.lock_collection(conn, cid)
        before = set(catalog.live_keys(conn, coll.pk).tolist())
        catalog.add_vectors(conn, coll, vecs, [str(uuid.uuid4()) for _ in vecs],
                            [None] * len(vecs))
        keys = [k for k in catalog.live_keys(conn, coll.pk).tolist() if k not in before]
        index.add(conn, coll.pk, keys, vecs)


def create(catalog: Catalog, index: VectorIndex, cid: str) -> CollectionRow:
    with catalog.begin() as conn:
        coll = catalog.create_collection(conn, cid, "test-model", DIM)
        index.create_collection(conn, coll.pk, DIM)
    return coll


def current(catalog: Catalog, cid: str) -> CollectionRow:
    with catalog.read() as conn:
        return catalog.collection(conn, cid)


def exact_within(vecs: NDArray[np.float32], keys: NDArray[np.int64], q: NDArray[np.float32],
                 radius: float) -> set[int]:
    d = np.linalg.norm(vecs.astype(np.float64) - q.astype(np.float64), axis=1)
    return set(keys[d <= radius].tolist())


ENGINES = ["embedded-exact", "embedded-hnsw", "pgvector"]


@pytest.fixture
def make_store(tmp_path: Path, request: pytest.FixtureRequest
               ) -> Iterator[object]:
    """A factory: engine name -> (catalog, index) on real storage."""
    opened: list[tuple[Catalog, VectorIndex]] = []

    def _make(name: str) -> tuple[Catalog, VectorIndex]:
        if name == "pgvector":
            url = request.getfixturevalue("postgres_url")
            catalog = Catalog(make_engine(url))
            index: VectorIndex = PgVectorIndex(catalog)
        else:
            d = tmp_path / name
            d.mkdir(exist_ok=True)
            catalog = Catalog(make_engine(f"sqlite:///{d / 'catalog.db'}"))
            index = EmbeddedIndex(catalog, d / "index",
                                  exact_below=1 if name == "embedded-hnsw" else 10**9)
        opened.append((catalog, index))
        return catalog, index

    yield _make
    for catalog, index in opened:
        index.close()
        catalog.engine.dispose()


@pytest.mark.parametrize("engine", ENGINES)
def test_search_finds_every_near_duplicate_and_nothing_else(make_store, engine: str) -> None:
    catalog, index = make_store(engine)
    vecs, labels = gallery(150, 5)
    create(catalog, index, "g")
    add(catalog, index, "g", vecs[:400])
    add(catalog, index, "g", vecs[400:])
    coll = current(catalog, "g")
    assert coll.face_count == len(vecs)
    with catalog.read() as conn:
        keys = catalog.live_keys(conn, coll.pk)
    assert np.array_equal(index.keys(coll.pk, coll.version), keys)
    rng = np.random.default_rng(1)
    for i in rng.choice(len(vecs), 40, replace=False):
        found = index.search(coll.pk, coll.version, vecs[i], 10)
        assert found[0] == keys[i]  # its own template first
        same = set(keys[labels == labels[i]].tolist())
        assert same <= set(found[:5].tolist())  # the 5 near-duplicates lead the answer


def test_engines_give_identical_answers(make_store) -> None:
    """Congruence: exact, HNSW and pgvector return the same candidates within the radius."""
    vecs, _ = gallery(200, 5, seed=3)
    probes = gallery(200, 5, seed=3)[0][::25] + np.float32(0.001)
    answers: dict[str, list[list[int]]] = {}
    for engine in ENGINES:
        catalog, index = make_store(engine)
        create(catalog, index, "g")
        add(catalog, index, "g", vecs)
        coll = current(catalog, "g")
        with catalog.read() as conn:
            keys = catalog.live_keys(conn, coll.pk)
        answers[engine] = []
        for q in probes:
            found = index.search(coll.pk, coll.version, q, 20)
            inside = exact_within(vecs, keys, q, 0.3)
            # within the radius: the same set in every engine, and the exact one
            assert inside == set(found.tolist()) & inside
            answers[engine].append(sorted(k for k in found.tolist() if k in inside))
    assert answers["embedded-exact"] == answers["embedded-hnsw"] == answers["pgvector"]


@pytest.mark.parametrize("engine", ENGINES)
def test_same_exceptions_in_every_engine(make_store, engine: str) -> None:
    catalog, index = make_store(engine)
    coll = create(catalog, index, "g")
    add(catalog, index, "g", gallery(3, 2)[0])
    coll = current(catalog, "g")
    with pytest.raises(ResourceNotFoundException):
        index.search(coll.pk + 999, 0, np.zeros(DIM, np.float32), 5)
    with pytest.raises(InvalidParameterException):
        index.search(coll.pk, coll.version, np.zeros(DIM + 1, np.float32), 5)
    with pytest.raises(InvalidParameterException):
        index.search(coll.pk, coll.version, np.full(DIM, np.nan, np.float32), 5)
    with pytest.raises(InvalidParameterException):
        index.search(coll.pk, coll.version, np.zeros(DIM, np.float32), 0)
    with pytest.raises(ResourceAlreadyExistsException), catalog.begin() as conn:
        catalog.create_collection(conn, "g", "test-model", DIM)
    with pytest.raises(ResourceNotFoundException), catalog.begin() as conn:
        catalog.lock_collection(conn, "missing")


@pytest.mark.parametrize("engine", ENGINES)
def test_deleted_faces_and_collections_are_gone(make_store, engine: str) -> None:
    catalog, index = make_store(engine)
    vecs, _ = gallery(20, 3)
    create(catalog, index, "g")
    add(catalog, index, "g", vecs)
    coll = current(catalog, "g")
    with catalog.read() as conn:
        keys = catalog.live_keys(conn, coll.pk)
    gone = keys[:6].tolist()
    with catalog.begin() as conn:
        c = catalog.lock_collection(conn, "g")
        catalog.delete_faces(conn, c, gone)
        index.remove(conn, c.pk, gone)
    coll = current(catalog, "g")
    assert coll.face_count == len(vecs) - 6
    for i in range(6):
        assert not set(gone) & set(index.search(coll.pk, coll.version, vecs[i], 10).tolist())
    assert set(index.keys(coll.pk, coll.version).tolist()) == set(keys[6:].tolist())
    with catalog.begin() as conn:
        index.drop_collection(conn, coll.pk)
        catalog.delete_collection(conn, "g")
    index.forget(coll.pk)
    with pytest.raises(ResourceNotFoundException):
        index.search(coll.pk, coll.version, vecs[10], 3)
    with catalog.read() as conn:
        assert catalog.live_keys(conn, coll.pk).size == 0
    # the same id again is a new, empty collection
    again = create(catalog, index, "g")
    assert again.pk != coll.pk and again.face_count == 0
    assert index.search(again.pk, again.version, vecs[0], 3).size == 0


def test_embedded_index_follows_writes_of_another_process(tmp_path: Path) -> None:
    """Two indexes over one SQLite catalog (as a server and a CLI would have): each sees the
    other's writes, including deletions, by catching up from versions and tombstones."""
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    cat_a, cat_b = Catalog(make_engine(url)), Catalog(make_engine(url))
    a = EmbeddedIndex(cat_a, tmp_path / "a", exact_below=1)
    b = EmbeddedIndex(cat_b, tmp_path / "b", exact_below=1)
    vecs, _ = gallery(30, 2)
    create(cat_a, a, "g")
    add(cat_a, a, "g", vecs[:30])
    coll = current(cat_b, "g")
    assert b.keys(coll.pk, coll.version).size == 30
    add(cat_b, b, "g", vecs[30:])
    with cat_b.begin() as conn:
        c = cat_b.lock_collection(conn, "g")
        first = cat_b.live_keys(conn, c.pk)[:5].tolist()
        cat_b.delete_faces(conn, c, first)
    coll = current(cat_a, "g")
    held = set(a.keys(coll.pk, coll.version).tolist())
    assert len(held) == 55 and not held & set(first)


def test_snapshot_reopens_without_rebuild_and_catches_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    catalog = Catalog(make_engine(url))
    index = EmbeddedIndex(catalog, tmp_path / "ix", exact_below=1)
    vecs, _ = gallery(100, 4)
    create(catalog, index, "g")
    add(catalog, index, "g", vecs[:300])
    coll = current(catalog, "g")
    assert index.search(coll.pk, coll.version, vecs[0], 1).size == 1
    index.close()
    assert (tmp_path / "ix" / f"c{coll.pk}.json").is_file()
    # more writes while no index is open: the snapshot is behind the catalog
    add(catalog, index, "g", vecs[300:])
    reopened = EmbeddedIndex(Catalog(make_engine(url)), tmp_path / "ix", exact_below=1)
    coll = current(catalog, "g")
    assert reopened.kind(coll.pk) is None
    with catalog.read() as conn:
        keys = catalog.live_keys(conn, coll.pk)
    assert np.array_equal(reopened.keys(coll.pk, coll.version), keys)
    assert reopened.kind(coll.pk) == "hnsw"
    assert reopened.search(coll.pk, coll.version, vecs[350], 1)[0] == keys[350]


def test_damaged_snapshot_is_ignored_and_rebuilt(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    catalog = Catalog(make_engine(url))
    index = EmbeddedIndex(catalog, tmp_path / "ix", exact_below=1)
    vecs, _ = gallery(50, 4)
    create(catalog, index, "g")
    add(catalog, index, "g", vecs)
    coll = current(catalog, "g")
    index.search(coll.pk, coll.version, vecs[0], 1)
    index.close()
    graph = next((tmp_path / "ix").glob(f"c{coll.pk}-v*.hnsw"))
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])  # a torn write
    (tmp_path / "ix" / "c999-v1.hnsw.tmp").write_bytes(b"partial")  # a save cut by a kill
    reopened = EmbeddedIndex(Catalog(make_engine(url)), tmp_path / "ix", exact_below=1)
    assert not list((tmp_path / "ix").glob("*.tmp"))
    with catalog.read() as conn:
        keys = catalog.live_keys(conn, coll.pk)
    assert np.array_equal(reopened.keys(coll.pk, coll.version), keys)
    assert reopened.search(coll.pk, coll.version, vecs[77], 1)[0] == keys[77]


def test_embedded_index_switches_from_exact_to_hnsw(tmp_path: Path) -> None:
    catalog = Catalog(make_engine(f"sqlite:///{tmp_path / 'c.db'}"))
    index = EmbeddedIndex(catalog, tmp_path / "ix", exact_below=200)
    vecs, _ = gallery(100, 3)
    create(catalog, index, "g")
    add(catalog, index, "g", vecs[:150])
    coll = current(catalog, "g")
    index.search(coll.pk, coll.version, vecs[0], 1)
    assert index.kind(coll.pk) == "exact"
    add(catalog, index, "g", vecs[150:])
    coll = current(catalog, "g")
    top = index.search(coll.pk, coll.version, vecs[250], 1)
    assert index.kind(coll.pk) == "hnsw"
    with catalog.read() as conn:
        assert top[0] == catalog.live_keys(conn, coll.pk)[250]


def test_templates_are_stored_bit_exact(tmp_path: Path) -> None:
    catalog = Catalog(make_engine(f"sqlite:///{tmp_path / 'c.db'}"))
    index = EmbeddedIndex(catalog, None)
    vecs, _ = gallery(2, 2)
    create(catalog, index, "g")
    add(catalog, index, "g", vecs)
    coll = current(catalog, "g")
    with catalog.read() as conn:
        ((_, stored),) = list(catalog.iter_vectors(conn, coll.pk))
    assert stored.dtype == np.float32 and np.array_equal(stored, vecs)


def test_default_threshold_keeps_expected_false_matches_under_the_bound() -> None:
    for n in (1, 10, 100, 1_000, 10_000):
        fmr = default_search_fmr(n)
        assert MIN_DEFAULT_FMR <= fmr <= MAX_DEFAULT_FMR
        assert expected_false_matches(fmr, n) <= 0.01 + 1e-12
    # past the floor the bound cannot hold, and the number says so
    for n in (100_000, 10**9):
        assert default_search_fmr(n) == MIN_DEFAULT_FMR
        assert expected_false_matches(MIN_DEFAULT_FMR, n) == pytest.approx(n * 1e-6)
    assert default_search_fmr(0) == MAX_DEFAULT_FMR


def test_default_search_threshold_never_claims_below_the_calibration_floor() -> None:
    from faceledger.calibration import load_calibration

    floor = load_calibration("1.0").lowest_credible_fmr
    assert 1e-7 < floor < 1e-5
    assert default_search_fmr(1000, 0.01, floor) == pytest.approx(1e-5)
    assert default_search_fmr(10_000_000, 0.01, floor) == floor
    assert default_search_fmr(10, 0.01, floor) == MAX_DEFAULT_FMR
