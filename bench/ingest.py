"""Bulk enrolment throughput: images/s of `faceledger collection index` on all cores (a pool
of N pipeline processes, 2N threads writing through the service) against the sequential path
(one thread, the pipeline in this process), on the same images in one run.

Every image goes through IndexFaces and its ledger event in both modes, each mode into its own
SQLite data dir. The images are split into rounds; each round runs both modes on the same
images, the order alternating between rounds, so the drifting load of a shared machine falls
on both alike. Model loading is outside the timings (both modes warm up first). "cores busy"
is CPU seconds (this process and its workers) per wall second: what the run really got.

Images: ../shared/faces/utkface-balanced (2,000 faces, 200x200), or --images DIR.

    python bench/ingest.py --limit 2000 --rounds 4

--ray: the process pool of 2 against `collection index --ray` on a Ray cluster started here
(a head and a second node, real raylets of one CPU each; actors started once, before the
rounds), and the round trip of an empty actor call: what Ray adds per batch and per image.
"cores busy" then counts the cluster's processes too.

    python bench/ingest.py --ray --limit 400 --rounds 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# bench/http.py would shadow the standard library's http (urllib3, hence Ray, import it)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
DEFAULT_IMAGES = REPO.parent / "shared" / "faces" / "utkface-balanced"


def cpu_seconds() -> float:
    """CPU time of this process and its live children (the pool's workers)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return float(total)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--limit", type=int, default=2000, help="images to enrol (per mode)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--workers", type=int, default=0, help="pool processes (0: one per core)")
    ap.add_argument("--ray", action="store_true",
                    help="process pool of --workers (default 2) against 2 Ray nodes x 1 CPU")
    ap.add_argument("--ray-batch", type=int, default=8)
    args = ap.parse_args()

    from faceledger.bulk import Summary, find_images, index_images, index_images_ray
    from faceledger.context import RequestContext
    from faceledger.service import FaceService
    from faceledger.settings import Settings
    from faceledger.vision.pool import PipelinePool, default_workers

    if not args.images.is_dir():
        print(f"no images at {args.images}", file=sys.stderr)
        return 2
    images = find_images([args.images], "relative-path")[: args.limit]
    n = default_workers(args.workers) if not args.ray else (args.workers or 2)
    tmp = Path(tempfile.mkdtemp(prefix="flbi-"))  # short: Ray's sockets live under it
    ctx = RequestContext(principal="bench", purpose="benchmark")
    RAY = 0  # the mode's "processes" value that means the Ray cluster
    modes = ({"sequential (1 process)": 1, f"parallel ({n} processes)": n} if not args.ray
             else {f"parallel ({n} processes)": n, "ray (2 nodes x 1 CPU)": RAY})
    services: dict[str, FaceService] = {}
    cluster = None
    actors: list[object] = []
    ray_call_ms: list[float] = []
    for mode, w in modes.items():
        settings = Settings(data_dir=tmp / mode.split()[0])
        if w == RAY:
            from faceledger.bulk import analysis_work
            from faceledger.cluster import LocalCluster, connect, start_workers

            cluster = LocalCluster(tmp, workers=1, cpus=1, object_store_mb=200)
            import atexit

            atexit.register(cluster.stop)  # whatever happens next
            # the cluster's token, before Ray is imported here (Ray reads it when it loads)
            os.environ.update(cluster.driver_env())
            import ray

            connect(cluster.address)
            actors = start_workers(analysis_work(settings), 2)
            ray.get([a.ready.remote() for a in actors])  # type: ignore[attr-defined]
            # the round trip of an empty call, one actor at a time
            for a in actors * 50:
                t0 = time.perf_counter()
                ray.get(a.ready.remote())  # type: ignore[attr-defined]
                ray_call_ms.append((time.perf_counter() - t0) * 1000)
            svc = FaceService(settings)  # writes only: the models load in the actors
        else:
            pipeline = PipelinePool(settings, w) if w > 1 else None
            svc = FaceService(settings, pipeline=pipeline)
            svc.pipeline.warm_up()
        svc.create_collection("ingest", ctx=ctx)
        services[mode] = svc

    def cpu_now() -> float:
        total = cpu_seconds()
        if cluster is not None:
            import psutil

            for pid in cluster.processes():
                try:
                    total += sum(psutil.Process(pid).cpu_times()[:2])
                except psutil.Error:
                    pass
        return total

    load_before = os.getloadavg()
    totals = {mode: Summary() for mode in modes}
    cpu = dict.fromkeys(modes, 0.0)  # CPU seconds: did the run get the cores it asked for?
    per_round = -(-len(images) // args.rounds)
    for r in range(args.rounds):
        chunk = images[r * per_round:(r + 1) * per_round]
        order = list(modes) if r % 2 == 0 else list(modes)[::-1]
        for mode in order:
            w = modes[mode]
            c0, t0 = cpu_now(), time.perf_counter()
            if w == RAY:
                s = index_images_ray(services[mode], "ingest", chunk, ctx=ctx,
                                     batch_size=args.ray_batch, workers=actors)
            else:
                s = index_images(services[mode], "ingest", chunk,
                                 threads=2 * w if w > 1 else 1, ctx=ctx)
            s.seconds = time.perf_counter() - t0
            cpu[mode] += cpu_now() - c0
            t = totals[mode]
            t.total += s.total
            t.indexed += s.indexed
            t.faces += s.faces
            t.skipped += s.skipped
            t.not_indexed += s.not_indexed
            t.failed += s.failed
            t.seconds += s.seconds
            print(f"round {r + 1}/{args.rounds} {mode}: {s.done} images in {s.seconds:.1f} s "
                  f"({s.done / s.seconds:.2f}/s, {(cpu_now() - c0) / s.seconds:.2f} cores "
                  "busy)", file=sys.stderr)
    load_after = os.getloadavg()
    for mode, svc in services.items():
        svc.close()
        if isinstance(svc.pipeline, PipelinePool):
            svc.pipeline.close()
    if cluster is not None:
        from faceledger.cluster import disconnect

        disconnect()
        cluster.stop()

    print(f"faceledger bulk enrolment: {len(images)} images from {args.images} per mode, "
          f"{args.rounds} alternating rounds, {n} usable cores ({os.cpu_count()} CPUs)")
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(f"{'mode':<26} {'images':>7} {'indexed':>8} {'skipped':>8} {'not idx':>8} {'failed':>7} "
          f"{'seconds':>8} {'images/s':>9} {'x 1st':>6} {'cores busy':>10} {'CPU s/img':>9}")
    base = totals[next(iter(modes))]
    base_rate = base.done / base.seconds if base.seconds else float("nan")
    for mode, t in totals.items():
        rate = t.done / t.seconds if t.seconds else float("nan")
        print(f"{mode:<26} {t.done:>7} {t.indexed:>8} {t.skipped:>8} {t.not_indexed:>8} {t.failed:>7} "
              f"{t.seconds:>8.1f} {rate:>9.2f} {rate / base_rate:>6.2f} {cpu[mode] / t.seconds:>10.2f}"
              f" {cpu[mode] / max(t.done, 1):>9.3f}")
    if ray_call_ms:
        import numpy as np

        lat = np.asarray(ray_call_ms)
        print(f"Ray: empty actor call round trip p50 {np.percentile(lat, 50):.2f} ms, "
              f"p99 {np.percentile(lat, 99):.2f} ms over {len(lat)} calls; per image at "
              f"--ray-batch {args.ray_batch}: {np.percentile(lat, 50) / args.ray_batch:.3f} ms")
    print(json.dumps({mode: {"images": t.done, "indexed": t.indexed, "seconds": round(t.seconds, 2),
                             "images_per_s": round(t.done / t.seconds, 3) if t.seconds else None}
                      for mode, t in totals.items()}))
    same = all(t.indexed == base.indexed for t in totals.values())
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
