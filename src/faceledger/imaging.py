"""Turning untrusted image bytes into an RGB pixel array, refusing anything unsafe or unusable.

One path for every image: `decode_image` opens the bytes (JPEG, PNG, and MPO - a JPEG with
extra frames, whose first frame is the photo), bounds the pixels it will decode (JPEGs above
the bound decode at 1/2, 1/4 or 1/8 scale, which libjpeg does without ever holding the full
size; other formats are refused beyond it), bounds a JPEG's scans before decoding it (`jpeg_layout`
walks its markers), reserves its memory - the pixels, and for a progressive JPEG the
coefficients of the whole image too - in a budget shared by concurrent requests, and hands the
decoded picture to `to_rgb`, the one normaliser of bit depth, palette, transparency and colour
model. Every refusal is our own message with a Rekognition code;
Pillow's wording (its internal limits, its parser's complaints) goes to the debug log only.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import (
    ImageTooLargeException,
    InvalidImageFormatException,
    InvalidParameterException,
    ThrottlingException,
)
from .text import logger

if TYPE_CHECKING:  # vision imports this module
    from .vision.types import FaceAnalysis

log = logger("faceledger.imaging")

# Truncated files must fail, not decode half a picture silently.
ImageFile.LOAD_TRUNCATED_IMAGES = False

ACCEPTED_FORMATS = ("JPEG", "PNG", "MPO")
# Formats libjpeg can decode at 1/2, 1/4 or 1/8 scale (Image.draft).
REDUCIBLE_FORMATS = ("JPEG", "MPO")
DRAFT_SCALES = (1, 2, 4, 8)
# What a transparent pixel is seen against (the way a viewer shows it on a page).
BACKGROUND = (255, 255, 255)

RGBImage = NDArray[np.uint8]

# A decoded pixel costs about this many bytes at the peak of decoding (bench/decode_memory.py);
# other decoding memory is charged to the PixelBudget in these units.
BYTES_PER_DECODED_PIXEL = 13
# A progressive (or any multi-scan) JPEG is decoded scan by scan, each scan one more pass over
# the coefficients of the whole image however few bytes it has: the probe of issue 24 repeated
# the last scan of a 7000x7000 image (75 bytes and ~17 ms of CPU a scan; 1,000 scans in 267 KB
# took 47 s while another client's DetectFaces waited 44 s). libjpeg-turbo offers a scan limit
# against this exploit (TJPARAM_SCANLIMIT, `djpeg -maxscans`; its own fuzzers set 500, and
# its TurboJPEG 2.1 flag TJFLAG_LIMITSCANS meant 500), which Pillow does not expose, so scans
# are counted here from the marker structure, without decoding. Encoders write few: libjpeg's
# standard progression (Pillow, OpenCV, jpegtran, GIMP) 10, 6 for greyscale; mozjpeg's scan
# search at most 16 (its select_scans keeps 1 luma DC, up to 2 chroma DC, 2 luma AC bands, up
# to 3 luma refinements, 4 chroma AC bands and up to 4 chroma refinements); baseline 1. All
# 10,837 JPEGs in ../shared/faces have 1 or 10. 32 is twice mozjpeg's most, and costs at worst
# ~0.5 s more than a baseline decode of the largest image.
MAX_JPEG_SCANS = 32
# Marker segments walked before a JPEG is refused: real files have tens (APPn, DQT, DHT between
# scans, SOF, SOS; an ICC profile takes at most 255 APP2 chunks), while 5 MB of 4-byte segments
# would cost a second of Python to walk.
MAX_JPEG_SEGMENTS = 4096
# Where a scan's entropy-coded data ends: a 0xFF that is neither a stuffed 0xFF00, a restart
# marker (RST0-7) nor fill before the next marker. One byte class after one byte: linear time.
_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# Markers without a length (TEM, RST0-7, SOI; EOI ends the walk), and 0xFF00, which libjpeg
# skips outside a scan as it does any byte that is not a marker; SOFn carry the frame size.
_STANDALONE = frozenset({0x00, 0x01, *range(0xD0, 0xD9)})
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_SOS, _EOI = 0xDA, 0xD9


@dataclass(frozen=True)
class DecodedImage:
    """Pixels (H x W x 3, RGB, EXIF orientation applied) and the digest of the original bytes."""

    pixels: RGBImage
    sha256: str
    format: str

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


@dataclass(frozen=True)
class AnalysedImage:
    """An image decoded and analysed elsewhere (a bulk worker, a Ray actor) with the same
    settings: what IndexFaces needs of it, without the pixels."""

    sha256: str
    width: int
    height: int
    faces: list[FaceAnalysis]
    model_version: str


@dataclass(frozen=True)
class JpegLayout:
    """What a JPEG's markers say before any decoding: its scans, and its frame (size, and each
    component's sampling factors), from the first image up to its EOI (an MPO's photo)."""

    scans: int
    progressive: bool
    width: int
    height: int
    sampling: tuple[tuple[int, int], ...]  # (horizontal, vertical) per component

    @property
    def multi_scan(self) -> bool:
        """libjpeg keeps every coefficient of the image while it decodes such a file."""
        return self.progressive or self.scans > 1

    def coefficient_bytes(self) -> int:
        """The whole-image coefficient buffer libjpeg allocates for a multi-scan JPEG: one
        16-bit coefficient a sample, in 8x8 blocks rounded up to whole sampling units
        (jdcoefct.c), whatever scale the image is decoded at."""
        h_max = max((h for h, _ in self.sampling), default=0)
        v_max = max((v for _, v in self.sampling), default=0)
        if not h_max or not v_max:
            return 0  # no frame, or factors of 0: libjpeg refuses it before allocating
        total = 0
        for h, v in self.sampling:
            cols = math.ceil(self.width * h / (h_max * 8))
            rows = math.ceil(self.height * v / (v_max * 8))
            total += _round_up(cols, h) * _round_up(rows, v) * 64 * 2
        return total


def _round_up(n: int, unit: int) -> int:
    return -(-n // max(unit, 1)) * max(unit, 1)


def jpeg_layout(data: bytes, max_scans: int = MAX_JPEG_SCANS) -> JpegLayout:
    """Walk a JPEG's markers (without decoding) to its first EOI, the way libjpeg reads them;
    InvalidImageFormatException if it has more than `max_scans` scans or MAX_JPEG_SEGMENTS
    segments. What libjpeg would refuse is left to it to refuse."""
    end, pos = len(data), 2  # after SOI
    scans = segments = 0
    progressive, size = False, (0, 0)
    sampling: tuple[tuple[int, int], ...] = ()
    while pos + 2 <= end:
        if data[pos] != 0xFF:
            # libjpeg skips bytes that are not a marker ("extraneous bytes before marker")
            # and reads on from the next 0xFF: so does the count, or they would hide scans
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == _EOI:
            break
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise InvalidImageFormatException(
                f"Image has more than {MAX_JPEG_SEGMENTS} JPEG marker segments; this server "
                "decodes JPEGs with fewer (re-encode it).")
        if marker in _STANDALONE:
            pos += 2
            continue
        if pos + 4 > end:
            break
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker in _SOF and not sampling and pos + 10 <= end:
            size = (int.from_bytes(data[pos + 7:pos + 9], "big"),
                    int.from_bytes(data[pos + 5:pos + 7], "big"))
            progressive = marker in _PROGRESSIVE_SOF
            count = data[pos + 9]
            fields = data[pos + 10:pos + 10 + 3 * count]
            sampling = tuple((fields[i + 1] >> 4, fields[i + 1] & 0x0F)
                             for i in range(0, len(fields) - 2, 3))
        pos += 2 + length
        if marker == _SOS:
            scans += 1
            if scans > max_scans:
                raise InvalidImageFormatException(
                    f"Image is a JPEG of more than {max_scans} scans; this server decodes at "
                    f"most {max_scans} (encoders write 1 to 16): re-encode it.")
            found = _MARKER_AFTER_SCAN.search(data, pos)
            if found is None:
                break
            pos = found.start()
    return JpegLayout(scans, progressive, size[0], size[1], sampling)


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of bytes: how the ledger names an image without keeping it."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks (videos and model files may be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class PixelBudget:
    """Pixels being decoded at once, across every request of a process: a decode reserves its
    pixels before it starts and gives them back when the RGB array is made.

    A request whose image alone exceeds the budget is refused (ImageTooLargeException); one
    that would exceed it with others in flight waits up to `wait_seconds`, then is told to
    retry (ThrottlingException), so concurrent large images cannot add up without bound.
    """

    def __init__(self, total_pixels: int, wait_seconds: float = 10.0) -> None:
        self.total = total_pixels
        self.wait_seconds = wait_seconds
        self.in_use = 0
        self._cond = threading.Condition()

    @contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        if pixels > self.total:
            raise ImageTooLargeException(
                f"Image needs the memory of {pixels} decoded pixels; this server decodes at "
                f"most {self.total} pixels at once.")
        deadline = time.monotonic() + self.wait_seconds
        with self._cond:
            while self.in_use + pixels > self.total:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    if self.in_use + pixels > self.total:
                        raise ThrottlingException(
                            "The server is decoding too many large images at once; retry.")
            self.in_use += pixels
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= pixels
                self._cond.notify_all()


def decode_image(
    data: bytes,
    *,
    max_bytes: int = 5 * 1024 * 1024,
    max_pixels: int = 50_000_000,
    max_decoded_pixels: int = 25_000_000,
    min_side: int = 80,
    budget: PixelBudget | None = None,
    max_jpeg_scans: int = MAX_JPEG_SCANS,
) -> DecodedImage:
    """Decode JPEG, MPO or PNG bytes to RGB; raise the Rekognition error that matches what is
    wrong.

    `max_pixels` bounds the image's own size; `max_decoded_pixels` what is decoded: larger
    JPEGs decode at a reduced scale (the result is smaller than the image), larger PNGs are
    refused; a JPEG of more than `max_jpeg_scans` scans is refused before decoding. `budget`,
    if given, is shared with concurrent decodes; a progressive JPEG is charged its whole-image
    coefficient buffer as well as its pixels.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidParameterException("Image bytes must be bytes.")
    data = bytes(data)
    if len(data) == 0:
        raise InvalidParameterException("Image bytes are empty.")
    if len(data) > max_bytes:
        raise ImageTooLargeException(
            f"Image is {len(data)} bytes; the limit for image bytes is {max_bytes}."
        )
    # before Pillow reads a marker (it walks the header in Python too)
    layout = jpeg_layout(data, max_jpeg_scans) if data.startswith(b"\xff\xd8") else None
    try:
        with warnings.catch_warnings(record=True) as noticed:
            # Pillow warns about malformed metadata (an MPO index, EXIF) and reads on: so do
            # we, noting it in the log. It warns (then errors) on decompression bombs: both are
            # too large.
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
            fmt = opened.format or ""
            if fmt not in ACCEPTED_FORMATS:
                raise InvalidImageFormatException(
                    f"Image format {fmt or 'unknown'} is not supported; send JPEG or PNG."
                )
            width, height = opened.size
            if width * height > max_pixels:
                raise ImageTooLargeException(
                    f"Image is {width}x{height} pixels; the limit is {max_pixels} pixels."
                )
            decoded_size = _reduce(opened, fmt, max_decoded_pixels)
            cost = decoded_size[0] * decoded_size[1]
            if layout is not None and layout.multi_scan:
                cost += -(-layout.coefficient_bytes() // BYTES_PER_DECODED_PIXEL)
            with budget.reserve(cost) if budget is not None else _unbounded():
                opened.load()
                oriented = ImageOps.exif_transpose(opened)
                rgb = to_rgb(oriented)
                pixels = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
                del opened, oriented, rgb
            for warning in noticed:
                log.debug("while decoding an image: %s", warning.message)
    except (InvalidImageFormatException, ImageTooLargeException, ThrottlingException):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        log.debug("decompression bomb refused: %s", exc)
        raise ImageTooLargeException(
            f"Image has more pixels than can be decoded safely; the limit is {max_pixels} "
            "pixels."
        ) from None
    except UnidentifiedImageError:
        raise InvalidImageFormatException(
            "Image bytes are not a JPEG or PNG image that can be decoded."
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        # Truncated or corrupt data: Pillow raises OSError ("image file is truncated") and
        # friends. Its wording stays in the log: the caller learns what, not Pillow's how.
        log.debug("image could not be decoded: %r", exc)
        raise InvalidImageFormatException(
            "Image could not be decoded: the data is truncated or corrupt."
        ) from None
    h, w = pixels.shape[:2]
    if min(h, w) < min_side:
        raise InvalidParameterException(
            f"Image is {w}x{h} pixels; both sides must be at least {min_side} pixels."
        )
    return DecodedImage(pixels=pixels, sha256=sha256_hex(data), format=fmt)


@contextmanager
def _unbounded() -> Iterator[None]:
    yield


def _reduce(opened: Image.Image, fmt: str, max_decoded_pixels: int) -> tuple[int, int]:
    """Arrange for at most `max_decoded_pixels` to be decoded; the size that will be decoded."""
    width, height = opened.size
    if width * height <= max_decoded_pixels:
        return width, height
    if fmt in REDUCIBLE_FORMATS:
        for scale in DRAFT_SCALES[1:]:
            w, h = math.ceil(width / scale), math.ceil(height / scale)
            if w * h <= max_decoded_pixels:
                # draft picks the largest DCT scale whose result is at least the size asked
                opened.draft(opened.mode, (width // scale, height // scale))
                w, h = opened.size
                if w * h <= max_decoded_pixels:
                    return w, h
                break
    raise ImageTooLargeException(
        f"Image is {width}x{height} pixels; a {fmt} image is decoded in full and the limit "
        f"for that is {max_decoded_pixels} pixels"
        + (" (JPEGs may be larger: they decode at reduced scale)."
           if fmt not in REDUCIBLE_FORMATS else ", even at 1/8 scale.")
    )


# Integer greyscale modes and the largest value their samples can hold.
_INTEGER_GREY = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any decoded picture as 8-bit RGB: the one normaliser of bit depth, palette, alpha and
    colour model.

    16-bit greyscale (I;16*, and I as PNG gives it) is scaled from 0-65535 to 0-255 (Pillow's
    convert clips it, turning a photo white); float greyscale (F) from 0-1 if that is its
    range, else clipped to 0-255; palettes are expanded; CMYK and YCbCr are converted; any
    transparency (alpha band, palette or tRNS) is composited over white, the way a viewer
    shows the picture, instead of exposing whatever colour hides under transparent pixels.
    """
    mode = image.mode
    if mode in _INTEGER_GREY:
        grey = np.asarray(image).astype(np.int64)
        grey = (np.clip(grey, 0, _INTEGER_GREY[mode]) * 255 + 32767) // _INTEGER_GREY[mode]
        return Image.fromarray(grey.astype(np.uint8)).convert("RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=255.0,
                               neginf=0.0)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return image
    return image.convert("RGB")


def pixels_sha256(pixels: RGBImage) -> str:
    """How the ledger names a picture given as pixels (no file, so no file hash): SHA-256 of
    "RGB <width>x<height>\\n" and then the RGB bytes, row by row."""
    h, w = pixels.shape[:2]
    digest = hashlib.sha256(f"RGB {w}x{h}\n".encode("ascii"))
    digest.update(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def from_picture(picture: object, *, max_pixels: int = 50_000_000,
                 min_side: int = 80) -> DecodedImage:
    """A picture the caller holds in memory, as face_recognition users do: a numpy array
    (uint8; H x W x 3 RGB as `face_recognition.load_image_file` gives, H x W greyscale, or
    H x W x 4 RGBA) or a PIL image (its EXIF orientation applied, as for bytes). The same
    normaliser and size limits as decoded bytes; the byte limit does not apply (no bytes).
    OpenCV's BGR arrays must be converted first (cv2.cvtColor(img, cv2.COLOR_BGR2RGB)): an
    array does not say its channel order."""
    if isinstance(picture, np.ndarray):
        array = picture
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.dtype != np.uint8 or not (
                array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
            raise InvalidParameterException(
                f"An image array must be uint8 of shape (height, width, 3) in RGB order (or "
                f"(height, width) greyscale, (height, width, 4) RGBA); got {array.dtype} "
                f"{tuple(array.shape)}.")
        _check_size(array.shape[1], array.shape[0], max_pixels, min_side)
        rgb = to_rgb(Image.fromarray(np.ascontiguousarray(array)))
    elif isinstance(picture, Image.Image):
        _check_size(picture.width, picture.height, max_pixels, min_side)
        rgb = to_rgb(ImageOps.exif_transpose(picture) or picture)
    else:
        raise InvalidParameterException(
            f"An image must be bytes, a path, a numpy array or a PIL image; got "
            f"{type(picture).__name__}.")
    pixels = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    _check_size(pixels.shape[1], pixels.shape[0], max_pixels, min_side)  # after EXIF rotation
    return DecodedImage(pixels=pixels, sha256=pixels_sha256(pixels), format="pixels")


def _check_size(width: int, height: int, max_pixels: int, min_side: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeException(
            f"Image is {width}x{height} pixels; the limit is {max_pixels} pixels.")
    if min(width, height) < min_side:
        raise InvalidParameterException(
            f"Image is {width}x{height} pixels; both sides must be at least {min_side} pixels.")


def encode_png(pixels: RGBImage) -> bytes:
    """PNG bytes of an RGB array (annotated outputs, tests)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def encode_jpeg(pixels: RGBImage, quality: int = 92) -> bytes:
    """JPEG bytes of an RGB array."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
