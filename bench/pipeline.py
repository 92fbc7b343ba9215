"""Detect + embed throughput: faceledger's pipelines against the `face_recognition` library.

On the same LFW images (the unique images of pairsDevTest, topped up from pairsDevTrain to
--images), in one run, side by side: face_recognition (dlib's HOG with one 2x upsample, dlib's
5-point predictor and ResNet through dlib's runtime); faceledger's model 1.0 (HOG, ONet check and
landmarks, dlib's ResNet on ONNX Runtime: the same templates, tests/test_onnx_equivalence.py);
faceledger's model 2.0 (YuNet with its landmarks, the ONet check, Intel's
face-reidentification-retail-0095 on OpenVINO); and model 3.0 (the same, plus OpenCV Zoo's SFace
on OpenVINO, fused). faceledger also measures pose and quality.
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
STAGES = ("decode", "detect", "check", "embed", "other")
# (label, Settings overrides): the models faceledger compares
MODELS = (
    ("1.0", "faceledger 1.0 (HOG + dlib ResNet on ONNX Runtime)",
     {"detector": "hog", "embedder": "dlib"}),
    ("2.0", "faceledger 2.0 (YuNet + reid-0095 on OpenVINO)", {"embedder": "reid-0095"}),
    ("3.0", "faceledger 3.0 (YuNet + reid-0095 and SFace on OpenVINO, fused)",
     {"embedder": "reid-0095+sface"}),
)
_STAGE_S: dict[str, float] = {}


class _Timed:
    """Forwards the methods of a model and adds the CPU time of some of them to a stage."""

    def __init__(self, inner: object, methods: tuple[str, ...], stage: str) -> None:
        self._inner, self._methods, self._stage = inner, methods, stage

    def __getattr__(self, name: str) -> object:
        attr = getattr(self._inner, name)
        if name not in self._methods:
            return attr

        def call(*a: object, **k: object) -> object:
            t0 = time.process_time()  # CPU time: what a stage costs, whatever else runs
            try:
                return attr(*a, **k)
            finally:
                _STAGE_S[self._stage] = _STAGE_S.get(self._stage, 0.0) + time.process_time() - t0

        return call


def _init_worker(overrides: dict[str, object]) -> None:
    global _PIPELINE
    import cv2

    from faceledger.settings import Settings
    from faceledger.vision import FacePipeline

    cv2.setNumThreads(1)  # one process per core already
    _PIPELINE = FacePipeline(Settings(**overrides))  # type: ignore[arg-type]
    _PIPELINE.warm_up()
    # time each stage: the cached models are replaced by forwarding wrappers (ONet places
    # landmarks where the detector has none and checks every box: one call, "check")
    # (the embedder's runs across images, embed_many, are the embed stage too)
    for attr, methods, stage in (("detector", ("detect",), "detect"),
                                 ("landmarker", ("landmarks_and_face_probabilities",), "check"),
                                 ("embedder", ("embed", "embed_many"), "embed")):
        _PIPELINE.__dict__[attr] = _Timed(getattr(_PIPELINE, attr), methods, stage)


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


def _embed_batch(paths: list[str]) -> list[tuple[str, int, list[float] | None, dict[str, float]]]:
    """`_embed_one` of a batch of images analysed together (FacePipeline.analyze_batch: the
    faces of all of them through the embedder in runs of Settings.embed_batch), as the bulk
    paths run; each image is given an equal share of the batch's CPU per stage."""
    from faceledger.imaging import decode_image

    assert _PIPELINE is not None
    _STAGE_S.clear()
    c0 = time.process_time()
    images = [decode_image(Path(p).read_bytes()) for p in paths]
    t1 = time.process_time()
    found = _PIPELINE.analyze_batch([img.pixels for img in images], embed=True)
    t2 = time.process_time()
    stages = dict(_STAGE_S)
    stages["decode"] = t1 - c0
    stages["other"] = (t2 - t1) - sum(_STAGE_S.values())
    stages["cpu"] = time.process_time() - c0
    share = {k: v / len(paths) for k, v in stages.items()}
    out: list[tuple[str, int, list[float] | None, dict[str, float]]] = []
    for path, img, faces in zip(paths, images, found):
        if not faces:
            out.append((path, 0, None, share))
            continue
        i = centre_face([(f.box.left, f.box.top, f.box.right, f.box.bottom) for f in faces],
                        img.width, img.height)
        emb = faces[i].embedding
        assert emb is not None
        out.append((path, len(faces), list(map(float, emb)), share))
    return out


def _worker_peak(_: int) -> float:
    time.sleep(0.2)  # let every worker take one of these
    return peak_rss_mb()


def run_faceledger(files: list[str], root: str, workers: int,
                   overrides: dict[str, object], batch: int = 1) -> dict[str, object]:
    """Batch 1: each image analysed alone (`analyze`, as IndexFaces through the API). Batch
    N: tasks of N images analysed together (`analyze_batch`, as the bulk paths run), the
    embedder taking runs of N faces."""
    ctx = mp.get_context("forkserver")
    paths = [os.path.join(root, f) for f in files]
    with ctx.Pool(workers, initializer=_init_worker,
                  initargs=(overrides | {"embed_batch": batch},)) as pool:
        pool.map(_worker_peak, range(workers))  # models loaded before the clock starts
        t0 = time.perf_counter()
        if batch == 1:
            results = pool.map(_embed_one, paths, chunksize=4)
        else:
            chunks = [paths[i:i + batch] for i in range(0, len(paths), batch)]
            results = [r for rs in pool.map(_embed_batch, chunks, chunksize=1) for r in rs]
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


def accuracy(pairs: list[tuple[str, str, bool]], vectors: dict[str, list[float]]) -> float:
    """Accuracy at the best single threshold (optimistic, the same for every system); a pair
    with a failure to enrol counts as 'different' (the system could not say 'same')."""
    d = np.array([np.linalg.norm(np.subtract(vectors[a], vectors[b]))
                  if a in vectors and b in vectors else np.inf for a, b, _ in pairs])
    same = np.array([s for _, _, s in pairs])
    finite = np.sort(d[np.isfinite(d)])
    return max(float(np.mean((d <= t) == same)) for t in finite)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    ap.add_argument("--images", type=int, default=1000, help="at least 500")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--mmod-images", type=int, default=10,
                    help="images for the MMOD comparison (dlib's takes seconds each); 0 skips")
    ap.add_argument("--timing-only", type=int, default=0, metavar="N",
                    help="only the first N images, no accuracy columns (a quick look)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1],
                    help="images analysed together per task (the embedder takes runs of as "
                         "many faces): 1 is each image alone, as IndexFaces; e.g. 1 8 32")
    ap.add_argument("--models", nargs="+", default=None,
                    help="faceledger models to run (1.0 2.0 3.0; default all)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="interleaved rounds; each faceledger configuration keeps its least CPU")
    ap.add_argument("--no-face-recognition", action="store_true",
                    help="skip the face_recognition baseline (ratios then say n/a)")
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

    results: list[tuple[str, dict[str, object]]] = []
    if not args.no_face_recognition:
        child = subprocess.run([sys.executable, __file__, "--fr-child", "--lfw", str(args.lfw)],
                               input=json.dumps(files), capture_output=True, text=True, check=True)
        results.append(("face_recognition 1.3 (documented usage)", json.loads(child.stdout)))
    load = [os.getloadavg()[0]]
    best: dict[str, dict[str, object]] = {}
    # interleaved rounds: each configuration keeps its round of least CPU, so load from other
    # processes that comes and goes disturbs every configuration alike
    for _ in range(args.rounds):
        for version, label, overrides in MODELS:
            if args.models and version not in args.models:
                continue
            for batch in args.batch:
                name = label if batch == 1 else f"{label}, batches of {batch}"
                r = run_faceledger(files, str(args.lfw), args.workers, dict(overrides), batch)
                if name not in best or float(r["cpu"]) < float(best[name]["cpu"]):  # type: ignore[arg-type]
                    best[name] = r
                load.append(os.getloadavg()[0])
    results += list(best.items())
    print(f"load average while running: {min(load):.1f}-{max(load):.1f}")

    print()
    print("| system | images/s | faces/s | CPU ms/image | images per CPU-s vs face_recognition | "
          "peak RSS MiB | failures to enrol | pairsDevTest best-threshold acc | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    fr = [r for name, r in results if name.startswith("face_recognition")]
    cpu_fr = float(fr[0]["cpu"]) / len(files) if fr else float("nan")  # type: ignore[arg-type]
    for name, r in results:
        vec = r["vectors"]
        best = float("nan") if args.timing_only else accuracy(test_pairs, vec)  # type: ignore[arg-type]
        wall, cpu = float(r["wall"]), float(r["cpu"]) / len(files)  # type: ignore[arg-type]
        print(f"| {name} | {len(files) / wall:.2f} | {float(r['faces']) / wall:.2f} | "  # type: ignore[arg-type]
              f"{1000 * cpu:.1f} | {cpu_fr / cpu:.2f}x | {float(r['peak_mb']):.0f} | "  # type: ignore[arg-type]
              f"{len(files) - len(vec)} | {best:.4f} | {wall:.1f} |")  # type: ignore[arg-type]
    print("\nCPU time is process CPU time (insensitive to other load on the machine, unlike "
          f"images/s); target: model 2.0 >= 10x face_recognition's images per CPU-second.")
    print(f"\nfaceledger CPU ms per image per stage ({args.workers} workers run at once):")
    print("| model | " + " | ".join(STAGES) + " | total |")
    print("|---|" + "---|" * (len(STAGES) + 1))
    for name, r in results:
        if name.startswith("face_recognition"):
            continue
        stage_ms = r["stage_ms"]
        assert isinstance(stage_ms, dict)
        print(f"| {name} | " + " | ".join(f"{stage_ms[s]:.1f}" for s in STAGES)
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
