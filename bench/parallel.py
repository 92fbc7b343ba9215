"""Threads or processes for inference: do dlib's HOG detector, the landmarker and the ResNet
embedder run in parallel in threads, or only in processes?

The same LFW images are analysed (detect, landmarks, pose, quality, embed) in four ways:
- 1 thread, one FacePipeline (what one server worker does);
- N threads, each with a FacePipeline of its own (no shared lock: only the GIL can serialise);
- N threads over one FacePipeline (its lock: today's in-process server);
- a PipelinePool of N processes driven by 2N threads (what `serve --workers N` does).
The modes alternate in rounds (a shared machine's load drifts). Besides images/s it prints the
CPU seconds used (this process and its children) per wall second: above 1.0 means more than
one core really worked, whatever else the machine was doing.

    python bench/parallel.py --images 64 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LFW = REPO.parent / "shared" / "faces" / "lfw"


def cpu_seconds() -> float:
    """CPU time of this process and of its live children (pool workers)."""
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system
    for child in me.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.Error:
            pass
    return float(total)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0, help="N (0: one per core)")
    ap.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    args = ap.parse_args()

    from faceledger.imaging import decode_image
    from faceledger.settings import Settings
    from faceledger.vision import FacePipeline
    from faceledger.vision.pool import PipelinePool, default_workers

    n = max(2, default_workers(args.workers))
    files = sorted(args.lfw.glob("*/*.jpg"))[: args.images]
    if not files:
        print(f"no images under {args.lfw}", file=sys.stderr)
        return 2
    pixels = [decode_image(p.read_bytes()).pixels for p in files]
    settings = Settings()
    own = [FacePipeline(settings) for _ in range(n)]
    shared = own[0]
    pool = PipelinePool(settings, n)
    for p in own:
        p.warm_up()
    pool.warm_up()

    def threaded(pipelines: list[FacePipeline], threads: int) -> Callable[[], int]:
        def run() -> int:
            lock = threading.Lock()
            todo = iter(pixels)

            def work(i: int) -> int:
                done = 0
                while True:
                    with lock:
                        px = next(todo, None)
                    if px is None:
                        return done
                    pipelines[i % len(pipelines)].analyze(px)
                    done += 1

            with ThreadPoolExecutor(threads) as ex:
                return sum(ex.map(work, range(threads)))
        return run

    modes: dict[str, Callable[[], int]] = {
        "1 thread": threaded([shared], 1),
        f"{n} threads, own pipelines": threaded(own, n),
        f"{n} threads, one pipeline": threaded([shared], n),
        f"{n} processes (PipelinePool)": threaded([pool], 2 * n),
    }
    load_before = os.getloadavg()
    wall = dict.fromkeys(modes, 0.0)
    cpu = dict.fromkeys(modes, 0.0)
    count = dict.fromkeys(modes, 0)
    for r in range(args.rounds):
        for mode in (list(modes) if r % 2 == 0 else list(modes)[::-1]):
            c0, t0 = cpu_seconds(), time.perf_counter()
            count[mode] += modes[mode]()
            wall[mode] += time.perf_counter() - t0
            cpu[mode] += cpu_seconds() - c0
    pool.close()
    load_after = os.getloadavg()
    print(f"faceledger inference parallelism: {len(pixels)} LFW images x {args.rounds} rounds, "
          f"N={n}, {os.cpu_count()} CPUs")
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(f"{'mode':<30} {'images':>7} {'images/s':>9} {'x 1 thread':>10} {'cores busy':>10} "
          f"{'cpu ms/img':>10}")
    base = count["1 thread"] / wall["1 thread"]
    for mode in modes:
        rate = count[mode] / wall[mode]
        print(f"{mode:<30} {count[mode]:>7} {rate:>9.2f} {rate / base:>10.2f} "
              f"{cpu[mode] / wall[mode]:>10.2f} {1000 * cpu[mode] / count[mode]:>10.1f}")
    print(json.dumps({m: {"images_per_s": round(count[m] / wall[m], 3),
                          "cores_busy": round(cpu[m] / wall[m], 3)} for m in modes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
