"""Test-time augmentation for dlib's ResNet (ONNX): none vs mirror ("flip") vs 8-copy jitter.

Every LFW image is detected once (boxes from the evaluation cache, i.e. faceledger's own
pipeline), its chip cut once, and the chip's copies (original, mirror, and JITTERS of
vision/tta.py each with its mirror) embedded in one ONNX Runtime run; the three templates per
image come from the same runs, so the comparison is paired. Reports, per setting:

- pairsDevTest accuracy (threshold chosen on pairsDevTrain, LFW View 1 protocol) +- SE;
- TAR at FMR 1e-3 and 1e-4 over all genuine and all cross-folder impostor pairs of the shared
  LFW, with identity-clustered bootstrap 95% intervals;
- embedding ms per face (ONNX Runtime, one thread, one face per run).

    python bench/tta.py            # all 4,992 images: none and flip; jitter on pairsDevTest's
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "faces" / "lfw"
MODES = ("none", "flip", "jitter")

_W: dict[str, object] = {}


def _init(cache: str) -> None:
    import cv2

    from faceledger.vision.onnx_models import OnnxResnetEmbedder

    cv2.setNumThreads(1)
    _W["emb"] = OnnxResnetEmbedder(Path(cache), threads=1)


def _templates(task: tuple[str, tuple[float, float, float, float], bool]) -> np.ndarray:
    """(3, 128): the none / flip / jitter templates of one image's face (jitter NaN unless
    asked: it costs 8 runs, flip 2)."""
    from faceledger.imaging import decode_image
    from faceledger.vision.onnx_models import OnnxResnetEmbedder
    from faceledger.vision.tta import augmented
    from faceledger.vision.types import Box

    path, box, jitter = task
    emb = _W["emb"]
    assert isinstance(emb, OnnxResnetEmbedder)
    px = decode_image(Path(path).read_bytes(), max_bytes=1 << 30, min_side=1).pixels
    chips = emb.chips(px, [Box(*box)])
    copies = augmented(chips, "jitter" if jitter else "flip")  # [orig, mirror, j1, mirror1, ...]
    out = emb.embed_chips(np.ascontiguousarray(np.concatenate(copies)))
    last = out.mean(0) if jitter else np.full(out.shape[1], np.nan)
    return np.stack([out[0], out[:2].mean(0), last])


def ms_per_face(cache: Path, paths: list[str], boxes: list[tuple[float, float, float, float]]) -> dict[str, float]:
    """Median embedding ms per face for each mode (chips cut beforehand), one thread."""
    from faceledger.imaging import decode_image
    from faceledger.vision.onnx_models import OnnxResnetEmbedder
    from faceledger.vision.tta import TtaEmbedder
    from faceledger.vision.types import Box

    base = OnnxResnetEmbedder(cache, threads=1)
    chips = [base.chips(decode_image(Path(p).read_bytes()).pixels, [Box(*b)]) for p, b in zip(paths, boxes)]
    out = {}
    for mode in MODES:
        run = base.embed_chips if mode == "none" else TtaEmbedder(base, mode).embed_chips
        run(chips[0])
        times = []
        for c in chips:
            t0 = time.perf_counter()
            run(c)
            times.append(time.perf_counter() - t0)
        out[mode] = 1000 * statistics.median(times)
    return out


def _cell(row: dict[str, object]) -> str:
    tar = row["tar"]
    assert isinstance(tar, dict)
    if tar["value"] is None:
        return "n/a"
    return f"{tar['value']:.4f} [{tar['low']:.4f}, {tar['high']:.4f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lfw", type=Path, default=LFW)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--replicates", type=int, default=200)
    ap.add_argument("--save", type=Path, default=None, help="also write the templates (.npz)")
    ap.add_argument("--load", type=Path, default=None, help="templates from an earlier --save")
    args = ap.parse_args()

    from faceledger.evaluation.datasets import load_folders, load_pairs
    from faceledger.evaluation.enrolment import default_cache_dir, enrol_files
    from faceledger.evaluation.metrics import ClusteredPairs, accuracy, best_accuracy_threshold
    from faceledger.evaluation.verification import lfw_protocol
    from faceledger.settings import Settings

    images = load_folders(args.lfw)
    n = len(images)
    paths = [Path(p) for p in images.paths]
    ident = np.asarray(images.identity)
    key_index = {k: i for i, k in enumerate(images.keys)}
    test_pairs = load_pairs(args.lfw / "pairsDevTest.txt")
    train_pairs = load_pairs(args.lfw / "pairsDevTrain.txt")
    test_images = {key_index[k] for k in test_pairs.images.keys}
    # boxes: faceledger's own detections, from the shared evaluation cache (computed if absent)
    enrol = enrol_files(paths, settings=Settings(), cache_dir=default_cache_dir(),
                        workers=args.workers, label="boxes")  # fmt: skip
    ok = [i for i, e in enumerate(enrol) if e.box is not None]
    models = Path(tempfile.mkdtemp(prefix="faceledger-tta-"))
    tasks = []
    for i in ok:
        b = enrol[i].box
        assert b is not None
        tasks.append((str(paths[i]), (b.left, b.top, b.right, b.bottom), i in test_images))
    t0 = time.perf_counter()
    templates = np.full((3, n, 128), np.nan)
    if args.load:
        templates = np.load(args.load)["templates"]
    else:
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"), initializer=_init,
                                 initargs=(str(models),)) as pool:  # fmt: skip
            results = list(pool.map(_templates, tasks, chunksize=16))
        for i, r in zip(ok, results):
            templates[:, i] = r
    wall = time.perf_counter() - t0
    if args.save:
        np.savez(args.save, templates=templates, identity=ident)
    runs = sum(8 if t[2] else 2 for t in tasks)
    print(f"{n} LFW images, {len(ok)} enrolled; {runs:,} ONNX chip runs in {wall:.0f} s "
          f"({args.workers} workers; load {Path('/proc/loadavg').read_text().split()[0]})")
    ms = ms_per_face(models, [t[0] for t in tasks[:40]], [t[1] for t in tasks[:40]])

    def pair_d(tmpl: np.ndarray, pl):  # type: ignore[no-untyped-def]
        keys = pl.images.keys
        d = np.full(len(pl.a), np.inf)  # a failure to enrol never matches
        for j, (a, b) in enumerate(zip(pl.a, pl.b)):
            ia, ib = key_index[keys[a]], key_index[keys[b]]
            if not (np.isnan(tmpl[ia, 0]) or np.isnan(tmpl[ib, 0])):
                d[j] = float(np.linalg.norm(tmpl[ia] - tmpl[ib]))
        return d

    print("\nAll 4,992 LFW images (every genuine and cross-folder impostor pair); accuracy on "
          "pairsDevTest with the threshold chosen on pairsDevTrain:")
    print("\n| setting | model version | pairsDevTest accuracy (+-SE) | TAR @ FMR 1e-3 [95% CI] | "
          "TAR @ FMR 1e-4 [95% CI] | embed ms/face |")
    print("|---|---|---|---|---|---|")
    boots = []
    for m, mode in enumerate(MODES[:2]):
        tmpl = templates[m]
        acc = lfw_protocol(test_pairs, pair_d(tmpl, test_pairs), (train_pairs, pair_d(tmpl, train_pairs)))
        pairs = ClusteredPairs.from_embeddings(tmpl, ident, max_fmr=1e-3)
        rows = pairs.verification_rates(fmr_targets=[1e-3, 1e-4], replicates=args.replicates)["at_fmr"]
        # the same seed resamples the same identities for both settings: paired replicates
        boots.append(pairs.bootstrap(fmr_targets=[1e-3, 1e-4], replicates=args.replicates)["tar"])
        version = {"none": "1.0", "flip": "1.1", "jitter": "1.2"}[mode]
        print(f"| {mode} | {version} | {acc['accuracy']:.4f} +- {acc['standard_error']:.4f} | "
              f"{_cell(rows[0])} | {_cell(rows[1])} | {ms[mode]:.1f} |")
    print(f"({pairs.n_genuine:,} genuine, {pairs.n_impostor:,} impostor pairs)")
    diff = boots[1] - boots[0]
    for c, fmr in enumerate((1e-3, 1e-4)):
        col = diff[:, c][np.isfinite(diff[:, c])]
        lo, hi = np.percentile(col, [2.5, 97.5])
        print(f"flip - none, TAR @ FMR {fmr:g}: {np.median(col):+.4f} [{lo:+.4f}, {hi:+.4f}] "
              f"(paired bootstrap over identities, {len(col)} replicates)")

    sub = np.array(sorted(test_images))
    print(f"\nThe {len(sub):,} images of pairsDevTest only (jitter costs 8 runs per face, so it "
          "was measured here): best-threshold accuracy on pairsDevTest (optimistic, the same "
          "rule for all three) and TAR over every pair among these images:")
    print("\n| setting | pairsDevTest best-threshold accuracy (+-SE) | TAR @ FMR 1e-3 [95% CI] | "
          "TAR @ FMR 1e-4 [95% CI] | embed ms/face |")
    print("|---|---|---|---|---|")
    same = np.asarray(test_pairs.same)
    for m, mode in enumerate(MODES):
        tmpl = templates[m]
        d = pair_d(tmpl, test_pairs)
        th = best_accuracy_threshold(d[same], d[~same])
        acc = accuracy(d[same], d[~same], th)
        se = math.sqrt(acc * (1 - acc) / len(d))
        pairs = ClusteredPairs.from_embeddings(tmpl[sub], ident[sub], max_fmr=1e-3)
        rows = pairs.verification_rates(fmr_targets=[1e-3, 1e-4], replicates=args.replicates)["at_fmr"]
        print(f"| {mode} | {acc:.4f} +- {se:.4f} | {_cell(rows[0])} | {_cell(rows[1])} | "
              f"{ms[mode]:.1f} |")
    print(f"({pairs.n_genuine:,} genuine, {pairs.n_impostor:,} impostor pairs); intervals resample "
          "identities (bootstrap), widened to at least Wilson's")


if __name__ == "__main__":
    main()
