"""Detect + embed throughput: faceledger's pipeline against the `face_recognition` library.

Both run dlib's HOG detector (one 2x upsample), dlib's 5-point predictor and dlib's ResNet on the
same LFW images (the unique images of pairsDevTest, topped up from pairsDevTrain to --images), in
one run, side by side; faceledger runs the ResNet on ONNX Runtime (the same templates, see
tests/test_onnx_equivalence.py) and also places ONet's landmarks and measures pose and quality.
face_recognition is used as documented: `load_image_file`, then `face_locations(img)` and
`face_encodings(img, locations)`. faceledger decodes each image once and spreads images over
one worker process per core, each with its models loaded once (one ONNX Runtime thread each).

Prints a table (images/s, faces/s, peak memory, failures to enrol, pairsDevTest accuracy at
dlib's 0.6 distance and at the best single threshold), faceledger's ms per image per stage,
the throughput ratio, and dlib's MMOD CNN detector against faceledger's ONNX MMOD
(`detector=cnn`) on the first --mmod-images of the same images at the pipeline's scale.

    pip install face_recognition --no-deps     # dlib itself comes from dlib-bin
    python bench/pipeline.py --images 1000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LFW = REPO.parent / "shared" / "faces" / "lfw"


def read_pairs(path: Path) -> list[tuple[str, str, bool]]:
    """LFW pairs file -> (image path a, image path b, same person), parsed by faceledger's
    evaluation code so the benchmark reads pair lists exactly as `faceledger evaluate` does."""
    from faceledger.evaluation.datasets import load_pairs

    pl = load_pairs(path)
    keys = pl.images.keys
    return [(keys[a], keys[b], same) for a, b, same in zip(pl.a, pl.b, pl.same)]


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def centre_face(boxes: list[tuple[float, float, float, float]], w: int, h: int) -> int:
    """Index of the box whose centre is nearest the image centre (LFW's labelling convention)."""
    d = [((l + r) / 2 - w / 2) ** 2 + ((t + b) / 2 - h / 2) ** 2 for l, t, r, b in boxes]
    return int(np.argmin(d))


# --- face_recognition, in its own process so its memory is measured alone --------------------

def run_face_recognition(files: list[str], root: str) -> dict[str, object]:
    import face_recognition

    vectors: dict[str, list[float]] = {}
    faces = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    for f in files:
        img = face_recognition.load_image_file(os.path.join(root, f))
        locations = face_recognition.face_locations(img)
        encodings = face_recognition.face_encodings(img, locations)
        faces += len(encodings)
        if encodings:
            boxes = [(le, to, ri, bo) for (to, ri, bo, le) in locations]
            vectors[f] = list(map(float, encodings[centre_face(boxes, img.shape[1], img.shape[0])]))
    wall = time.perf_counter() - t0
    return {"wall": wall, "faces": faces, "vectors": vectors, "peak_mb": peak_rss_mb(),
            "cpu": time.process_time() - c0}


# --- faceledger: one pipeline per worker process ------------------------------------------------

_PIPELINE = None
STAGES = ("decode", "detect", "landmarks", "embed", "other")
_STAGE_S: dict[str, float] = {}


class _Timed:
    """Forwards one method of a model and adds its wall time to a stage."""

    def __init__(self, inner: object, method: str, stage: str) -> None:
        self._inner, self._method, self._stage = inner, method, stage

    def __getattr__(self, name: str) -> object:
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        def call(*a: object, **k: object) -> object:
            t0 = time.process_time()  # CPU time: what a stage costs, whatever else runs
            try:
                return attr(*a, **k)
            finally:
                _STAGE_S[self._stage] = _STAGE_S.get(self._stage, 0.0) + time.process_time() - t0

        return call


def _init_worker() -> None:
    global _PIPELINE
    import cv2

    from faceledger.vision import FacePipeline

    cv2.setNumThreads(1)  # one process per core already
    _PIPELINE = FacePipeline()
    _PIPELINE.warm_up()
    # time each stage: the cached models are replaced by forwarding wrappers
    for attr, method, stage in (("detector", "detect", "detect"),
                                ("landmarker", "landmarks", "landmarks"),
                                ("embedder", "embed", "embed")):
        _PIPELINE.__dict__[attr] = _Timed(getattr(_PIPELINE, attr), method, stage)


def _embed_one(path: str) -> tuple[str, int, list[float] | None, dict[str, float]]:
    from faceledger.imaging import decode_image

    assert _PIPELINE is not None
    _STAGE_S.clear()
    c0 = time.process_time()
    t0 = time.process_time()
    img = decode_image(Path(path).read_bytes())
    t1 = time.process_time()
    faces = _PIPELINE.analyze(img.pixels, embed=True)
    t2 = time.process_time()
    stages = dict(_STAGE_S)
    stages["decode"] = t1 - t0
    stages["other"] = (t2 - t1) - sum(_STAGE_S.values())  # scaling, pose, quality
    cpu = time.process_time() - c0
    stages["cpu"] = cpu
    if not faces:
        return path, 0, None, stages
    i = centre_face([(f.box.left, f.box.top, f.box.right, f.box.bottom) for f in faces],
                    img.width, img.height)
    emb = faces[i].embedding
    assert emb is not None
    return path, len(faces), list(map(float, emb)), stages


def _worker_peak(_: int) -> float:
    time.sleep(0.2)  # let every worker take one of these
    return peak_rss_mb()


def run_faceledger(files: list[str], root: str, workers: int) -> dict[str, object]:
    ctx = mp.get_context("forkserver")
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        pool.map(_worker_peak, range(workers))  # models loaded before the clock starts
        t0 = time.perf_counter()
        results = pool.map(_embed_one, [os.path.join(root, f) for f in files], chunksize=4)
        wall = time.perf_counter() - t0
        peaks = pool.map(_worker_peak, range(workers), chunksize=1)
    vectors = {os.path.relpath(p, root): v for p, n, v, _ in results if v is not None}
    stage_ms = {s: 1000 * sum(r[3].get(s, 0.0) for r in results) / len(results) for s in STAGES}
    return {"wall": wall, "faces": sum(r[1] for r in results), "vectors": vectors,
            "peak_mb": peak_rss_mb() + sum(peaks), "stage_ms": stage_ms,
            "cpu": sum(r[3]["cpu"] for r in results)}


def run_mmod(files: list[str], root: str) -> tuple[float, float, int, int]:
    """Seconds per image for dlib's CNN and for faceledger's ONNX MMOD on the same images,
    each resized as the pipeline resizes for detection; and how many faces each found."""
    import tempfile

    import cv2

    from faceledger.imaging import decode_image
    from faceledger.settings import Settings
    from faceledger.vision import FacePipeline
    from faceledger.vision.models import MmodDetector
    from faceledger.vision.onnx_models import OnnxMmodDetector

    scaler = FacePipeline(Settings(detector="cnn"))
    images = []
    for f in files:
        px = decode_image(Path(root, f).read_bytes()).pixels
        h, w = px.shape[:2]
        s = scaler.detection_scale(w, h)
        images.append(np.ascontiguousarray(cv2.resize(px, (round(w * s), round(h * s)))))
    ref, ours = MmodDetector(), OnnxMmodDetector(Path(tempfile.mkdtemp()))
    ours.detect(images[0])  # warm-up (graph build and session start)
    # CPU time (both run on this one thread): the ratio does not depend on other load
    t0 = time.process_time()
    n_ref = sum(len(ref.detect(px)) for px in images)
    t1 = time.process_time()
    n_ours = sum(len(ours.detect(px)) for px in images)
    t2 = time.process_time()
    return (t1 - t0) / len(images), (t2 - t1) / len(images), n_ref, n_ours


def accuracy(pairs: list[tuple[str, str, bool]], vectors: dict[str, list[float]]) -> tuple[float, float]:
    """Accuracy at distance 0.6 and at the best single threshold; a pair with a failure to
    enrol counts as 'different' (the system could not say 'same')."""
    d = np.array([np.linalg.norm(np.subtract(vectors[a], vectors[b]))
                  if a in vectors and b in vectors else np.inf for a, b, _ in pairs])
    same = np.array([s for _, _, s in pairs])
    at06 = float(np.mean((d <= 0.6) == same))
    best = max(float(np.mean((d <= t) == same)) for t in np.linspace(0.3, 0.9, 121))
    return at06, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    ap.add_argument("--images", type=int, default=1000, help="at least 500")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--mmod-images", type=int, default=10,
                    help="images for the MMOD comparison (dlib's takes seconds each); 0 skips")
    ap.add_argument("--timing-only", type=int, default=0, metavar="N",
                    help="only the first N images, no accuracy columns (a quick look)")
    ap.add_argument("--fr-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fr_child:
        files = json.loads(sys.stdin.read())
        json.dump(run_face_recognition(files, str(args.lfw)), sys.stdout)
        return
    test_pairs = read_pairs(args.lfw / "pairsDevTest.txt")
    files: list[str] = []
    for a, b, _ in test_pairs + read_pairs(args.lfw / "pairsDevTrain.txt"):
        for f in (a, b):
            if f not in files:
                files.append(f)
    files = files[: max(args.images, 500)]
    needed = {f for a, b, _ in test_pairs for f in (a, b)}
    if not needed <= set(files):
        files += sorted(needed - set(files))
    if args.timing_only:
        files = files[: args.timing_only]
    print(f"{len(files)} LFW images, {os.cpu_count()} cores, {args.workers} faceledger workers",
          flush=True)

    ours = run_faceledger(files, str(args.lfw), args.workers)
    child = subprocess.run([sys.executable, __file__, "--fr-child", "--lfw", str(args.lfw)],
                           input=json.dumps(files), capture_output=True, text=True, check=True)
    theirs = json.loads(child.stdout)

    rows = []
    for name, r in (("face_recognition 1.3 (documented usage)", theirs), ("faceledger", ours)):
        vec = r["vectors"]
        acc06, best = (float("nan"), float("nan")) if args.timing_only else accuracy(
            test_pairs, vec)  # type: ignore[arg-type]
        rows.append((name, len(files) / r["wall"], r["faces"] / r["wall"], r["peak_mb"],
                     len(files) - len(vec), acc06, best, r["wall"]))  # type: ignore[arg-type]
    print()
    print(f"| system | images/s | faces/s | peak RSS MiB | failures to enrol | "
          f"pairsDevTest acc @0.6 | best-threshold acc | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, ips, fps, mem, fte, a06, best, wall in rows:
        print(f"| {name} | {ips:.2f} | {fps:.2f} | {mem:.0f} | {fte} | {a06:.4f} | {best:.4f} | "
              f"{wall:.1f} |")
    print(f"\nthroughput ratio faceledger / face_recognition: {rows[1][1] / rows[0][1]:.2f}x "
          f"(target >= 5x); memory ratio {rows[1][3] / rows[0][3]:.2f}x")
    cpu_fr, cpu_fl = float(theirs["cpu"]), float(ours["cpu"])  # type: ignore[arg-type]
    print(f"CPU seconds per image (insensitive to other load on the machine): face_recognition "
          f"{cpu_fr / len(files):.3f}, faceledger {cpu_fl / len(files):.3f}: "
          f"{cpu_fr / cpu_fl:.2f}x images per CPU-second")
    stage_ms = ours["stage_ms"]
    assert isinstance(stage_ms, dict)
    print("\nfaceledger CPU ms per image per stage (process CPU time in the worker; "
          f"{args.workers} workers run at once):")
    print("| " + " | ".join(STAGES) + " | total |")
    print("|" + "---|" * (len(STAGES) + 1))
    print("| " + " | ".join(f"{stage_ms[s]:.1f}" for s in STAGES)
          + f" | {sum(stage_ms.values()):.1f} |")
    if args.mmod_images > 0:
        ref_s, ours_s, n_ref, n_ours = run_mmod(files[: args.mmod_images], str(args.lfw))
        print(f"\n| MMOD CNN detector ({args.mmod_images} images at the pipeline's scale) | "
              "CPU ms/image | faces found |")
        print("|---|---|---|")
        print(f"| dlib 20 cnn_face_detection_model_v1 | {1000 * ref_s:.0f} | {n_ref} |")
        print(f"| faceledger OnnxMmodDetector (detector=cnn) | {1000 * ours_s:.0f} | {n_ours} |")
        print(f"\nMMOD speed-up: {ref_s / ours_s:.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
