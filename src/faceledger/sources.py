"""Where image bytes come from: Rekognition's `Image` shape ({Bytes} or {S3Object}) -> bytes.

Callers never name server paths or URLs; S3Object references resolve only through buckets the
operator configured (see `server`/settings), by a resolver passed to the service, and only
where the caller's grants reach (`RequestContext.s3_objects`: an API key's `--s3`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from .context import RequestContext
from .errors import InvalidParameterException, InvalidS3ObjectException
from .imaging import DecodedImage
from .text import logger, shown

log = logger("faceledger.sources")

# Rekognition's Image (Bytes or S3Object), or (the Python API only) a picture already turned
# into pixels (`imaging.from_picture`); the HTTP server never makes one.
ImageInput = bytes | Mapping[str, Any] | DecodedImage

# AWS's answer for an object that is missing *or* that the caller may not read: one message for
# both, so the answer says nothing about what exists where the caller has no grant.
NOT_READABLE = ("Unable to get object metadata from S3. "
                "Check object key, region and/or access permissions.")


def check_object_name(bucket: str, name: str) -> None:
    """Refuse a name that is not a plain relative key: empty, absolute, with an empty, `.` or
    `..` segment, a backslash or NUL (InvalidS3ObjectException). A local bucket would resolve
    it outside its folder; an S3-compatible server or a proxy in front of it may normalise
    `a/../b` in the URL path, leaving a granted prefix or the bucket. One check for both."""
    if not name or "\\" in name or "\x00" in name or any(
            p in ("", ".", "..") for p in name.split("/")):
        raise InvalidS3ObjectException(
            f"Object name '{shown(name, 200)}' is not a plain relative name inside bucket "
            f"'{shown(bucket)}'.")


def check_prefix(prefix: str) -> None:
    """A listing prefix: like an object name, but it may be empty or end with '/'."""
    if "\\" in prefix or "\x00" in prefix or any(p in (".", "..") for p in prefix.split("/")):
        raise InvalidS3ObjectException(
            f"Prefix '{shown(prefix, 200)}' is not a plain relative name.")


def check_readable(bucket: str, name: str, ctx: RequestContext) -> None:
    """Refuse an object the caller's grants do not cover, with the answer a missing object gets
    (checked after the name, so `granted/../elsewhere` never matches a grant's glob)."""
    check_object_name(bucket, name)
    if not ctx.may_read(bucket, name):
        log.info("%s may not read S3 object %s/%s (no grant covers it)", shown(ctx.principal),
                 shown(bucket), shown(name, 200))
        raise InvalidS3ObjectException(NOT_READABLE)


class ObjectResolver(Protocol):
    """Fetches an S3Object {Bucket, Name, Version} from configured storage."""

    def fetch(self, bucket: str, name: str, version: str | None) -> bytes: ...


class NoObjectStorage:
    """The default: no buckets configured, so every S3Object reference is refused."""

    def fetch(self, bucket: str, name: str, version: str | None) -> bytes:
        raise InvalidS3ObjectException(
            f"S3Object {shown(bucket)}/{shown(name, 200)} cannot be read: no object storage is configured."
        )


def image_bytes(image: ImageInput, resolver: ObjectResolver, ctx: RequestContext,
                field: str = "Image") -> bytes:
    """The bytes an `Image` value stands for (an S3Object only where `ctx` may read it)."""
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
    check_readable(ref["Bucket"], ref["Name"], ctx)
    return resolver.fetch(ref["Bucket"], ref["Name"], version)
