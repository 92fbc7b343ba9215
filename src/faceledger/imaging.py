"""Turning untrusted image bytes into an RGB pixel array, refusing anything unsafe or unusable."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import (
    ImageTooLargeException,
    InvalidImageFormatException,
    InvalidParameterException,
)

# Truncated files must fail, not decode half a picture silently.
ImageFile.LOAD_TRUNCATED_IMAGES = False

ACCEPTED_FORMATS = ("JPEG", "PNG")

RGBImage = NDArray[np.uint8]


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


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of bytes: how the ledger names an image without keeping it."""
    return hashlib.sha256(data).hexdigest()


def decode_image(
    data: bytes,
    *,
    max_bytes: int = 5 * 1024 * 1024,
    max_pixels: int = 50_000_000,
    min_side: int = 80,
) -> DecodedImage:
    """Decode JPEG or PNG bytes; raise the Rekognition error that matches what is wrong."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidParameterException("Image bytes must be bytes.")
    data = bytes(data)
    if len(data) == 0:
        raise InvalidParameterException("Image bytes are empty.")
    if len(data) > max_bytes:
        raise ImageTooLargeException(
            f"Image is {len(data)} bytes; the limit for image bytes is {max_bytes}."
        )
    try:
        with warnings.catch_warnings():
            # Pillow warns (then errors) on decompression bombs; treat both as too large.
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
            opened.load()
            oriented = ImageOps.exif_transpose(opened)
            rgb = oriented.convert("RGB")
    except (InvalidImageFormatException, ImageTooLargeException):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeException(f"Image is too large to decode safely: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageFormatException(
            "Image bytes are not a JPEG or PNG image that can be decoded."
        ) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Truncated or corrupt data: Pillow raises OSError ("image file is truncated") and friends.
        raise InvalidImageFormatException(f"Image could not be decoded: {exc}") from exc
    pixels = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    h, w = pixels.shape[:2]
    if min(h, w) < min_side:
        raise InvalidParameterException(
            f"Image is {w}x{h} pixels; both sides must be at least {min_side} pixels."
        )
    return DecodedImage(pixels=pixels, sha256=sha256_hex(data), format=fmt)


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
