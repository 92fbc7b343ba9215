"""Memory and CPU of decoding huge-pixel images: faceledger's decoder against a plain full decode
(what faceledger did before: open, load, EXIF-transpose, convert to RGB, numpy array).

Images are checked against the S3 byte limit (15 MB), as an Image.S3Object would be. Each case
runs in a fresh process that reads the image bytes, resets its peak RSS (Linux
/proc/self/clear_refs), decodes (N copies at once in N threads for the concurrent cases), and
reports how far the peak rose above the RSS before decoding, and the CPU seconds the decode
took. Progressive JPEGs hold the coefficients of the whole image while they decode (at any
scale), which the "charged" column shows as faceledger's budget sees it (MB at 13 bytes a
pixel); the scan bomb is issue 24's: a progressive JPEG whose last scan is repeated.
The images are generated once, in this process, into a temporary folder.

    python bench/decode_memory.py            # prints a side-by-side table
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CHILD = r"""
import json, sys, threading, time
import numpy as np
from PIL import Image, ImageOps
import io
from faceledger.errors import FaceledgerError
from faceledger.imaging import PixelBudget, decode_image
import faceledger.imaging as imaging
from faceledger.settings import Settings

mode, path, copies = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(path, "rb").read()
Image.MAX_IMAGE_PIXELS = None if mode == "full" else Image.MAX_IMAGE_PIXELS
s = Settings()
budget = PixelBudget(s.decode_budget_pixels)
charged = []
reserve = budget.reserve
def charging(pixels):
    charged.append(pixels)
    return reserve(pixels)
budget.reserve = charging
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB -> MB

# Imports (dlib, OpenCV) leave a high peak behind: reset the peak to the current size first.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
results = []
cpu = time.process_time()

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
print(json.dumps({"mb": status("VmHWM") - before, "result": sorted(set(results)),
                  "cpu": time.process_time() - cpu,
                  "charged_mb": max(charged, default=0) * imaging.BYTES_PER_DECODED_PIXEL / 1e6}))
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
    # progressive JPEGs of 50 megapixels (the image limit): 4:4:4 holds 6 bytes of coefficients
    # a pixel, 4:2:0 3 bytes, whatever scale the decode is at
    for sub, name in ((0, "4:4:4"), (2, "4:2:0")):
        path = folder / f"progressive-{sub}.jpg"
        big.resize((7071, 7071)).save(path, quality=60, progressive=True, subsampling=sub)
        cases.append((f"progressive {name} 7071x7071", path, 1))
    cases.append(("progressive 4:4:4, 2 at once", folder / "progressive-0.jpg", 2))
    cmyk = folder / "progressive-cmyk.jpg"  # four components: 8 bytes of coefficients a pixel
    big.resize((7071, 7071)).convert("CMYK").save(cmyk, quality=60, progressive=True)
    cases.append(("progressive CMYK 7071x7071", cmyk, 1))
    bomb = folder / "scan-bomb.jpg"
    bomb.write_bytes(repeat_last_scan(200))
    cases.append(("scan bomb 7000x7000, 210 scans", bomb, 1))
    return cases


def repeat_last_scan(extra: int) -> bytes:
    """A 7000x7000 progressive JPEG of one flat colour with its last scan (75 bytes) repeated
    `extra` times: the probe's scan bomb."""
    buf = io.BytesIO()
    Image.new("RGB", (7000, 7000), (120, 130, 140)).save(buf, "JPEG", quality=50,
                                                           progressive=True)
    data = buf.getvalue()
    start, end = data.rindex(b"\xff\xda"), len(data) - 2  # Pillow ends the last scan at EOI
    return data[:end] + data[start:end] * extra + data[end:]


def run(mode: str, path: Path, copies: int) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(copies)],
                         capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = make_cases(Path(tmp))
        print(f"{'case':<32} {'bytes':>10} | {'full decode MB':>14} {'CPU s':>6} "
              f"{'result':<12} | {'faceledger MB':>13} {'charged MB':>10} {'CPU s':>6} "
              f"{'result':<27} | ratio")
        for name, path, copies in cases:
            full = run("full", path, copies)
            ours = run("ours", path, copies)
            ratio = float(str(full["mb"])) / max(float(str(ours["mb"])), 1.0)
            print(f"{name:<32} {path.stat().st_size:>10} | {full['mb']:>14.0f} "
                  f"{full['cpu']:>6.1f} {','.join(map(str, full['result'])):<12} | "
                  f"{ours['mb']:>13.0f} {ours['charged_mb']:>10.0f} {ours['cpu']:>6.1f} "
                  f"{','.join(map(str, ours['result'])):<27} | {ratio:5.1f}x")


if __name__ == "__main__":
    main()
