"""The embedded vector index: no server, follows the catalog.

Per collection it holds either an exact float32 matrix (small collections: exact answers in a
few milliseconds) or, past `exact_below` faces, an HNSW graph (hnswlib) with the face keys as
labels. It never owns data: before each search it catches up from the catalog (faces added after
the version it reflects, tombstones of faces deleted since), so it also sees writes made by other
processes, and it can always be rebuilt from the catalog.

HNSW graphs are snapshotted to `directory` so that reopening a large collection takes seconds
instead of a rebuild: files are written under temporary names, fsynced and renamed, and a small
JSON pointer renamed last is the commit point. A kill at any moment leaves either the previous
snapshot or the new one; the catalog's tombstones and versions bring either up to date.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import hnswlib  # type: ignore[import-untyped]
import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Connection

from ..errors import ResourceNotFoundException
from ..permissions import fsync_path, open_private, private_dir, private_file, write_private
from .catalog import Catalog
from .index import Distances, Keys, Vectors, check_k, check_query, float32_slack
from ..text import logger

log = logger("faceledger.store")


@dataclass(frozen=True)
class HnswParams:
    """Graph parameters, measured with bench/search.py's face-like gallery. At 100k faces M=16
    reached recall@10 0.966 (ef 128) and 0.992 (ef 300), M=32 0.998 (ef 200). At 1M with M=32:
    recall@10 0.933 / 0.974 / 0.991 / 0.997 at ef 128 / 256 / 512 / 1024, p99 1.0 / 1.8 / 3.3 /
    5.9 ms; about 1 KiB of RAM per face."""

    m: int = 32
    ef_construction: int = 200
    ef_search: int = 512


class _Exact:
    """Every template in one matrix; search is one matrix-vector product."""

    kind = "exact"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.vecs = np.zeros((0, dim), dtype=np.float32)
        self.sqnorm = np.zeros(0, dtype=np.float32)
        self.labels = np.zeros(0, dtype=np.int64)
        self.pos: dict[int, int] = {}
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def add(self, keys: Keys, vecs: Vectors) -> None:
        fresh = [i for i, k in enumerate(keys.tolist()) if k not in self.pos]
        if not fresh:
            return
        keys, vecs = keys[fresh], vecs[fresh]
        need = self.n + len(keys)
        if need > len(self.labels):
            cap = max(need, 2 * len(self.labels), 64)
            v = np.zeros((cap, self.dim), dtype=np.float32)
            v[: self.n] = self.vecs[: self.n]
            s = np.zeros(cap, dtype=np.float32)
            s[: self.n] = self.sqnorm[: self.n]
            lab = np.zeros(cap, dtype=np.int64)
            lab[: self.n] = self.labels[: self.n]
            self.vecs, self.sqnorm, self.labels = v, s, lab
        self.vecs[self.n:need] = vecs
        self.sqnorm[self.n:need] = np.einsum("ij,ij->i", vecs, vecs)
        self.labels[self.n:need] = keys
        for i, k in enumerate(keys.tolist()):
            self.pos[k] = self.n + i
        self.n = need

    def remove(self, keys: Keys) -> None:
        for k in keys.tolist():
            i = self.pos.pop(k, None)
            if i is None:
                continue
            last = self.n - 1
            if i != last:  # move the last row into the hole
                moved = int(self.labels[last])
                self.vecs[i] = self.vecs[last]
                self.sqnorm[i] = self.sqnorm[last]
                self.labels[i] = moved
                self.pos[moved] = i
            self.n = last

    def search(self, q: Vectors, k: int) -> tuple[Keys, Distances]:
        if self.n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        d2 = self.sqnorm[: self.n] - 2.0 * (self.vecs[: self.n] @ q)
        k = min(k, self.n)
        top = np.argpartition(d2, k - 1)[:k] if k < self.n else np.arange(self.n)
        top = top[np.argsort(d2[top], kind="stable")]
        dist = np.sqrt(np.maximum(d2[top] + float(q @ q), 0.0)).astype(np.float32)
        return self.labels[top].copy(), dist

    def keys(self) -> Keys:
        return np.sort(self.labels[: self.n])

    def items(self) -> tuple[Keys, Vectors]:
        return self.labels[: self.n].copy(), self.vecs[: self.n].copy()


class _Hnsw:
    """An hnswlib graph whose labels are face keys; deletions are marked, slots reused."""

    kind = "hnsw"

    def __init__(self, dim: int, params: HnswParams, capacity: int = 1024,
                 graph: Any = None, live: set[int] | None = None) -> None:
        self.dim = dim
        self.params = params
        if graph is None:
            graph = hnswlib.Index(space="l2", dim=dim)
            graph.init_index(max_elements=max(capacity, 1024), M=params.m,
                             ef_construction=params.ef_construction, allow_replace_deleted=True)
        self.graph = graph
        self.live: set[int] = live if live is not None else set()

    def __len__(self) -> int:
        return len(self.live)

    def add(self, keys: Keys, vecs: Vectors) -> None:
        fresh = [i for i, k in enumerate(keys.tolist()) if k not in self.live]
        if not fresh:
            return
        keys, vecs = keys[fresh], vecs[fresh]
        need = self.graph.get_current_count() + len(keys)
        cap = self.graph.get_max_elements()
        if need > cap:
            self.graph.resize_index(max(need, int(cap * 1.5)))
        self.graph.add_items(vecs, keys, replace_deleted=True)
        self.live.update(keys.tolist())

    def remove(self, keys: Keys) -> None:
        for k in keys.tolist():
            if k in self.live:
                self.graph.mark_deleted(k)
                self.live.discard(k)

    def search(self, q: Vectors, k: int) -> tuple[Keys, Distances]:
        n = len(self.live)
        if n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        k = min(k, n)
        self.graph.set_ef(max(self.params.ef_search, k))
        labels, d2 = self.graph.knn_query(q.reshape(1, -1), k=k)  # squared L2
        return (np.asarray(labels[0], dtype=np.int64),
                np.sqrt(np.maximum(d2[0], 0.0)).astype(np.float32))

    def keys(self) -> Keys:
        return np.asarray(sorted(self.live), dtype=np.int64)


_Store = _Exact | _Hnsw


@dataclass
class _Collection:
    store: _Store
    version: int
    dirty: int  # changes applied since the last snapshot
    lock: threading.Lock


class EmbeddedIndex:
    """The default VectorIndex: in-process, rebuilt or caught up from the catalog."""

    name = "embedded"

    def __init__(self, catalog: Catalog, directory: Path | None, *,
                 exact_below: int = 20_000, snapshot_changes: int = 50_000,
                 params: HnswParams | None = None) -> None:
        self.catalog = catalog
        self.directory = directory
        self.exact_below = exact_below
        self.snapshot_changes = snapshot_changes
        self.params = params or HnswParams()
        self._lock = threading.Lock()
        self._open: dict[int, _Collection] = {}
        if directory is not None:
            private_dir(directory, tighten=True)  # templates: owner-only
            for tmp in directory.glob("*.tmp"):
                if not _writer_alive(tmp):  # another process's save in progress stays
                    tmp.unlink(missing_ok=True)

    def set_ef_search(self, ef: int) -> None:
        """Search breadth of every HNSW graph (recall against latency; bench/search.py)."""
        self.params = replace(self.params, ef_search=int(ef))
        with self._lock:
            for c in self._open.values():
                if isinstance(c.store, _Hnsw):
                    c.store.params = self.params

    # --- writes: the catalog is the log; nothing to do inside its transaction ---------------

    def create_collection(self, conn: Connection, coll_pk: int, dim: int) -> None:
        return None

    def drop_collection(self, conn: Connection, coll_pk: int) -> None:
        return None

    def add(self, conn: Connection, coll_pk: int, keys: Sequence[int], vectors: Vectors) -> None:
        return None

    def remove(self, conn: Connection, coll_pk: int, keys: Sequence[int]) -> None:
        return None

    def forget(self, coll_pk: int) -> None:
        with self._lock:
            self._open.pop(coll_pk, None)
        self._remove_files(coll_pk)

    # --- reads -------------------------------------------------------------------------------

    def nearest(self, coll_pk: int, version: int, query: Vectors, k: int
                ) -> tuple[Keys, Distances]:
        check_k(k)
        c = self._ready(coll_pk, version)
        with c.lock:
            q = check_query(query, c.store.dim)
            return c.store.search(q, k)

    def search(self, coll_pk: int, version: int, query: Vectors, k: int) -> Keys:
        return self.nearest(coll_pk, version, query, k)[0]

    def keys(self, coll_pk: int, version: int) -> Keys:
        c = self._ready(coll_pk, version)
        with c.lock:
            return c.store.keys()

    def distance_slack(self, query: Vectors, distances: Distances) -> NDArray[np.float64]:
        return float32_slack(distances)

    def kind(self, coll_pk: int) -> str | None:
        """'exact' or 'hnsw' for an open collection (None if not loaded)."""
        c = self._open.get(coll_pk)
        return None if c is None else c.store.kind

    def close(self) -> None:
        with self._lock:
            items = list(self._open.items())
        for pk, c in items:
            with c.lock:
                if c.dirty and isinstance(c.store, _Hnsw):
                    self._snapshot(pk, c)

    def flush(self, coll_pk: int) -> None:
        """Snapshot a collection's graph now (if it has one and changed)."""
        c = self._open.get(coll_pk)
        if c is not None:
            with c.lock:
                if c.dirty and isinstance(c.store, _Hnsw):
                    self._snapshot(coll_pk, c)

    # --- catching up -------------------------------------------------------------------------

    def _ready(self, coll_pk: int, version: int) -> _Collection:
        with self._lock:
            c = self._open.get(coll_pk)
            if c is None:
                c = self._load(coll_pk)
                self._open[coll_pk] = c
        if c.version < version:
            with c.lock:
                if c.version < version:
                    self._catch_up(coll_pk, c)
        return c

    def _catch_up(self, coll_pk: int, c: _Collection) -> None:
        with self.catalog.read() as conn:
            ch = self.catalog.changes_since(conn, coll_pk, c.version)
        if ch is None:
            raise ResourceNotFoundException(f"Collection {coll_pk} no longer exists.")
        if len(ch.added_keys):
            c.store.add(ch.added_keys, ch.added_vectors)
        if len(ch.removed_keys):
            c.store.remove(ch.removed_keys)
        c.dirty += len(ch.added_keys) + len(ch.removed_keys)
        c.version = ch.version
        if isinstance(c.store, _Exact) and len(c.store) >= max(self.exact_below, 1):
            keys, vecs = c.store.items()
            graph = _Hnsw(c.store.dim, self.params, capacity=len(keys))
            if len(keys):
                graph.add(keys, vecs)
            c.store = graph
            c.dirty = len(keys)
        if isinstance(c.store, _Hnsw) and c.dirty >= self.snapshot_changes:
            self._snapshot(coll_pk, c)

    def _load(self, coll_pk: int) -> _Collection:
        with self.catalog.read() as conn:
            version = self.catalog.collection_version(conn, coll_pk)
            if version is None:
                raise ResourceNotFoundException(f"Collection {coll_pk} does not exist.")
            snap = self._read_snapshot(coll_pk, version)
            if snap is not None:
                return snap
            coll = self.catalog.collection_by_pk(conn, coll_pk)
            if coll is None:
                raise ResourceNotFoundException(f"Collection {coll_pk} does not exist.")
            store: _Store
            if coll.face_count >= max(self.exact_below, 1):
                store = _Hnsw(coll.dim, self.params, capacity=coll.face_count)
            else:
                store = _Exact(coll.dim)
            for keys, vecs in self.catalog.iter_vectors(conn, coll_pk):
                store.add(keys, vecs)
        # version was read before the templates: anything newer is caught up again (idempotent)
        c = _Collection(store, version, len(store), threading.Lock())
        if isinstance(store, _Hnsw):
            self._snapshot(coll_pk, c)
        return c

    # --- snapshots ---------------------------------------------------------------------------

    def _pointer(self, coll_pk: int) -> Path | None:
        return None if self.directory is None else self.directory / f"c{coll_pk}.json"

    def _snapshot(self, coll_pk: int, c: _Collection) -> None:
        pointer = self._pointer(coll_pk)
        if pointer is None or not isinstance(c.store, _Hnsw):
            return
        # Several processes (server workers, a bulk `collection index`) may share the directory:
        # one writer per collection at a time; a busy one is skipped (it snapshots the same data).
        with _file_lock(pointer.parent / f"c{coll_pk}.lock", exclusive=True,
                        wait=False) as held:
            if held:
                self._write_snapshot(coll_pk, c, pointer)

    def _write_snapshot(self, coll_pk: int, c: _Collection, pointer: Path) -> None:
        assert isinstance(c.store, _Hnsw)
        d = pointer.parent
        stem = f"c{coll_pk}-v{c.version}"
        graph_path, keys_path = d / f"{stem}.hnsw", d / f"{stem}.keys.npy"
        mine = f".{os.getpid()}.tmp"  # temporary names of this process only
        try:
            c.store.graph.save_index(str(graph_path) + mine)
            private_file(Path(str(graph_path) + mine))  # hnswlib creates it umask-wide
            with open_private(Path(str(keys_path) + mine)) as fh:
                np.save(fh, c.store.keys())
            for p in (graph_path, keys_path):
                fsync_path(Path(str(p) + mine))
                os.replace(str(p) + mine, p)
            meta = {"collection_pk": coll_pk, "version": c.version, "dim": c.store.dim,
                    "graph": graph_path.name, "keys": keys_path.name,
                    "graph_bytes": graph_path.stat().st_size, "count": len(c.store),
                    "m": self.params.m, "ef_construction": self.params.ef_construction}
            tmp = Path(str(pointer) + mine)
            write_private(tmp, json.dumps(meta))
            fsync_path(tmp)
            os.replace(tmp, pointer)
            _fsync_dir(d)
        except OSError:
            log.warning("could not snapshot the index of collection %s", coll_pk, exc_info=True)
            return
        c.dirty = 0
        for old in list(d.glob(f"c{coll_pk}-v*")):
            if old.name not in (graph_path.name, keys_path.name) and old.suffix != ".tmp":
                old.unlink(missing_ok=True)

    def _read_snapshot(self, coll_pk: int, catalog_version: int) -> _Collection | None:
        pointer = self._pointer(coll_pk)
        if pointer is None or not pointer.is_file():
            return None
        # shared: another process's snapshot cannot replace these files while they are read
        with _file_lock(pointer.parent / f"c{coll_pk}.lock", exclusive=False, wait=True):
            return self._load_snapshot(coll_pk, catalog_version, pointer)

    def _load_snapshot(self, coll_pk: int, catalog_version: int, pointer: Path
                       ) -> _Collection | None:
        try:
            meta = json.loads(pointer.read_text())
            graph_path = pointer.parent / str(meta["graph"])
            keys_path = pointer.parent / str(meta["keys"])
            version = int(meta["version"])
            if version > catalog_version:
                # Another process may have committed and snapshotted since our read: only a
                # snapshot ahead of the catalog as it is now (a restored backup) is unusable.
                with self.catalog.read() as conn:
                    now = self.catalog.collection_version(conn, coll_pk)
                if now is None or version > now:
                    raise ValueError("snapshot is ahead of the catalog")
            if graph_path.stat().st_size != meta["graph_bytes"]:
                raise ValueError("snapshot is truncated")
            keys = np.load(keys_path)
            graph = hnswlib.Index(space="l2", dim=int(meta["dim"]))
            graph.load_index(str(graph_path), max_elements=max(len(keys), 1024),
                             allow_replace_deleted=True)
            store = _Hnsw(int(meta["dim"]), self.params, graph=graph,
                          live=set(keys.tolist()))
            graph.set_ef(self.params.ef_search)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError):
            log.warning("ignoring the unusable index snapshot of collection %s", coll_pk,
                        exc_info=True)
            self._remove_files(coll_pk)
            return None
        return _Collection(store, version, 0, threading.Lock())

    def _remove_files(self, coll_pk: int) -> None:
        if self.directory is None:
            return
        for p in list(self.directory.glob(f"c{coll_pk}-v*")) + list(
            self.directory.glob(f"c{coll_pk}.json*")
        ):
            p.unlink(missing_ok=True)

    def collect_garbage(self) -> None:
        """Remove snapshot files of collections the catalog no longer has."""
        if self.directory is None:
            return
        with self.catalog.read() as conn:
            alive = self.catalog.all_collection_pks(conn)
        for p in self.directory.glob("c*"):
            head = p.name[1:].split("-", 1)[0].split(".", 1)[0]
            if head.isdigit() and int(head) not in alive:
                p.unlink(missing_ok=True)


@contextmanager
def _file_lock(path: Path, *, exclusive: bool, wait: bool) -> Iterator[bool]:
    """An advisory lock (flock) on `path` between processes; yields whether it is held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _writer_alive(tmp: Path) -> bool:
    """Whether the process named in a temporary file's name (`*.<pid>.tmp`) still runs."""
    pid = tmp.suffixes[-2][1:] if len(tmp.suffixes) >= 2 else ""
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True




def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

