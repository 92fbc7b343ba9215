"""HTTP overhead: CompareFaces and SearchFacesByImage through `faceledger serve` with 16
concurrent boto3 clients, against the same calls made in-process on a FaceService.

Both sides run the same inputs with the same concurrency (one thread per client, each with its
own boto3 client or calling the shared service). The server runs as its own process (as a user
runs it: `faceledger serve`, SigV4 keys, 2 inference threads, a queue of 32 so 16 clients are
never throttled), on 127.0.0.1 only; boto3 retries are off, so every error is counted.

Images: LFW from ../shared/faces (two photos of one person for CompareFaces; a collection of one
face per identity, probed with another photo, for SearchFacesByImage), or, without that folder,
scikit-image's astronaut portrait and a mirrored copy.

Prints requests/s, p50 and p99 latency per operation and mode, and the HTTP/in-process ratios.

    python bench/http.py --requests 64 --clients 16
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=64, help="requests per operation and mode")
    ap.add_argument("--rounds", type=int, default=4,
                    help="alternate the modes in this many rounds (the machine's load drifts)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    ap.add_argument("--workers", type=int, default=2, help="server inference threads")
    args = ap.parse_args()

    import boto3
    from botocore.config import Config

    from faceledger.context import RequestContext
    from faceledger.server.keys import KeyStore
    from faceledger.server.protocol import implemented_operations
    from faceledger.service import FaceService
    from faceledger.settings import Settings

    src, tgt, gallery, probe, origin = images(args.lfw)
    tmp = Path(tempfile.mkdtemp(prefix="faceledger-bench-http-"))
    env = {**os.environ, "FACELEDGER_DATA_DIR": str(tmp / "data"),
           "FACELEDGER_SERVER_WORKERS": str(args.workers), "FACELEDGER_SERVER_QUEUE": "32"}
    settings = Settings(data_dir=tmp / "data")
    service = FaceService(settings)
    service.pipeline.warm_up()
    key = KeyStore.open(settings, service.engine, create_kek=True).create("bench", ["*"], ["*"])

    ops = set(implemented_operations(service))
    ctx = RequestContext(principal="bench", purpose="benchmark")
    plans: list[tuple[str, Callable[[], Any], Callable[[Any], Any]]] = []
    if "CompareFaces" in ops:
        plans.append((
            "CompareFaces",
            lambda: service.compare_faces({"Bytes": src}, {"Bytes": tgt}, ctx=ctx),
            lambda c: c.compare_faces(SourceImage={"Bytes": src}, TargetImage={"Bytes": tgt}),
        ))
    missing = [op for op in ("CompareFaces", "SearchFacesByImage") if op not in ops]
    if "SearchFacesByImage" in ops:
        service.create_collection(COLLECTION, ctx=ctx)
        for i, data in enumerate(gallery):
            service.index_faces(COLLECTION, {"Bytes": data}, external_image_id=f"g{i}",
                                max_faces=1, ctx=ctx)
        plans.append((
            "SearchFacesByImage",
            lambda: service.search_faces_by_image(COLLECTION, {"Bytes": probe}, ctx=ctx),
            lambda c: c.search_faces_by_image(CollectionId=COLLECTION, Image={"Bytes": probe}),
        ))

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", "from faceledger.cli import main; main()", "serve",
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"

    def client() -> Any:
        return boto3.session.Session().client(
            "rekognition", endpoint_url=url, region_name=settings.region,
            aws_access_key_id=key.info.access_key_id,
            aws_secret_access_key=key.secret_access_key,
            config=Config(retries={"total_max_attempts": 1}, max_pool_connections=4,
                          read_timeout=300))

    runs: list[Run] = []
    try:
        probe_client = client()
        deadline = time.monotonic() + 120
        while True:
            try:
                probe_client.detect_faces(Image={"Bytes": src})
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.3)
        for name, local, remote in plans:
            local()  # warm: first-call costs (calibration, index load) are not the point
            clients = [client() for _ in range(args.clients)]
            remote(clients[0])
            local_run, http_run = Run(name, "in-process"), Run(name, "HTTP+SigV4")
            per_round = max(1, args.requests // args.rounds)
            for i in range(args.rounds):
                for mode in (("local", "http") if i % 2 == 0 else ("http", "local")):
                    if mode == "local":
                        part = hammer(name, "in-process", [local] * args.clients, per_round)
                        local_run.merge(part)
                    else:
                        part = hammer(name, "HTTP+SigV4",
                                      [lambda c=c, r=remote: r(c) for c in clients], per_round)
                        http_run.merge(part)
            runs += [local_run, http_run]
    finally:
        server.terminate()
        server.wait(timeout=60)
        service.close()

    print(f"faceledger HTTP overhead: {args.clients} concurrent clients, {args.requests} requests "
          f"per row in {args.rounds} alternating rounds, server {args.workers} inference threads, images: {origin}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'operation':<20} {'mode':<12} {'ok':>5} {'errors':>6} {'req/s':>8} "
          f"{'p50 ms':>9} {'p99 ms':>9}")
    for r in runs:
        print(f"{r.operation:<20} {r.mode:<12} {len(r.latencies):>5} {len(r.errors):>6} "
              f"{r.rate:>8.2f} {r.pct(50):>9.1f} {r.pct(99):>9.1f}")
    print()
    for i in range(0, len(runs), 2):
        local_run, http_run = runs[i], runs[i + 1]
        ratio = http_run.rate / local_run.rate
        print(f"{local_run.operation}: HTTP/in-process throughput x{ratio:.3f}"
              f", p50 x{http_run.pct(50) / local_run.pct(50):.3f}"
              f", p99 x{http_run.pct(99) / local_run.pct(99):.3f}")
    for op in missing:
        print(f"{op}: not implemented by this FaceService, not measured")
    errors = [e for r in runs for e in r.errors]
    for e in sorted(set(errors))[:5]:
        print("error:", e)
    print(json.dumps({"errors": len(errors)}))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
