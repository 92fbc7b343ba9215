"""Memory of decoding huge-pixel images: faceledger's decoder against a plain full decode (what
faceledger did before: open, load, EXIF-transpose, convert to RGB, numpy array).

Images are checked against the S3 byte limit (15 MB), as an Image.S3Object would be. Each case
runs in a fresh process that reads the image bytes, resets its peak RSS (Linux
/proc/self/clear_refs), decodes (N copies at once in N threads for the concurrent cases), and
reports how far the peak rose above the RSS before decoding.
The images are generated once, in this process, into a temporary folder.

    python bench/decode_memory.py            # prints a side-by-side table
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CHILD = r"""
import json, sys, threading
import numpy as np
from PIL import Image, ImageOps
import io
from faceledger.errors import FaceledgerError
from faceledger.imaging import PixelBudget, decode_image
from faceledger.settings import Settings

mode, path, copies = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(path, "rb").read()
Image.MAX_IMAGE_PIXELS = None if mode == "full" else Image.MAX_IMAGE_PIXELS
s = Settings()
budget = PixelBudget(s.decode_budget_pixels)
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB -> MB

# Imports (dlib, OpenCV) leave a high peak behind: reset the peak to the current size first.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
results = []

def full():
    im = Image.open(io.BytesIO(data)); im.load()
    arr = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.uint8)
    results.append(f"{arr.shape[1]}x{arr.shape[0]}")

def ours():
    try:
        img = decode_image(data, max_bytes=s.max_s3_image_bytes, max_pixels=s.max_image_pixels,
                           max_decoded_pixels=s.max_decoded_pixels, budget=budget)
        results.append(f"{img.width}x{img.height}")
    except FaceledgerError as exc:
        results.append(exc.code)

threads = [threading.Thread(target=full if mode == "full" else ours) for _ in range(copies)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"mb": status("VmHWM") - before, "result": sorted(set(results))}))
"""


def make_cases(folder: Path) -> list[tuple[str, Path, int]]:
    rng = np.random.default_rng(0)
    cases = []
    # the probe's image: a 7000x7000 PNG of a few tens of KB
    png = folder / "flat-7000.png"
    Image.new("L", (7000, 7000), 128).save(png, optimize=True)
    cases += [("PNG 7000x7000", png, 1), ("PNG 7000x7000, 2 at once", png, 2)]
    # a noisy photo-like JPEG of the same size, and a 24-megapixel camera photo
    noise = rng.integers(0, 256, (700, 700, 3), dtype=np.uint8)
    big = Image.fromarray(noise).resize((7000, 7000), Image.Resampling.BILINEAR)
    jpg = folder / "photo-7000.jpg"
    big.save(jpg, quality=60)
    cam = folder / "camera-6000x4000.jpg"
    big.resize((6000, 4000)).save(cam, quality=80)
    cases += [("JPEG 7000x7000", jpg, 1), ("JPEG 7000x7000, 2 at once", jpg, 2),
              ("JPEG 6000x4000 (24 MP)", cam, 1)]
    return cases


def run(mode: str, path: Path, copies: int) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(copies)],
                         capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = make_cases(Path(tmp))
        print(f"{'case':<28} {'bytes':>10} | {'full decode MB':>14} {'result':<12} | "
              f"{'faceledger MB':>13} {'result':<24} | ratio")
        for name, path, copies in cases:
            full = run("full", path, copies)
            ours = run("ours", path, copies)
            ratio = float(str(full["mb"])) / max(float(str(ours["mb"])), 1.0)
            print(f"{name:<28} {path.stat().st_size:>10} | {full['mb']:>14.0f} "
                  f"{','.join(map(str, full['result'])):<12} | {ours['mb']:>13.0f} "
                  f"{','.join(map(str, ours['result'])):<24} | {ratio:5.1f}x")


if __name__ == "__main__":
    main()
