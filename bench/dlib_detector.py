"""How much a model-1.0 (dlib ResNet) template depends on the detector that found the face.

dlib's 5-point aligner places its points starting from the detector's box, so the same photo
gives another 1.0 template when YuNet finds the face instead of HOG (the detector 1.0's
collections and calibration table were made with). Prints the distance between the two
templates of each photo against the 1.0 table's thresholds; `Settings.dlib_detector` is chosen
from it. Usage: python bench/dlib_detector.py [--every 25]  (every 25th LFW image: 200 images)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from faceledger.calibration import load_calibration
from faceledger.imaging import decode_image
from faceledger.settings import Settings
from faceledger.vision import FacePipeline

SHARED = Path(__file__).resolve().parents[2] / "shared" / "faces"
LFW = Path(os.environ.get("FACELEDGER_SHARED_FACES", SHARED)) / "lfw"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=25, help="every n-th LFW image")
    args = ap.parse_args()
    files = sorted(LFW.rglob("*.jpg"))[:: args.every]
    # dlib_detector=None: each pipeline embeds the faces of the detector it is configured with
    hog = FacePipeline(Settings(embedder="dlib", detector="hog", dlib_detector=None))
    yunet = FacePipeline(Settings(embedder="dlib", detector="yunet", dlib_detector=None))
    dist, missed = [], 0
    for f in files:
        px = decode_image(f.read_bytes()).pixels
        a, b = hog.analyze(px, max_faces=1), yunet.analyze(px, max_faces=1)
        if not a or not b or a[0].embedding is None or b[0].embedding is None:
            missed += 1
            continue
        dist.append(float(np.linalg.norm(a[0].embedding - b[0].embedding)))
    d = np.asarray(dist)
    table = load_calibration("1.0")
    print(f"{len(files)} LFW images ({missed} without a face from one of the detectors)")
    print("| 1.0 template, HOG face vs YuNet face | median | p90 | p99 | max |")
    print("|---|---|---|---|---|")
    print(f"| Euclidean distance | {np.median(d):.4f} | {np.percentile(d, 90):.4f} | "
          f"{np.percentile(d, 99):.4f} | {d.max():.4f} |")
    for fmr in (1e-3, 1e-4):
        print(f"1.0 table's raw distance at FMR {fmr:g}: {table.distance_for_fmr(fmr):.4f}")


if __name__ == "__main__":
    main()
