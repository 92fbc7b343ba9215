"""Every kind of bad input gets its Rekognition error code and a clear message, never a crash."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image

from faceledger.errors import (
    FaceledgerError,
    ImageTooLargeException,
    InvalidImageFormatException,
    InvalidParameterException,
    InvalidS3ObjectException,
)
from faceledger.imaging import decode_image
from faceledger.service import FaceService


def encoded(size: tuple[int, int], fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge image, with a tiny compressed body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


BAD_IMAGES: list[tuple[str, bytes, type[FaceledgerError]]] = [
    ("empty", b"", InvalidParameterException),
    ("text", b"hello, this is not an image", InvalidImageFormatException),
    ("gif", encoded((200, 200), "GIF"), InvalidImageFormatException),
    ("bmp", encoded((200, 200), "BMP"), InvalidImageFormatException),
    ("truncated jpeg", encoded((400, 400), "JPEG")[:3000], InvalidImageFormatException),
    ("truncated png", encoded((400, 400), "PNG")[:200], InvalidImageFormatException),
    ("png bomb", png_bomb(30000, 30000), ImageTooLargeException),
    ("over 5 MB", b"\xff\xd8\xff" + b"\0" * (5 * 1024 * 1024 + 1), ImageTooLargeException),
    ("too small", encoded((60, 200), "PNG"), InvalidParameterException),
]


@pytest.mark.parametrize(("name", "data", "error"), BAD_IMAGES, ids=[b[0] for b in BAD_IMAGES])
def test_decode_refuses_bad_images(name: str, data: bytes, error: type[FaceledgerError]) -> None:
    with pytest.raises(error) as info:
        decode_image(data)
    assert info.value.message and "Traceback" not in info.value.message
    assert info.value.to_wire()["__type"] == error.code


@pytest.mark.parametrize(("name", "data", "error"), BAD_IMAGES, ids=[b[0] for b in BAD_IMAGES])
def test_operations_refuse_bad_images(
    service: FaceService, astronaut_jpeg: bytes, name: str, data: bytes,
    error: type[FaceledgerError],
) -> None:
    with pytest.raises(error):
        service.detect_faces({"Bytes": data})
    with pytest.raises(error):
        service.compare_faces({"Bytes": astronaut_jpeg}, {"Bytes": data})


def test_exif_orientation_is_honoured(service: FaceService, astronaut_jpeg: bytes) -> None:
    upright = service.detect_faces({"Bytes": astronaut_jpeg})["FaceDetails"][0]["BoundingBox"]
    img = Image.open(io.BytesIO(astronaut_jpeg))
    # Store the pixels turned on their side, with EXIF saying "rotate 90 CW to display" (6).
    sideways = img.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    sideways.save(buf, format="JPEG", exif=exif.tobytes())
    found = service.detect_faces({"Bytes": buf.getvalue()})["FaceDetails"]
    assert found, "the face must be found once the EXIF rotation is applied"
    box = found[0]["BoundingBox"]
    for key in ("Left", "Top", "Width", "Height"):
        assert abs(box[key] - upright[key]) < 0.03


@pytest.mark.parametrize(("image", "error"), [
    (None, InvalidParameterException),
    ("a string", InvalidParameterException),
    ({}, InvalidParameterException),
    ({"Bytes": b"x", "S3Object": {"Bucket": "b", "Name": "n"}}, InvalidParameterException),
    ({"Bytes": "not bytes"}, InvalidParameterException),
    ({"S3Object": {"Bucket": 3}}, InvalidParameterException),
    ({"S3Object": {"Bucket": "b", "Name": "n"}}, InvalidS3ObjectException),
])
def test_malformed_image_parameter(service: FaceService, image: Any,
                                   error: type[FaceledgerError]) -> None:
    with pytest.raises(error):
        service.detect_faces(image)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"similarity_threshold": 101}, "SimilarityThreshold"),
    ({"similarity_threshold": -1}, "SimilarityThreshold"),
    ({"similarity_threshold": "80"}, "SimilarityThreshold"),
    ({"similarity_threshold": True}, "SimilarityThreshold"),
    ({"quality_filter": "BEST"}, "QualityFilter"),
])
def test_compare_parameter_errors(service: FaceService, astronaut_jpeg: bytes,
                                  kwargs: dict[str, Any], field: str) -> None:
    img = {"Bytes": astronaut_jpeg}
    with pytest.raises(InvalidParameterException, match=field):
        service.compare_faces(img, img, **kwargs)


@pytest.mark.parametrize("attributes", [["FOO"], "ALL", [3]])
def test_detect_attribute_errors(service: FaceService, astronaut_jpeg: bytes,
                                 attributes: Any) -> None:
    with pytest.raises(InvalidParameterException, match="Attributes"):
        service.detect_faces({"Bytes": astronaut_jpeg}, attributes)


def test_source_without_face_is_an_invalid_parameter(service: FaceService,
                                                     astronaut_jpeg: bytes) -> None:
    blank = {"Bytes": encoded((300, 300), "JPEG")}
    with pytest.raises(InvalidParameterException, match="No face"):
        service.compare_faces(blank, {"Bytes": astronaut_jpeg})


def test_images_from_storage_may_be_15_mb_but_inline_bytes_only_5(tmp_path: Any) -> None:
    """Rekognition's limits: 5 MB for Image.Bytes, 15 MB for Image.S3Object."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (1600, 2000, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="JPEG", quality=100)
    big = buf.getvalue()
    assert 5 * 1024 * 1024 < len(big) < 15 * 1024 * 1024

    class OneObject:
        def fetch(self, bucket: str, name: str, version: str | None) -> bytes:
            return big

    from faceledger.settings import Settings

    svc = FaceService(Settings(data_dir=tmp_path), resolver=OneObject())
    with pytest.raises(ImageTooLargeException):
        svc.detect_faces({"Bytes": big})
    assert svc.detect_faces({"S3Object": {"Bucket": "b", "Name": "noise.jpg"}}) == {
        "FaceDetails": []}
