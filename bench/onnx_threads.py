"""ONNX Runtime thread settings and batch sizes for dlib's ResNet and MMOD, against dlib itself.

Embeds the same LFW chips with dlib's runtime and with ONNX Runtime at 1 and 2 intra-op threads
and batch sizes 1, 4 and 16; runs the MMOD detector on the same photos both ways. Prints ms per
face / per image (median of --repeats timed passes, after one warm-up) side by side.

    python bench/onnx_threads.py --faces 32 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "faces"


def timed(fn: object, repeats: int) -> float:
    """Median seconds of `repeats` calls of fn() after one warm-up call."""
    assert callable(fn)
    fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--photos", type=int, default=3, help="detection photos for MMOD")
    args = ap.parse_args()

    import dlib

    from faceledger.imaging import decode_image
    from faceledger.vision import FacePipeline
    from faceledger.vision.models import DlibResnetEmbedder, MmodDetector
    from faceledger.vision.onnx_models import DlibChipper, OnnxMmodDetector, OnnxResnetEmbedder

    cache = Path(tempfile.mkdtemp(prefix="faceledger-bench-"))
    hog = FacePipeline()
    chipper = DlibChipper()
    chips = []
    for f in sorted((SHARED / "lfw").glob("*/*_0001.jpg")):
        px = decode_image(f.read_bytes()).pixels
        faces = hog.detect(px)
        if faces:
            chips.append(chipper.chips(px, [faces[0].box])[0])
        if len(chips) == args.faces:
            break
    batch = np.stack(chips)
    n = len(batch)
    print(f"{n} LFW chips, {args.repeats} timed passes (median), machine load "
          f"{Path('/proc/loadavg').read_text().split()[0]}")

    ref = DlibResnetEmbedder()
    net = ref._net
    as_list = [np.ascontiguousarray(c) for c in batch]
    t_dlib = timed(lambda: net.compute_face_descriptor(as_list), args.repeats)
    print("\n| ResNet embedder | threads | batch | ms/face | speed-up vs dlib |")
    print("|---|---|---|---|---|")
    print(f"| dlib 20 (dlib-bin) | 1 | {n} | {1000 * t_dlib / n:.1f} | 1.0x |")
    for threads in (1, 2):
        emb = OnnxResnetEmbedder(cache, threads=threads)
        for size in (1, 4, 16):
            def run(emb: OnnxResnetEmbedder = emb, size: int = size) -> None:
                for i in range(0, n, size):
                    emb.embed_chips(batch[i : i + size])

            t = timed(run, args.repeats)
            print(f"| ONNX Runtime | {threads} | {size} | {1000 * t / n:.1f} | {t_dlib / t:.1f}x |")

    photos = sorted((SHARED / "detection").glob("2008_*.jpg"))[: args.photos]
    pixels = [decode_image(p.read_bytes()).pixels for p in photos]
    dlib_cnn = MmodDetector()
    t_ref = timed(lambda: [dlib_cnn.detect(p) for p in pixels], 1)
    print(f"\n| MMOD detector ({len(pixels)} photos, ~500x375) | threads | ms/image | speed-up vs dlib |")
    print("|---|---|---|---|")
    print(f"| dlib 20 cnn_face_detection_model_v1 | 1 | {1000 * t_ref / len(pixels):.0f} | 1.0x |")
    for threads in (1, 2):
        det = OnnxMmodDetector(cache, threads=threads)
        t = timed(lambda det=det: [det.detect(p) for p in pixels], args.repeats)
        print(f"| ONNX Runtime + numpy pyramid/NMS | {threads} | {1000 * t / len(pixels):.0f} | "
              f"{t_ref / t:.1f}x |")
    del dlib


if __name__ == "__main__":
    main()
