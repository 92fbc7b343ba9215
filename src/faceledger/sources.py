"""Where image bytes come from: Rekognition's `Image` shape ({Bytes} or {S3Object}) -> bytes.

Callers never name server paths or URLs; S3Object references resolve only through buckets the
operator configured (see `server`/settings), by a resolver passed to the service.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from .errors import InvalidParameterException, InvalidS3ObjectException
from .imaging import DecodedImage
from .text import shown

# Rekognition's Image (Bytes or S3Object), or (the Python API only) a picture already turned
# into pixels (`imaging.from_picture`); the HTTP server never makes one.
ImageInput = bytes | Mapping[str, Any] | DecodedImage


class ObjectResolver(Protocol):
    """Fetches an S3Object {Bucket, Name, Version} from configured storage."""

    def fetch(self, bucket: str, name: str, version: str | None) -> bytes: ...


class NoObjectStorage:
    """The default: no buckets configured, so every S3Object reference is refused."""

    def fetch(self, bucket: str, name: str, version: str | None) -> bytes:
        raise InvalidS3ObjectException(
            f"S3Object {shown(bucket)}/{shown(name, 200)} cannot be read: no object storage is configured."
        )


def image_bytes(image: ImageInput, resolver: ObjectResolver, field: str = "Image") -> bytes:
    """The bytes an `Image` value stands for."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, DecodedImage):
        raise InvalidParameterException(f"{field} must be image bytes here, not pixels.")
    if not isinstance(image, Mapping):
        raise InvalidParameterException(f"{field} must be an object with Bytes or S3Object.")
    has_bytes = image.get("Bytes") is not None
    has_s3 = image.get("S3Object") is not None
    if has_bytes == has_s3:
        raise InvalidParameterException(f"{field} must have exactly one of Bytes or S3Object.")
    if has_bytes:
        data = image["Bytes"]
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidParameterException(f"{field}.Bytes must be binary image data.")
        return bytes(data)
    ref = image["S3Object"]
    if not isinstance(ref, Mapping) or not isinstance(ref.get("Bucket"), str) or not isinstance(
        ref.get("Name"), str
    ):
        raise InvalidParameterException(f"{field}.S3Object needs string Bucket and Name.")
    version = ref.get("Version")
    if version is not None and not isinstance(version, str):
        raise InvalidParameterException(f"{field}.S3Object.Version must be a string.")
    return resolver.fetch(ref["Bucket"], ref["Name"], version)
