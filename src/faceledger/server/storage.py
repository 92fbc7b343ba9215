"""Image.S3Object resolution: configured buckets only, read from local directories or from an
S3-compatible endpoint with boto3. Callers name a bucket and an object, never a path or a URL.

Every failure is InvalidS3ObjectException (what Rekognition answers), except an object over the
S3 image limit (15 MB), which is ImageTooLargeException and is refused before it is downloaded.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ImageTooLargeException, InvalidS3ObjectException, VideoTooLargeException
from ..permissions import open_private
from ..settings import Settings
from ..sources import (
    NOT_READABLE,
    NoObjectStorage,
    ObjectResolver,
    check_object_name,
    check_prefix,
)
from ..text import logger, shown

log = logger("faceledger.server")


def not_configured(bucket: str) -> str:
    """The refusal for a bucket this server does not serve."""
    return f"Bucket '{shown(bucket)}' is not configured on this server."


def _video_too_large(bucket: str, name: str, size: int, limit: int) -> VideoTooLargeException:
    return VideoTooLargeException(
        f"S3Object {shown(bucket)}/{shown(name, 200)} is {size} bytes; the limit for stored video "
        f"is {limit} bytes."
    )


def _too_large(bucket: str, name: str, size: int, limit: int) -> ImageTooLargeException:
    return ImageTooLargeException(
        f"S3Object {shown(bucket)}/{shown(name, 200)} is {size} bytes; the limit for images in S3 is {limit} bytes."
    )


class LocalBuckets:
    """Buckets that are directories on this machine; object names must stay inside them."""

    def __init__(self, buckets: Mapping[str, Path], max_bytes: int) -> None:
        self.roots = {name: Path(root).resolve() for name, root in buckets.items()}
        self.max_bytes = max_bytes
        for name, root in self.roots.items():
            if not root.is_dir():
                raise ValueError(f"local bucket {name!r}: {root} is not a directory")

    def fetch(self, bucket: str, name: str, version: str | None) -> bytes:
        path = self._path(bucket, name, version)
        size = path.stat().st_size
        if size > self.max_bytes:
            raise _too_large(bucket, name, size, self.max_bytes)
        with path.open("rb") as f:
            data = f.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:  # grew since stat
            raise _too_large(bucket, name, len(data), self.max_bytes)
        return data

    def list_objects(self, bucket: str, prefix: str) -> list[str]:
        """Names of the files under `prefix` in a bucket (a key prefix, as S3 lists it), sorted;
        symlinks that lead outside the bucket are left out."""
        root = self.roots.get(bucket)
        if root is None:
            raise InvalidS3ObjectException(not_configured(bucket))
        check_prefix(prefix)
        head, _, _ = prefix.rpartition("/")
        base = root / head if head else root
        if not base.resolve().is_relative_to(root) or not base.is_dir():
            return []
        names = []
        for path in base.rglob("*"):
            name = path.relative_to(root).as_posix()
            if name.startswith(prefix) and path.is_file() and path.resolve().is_relative_to(root):
                names.append(name)
        return sorted(names)

    def download(self, bucket: str, name: str, version: str | None, dest: Path,
                 max_bytes: int) -> None:
        """Copy an object (a stored video) to `dest`; VideoTooLargeException past max_bytes."""
        path = self._path(bucket, name, version)
        size = path.stat().st_size
        if size > max_bytes:
            raise _video_too_large(bucket, name, size, max_bytes)
        with path.open("rb") as src, open_private(dest) as out:  # spooled videos: 0600
            shutil.copyfileobj(src, out, 1 << 20)

    def _path(self, bucket: str, name: str, version: str | None) -> Path:
        root = self.roots.get(bucket)
        if root is None:
            raise InvalidS3ObjectException(not_configured(bucket))
        if version is not None:
            raise InvalidS3ObjectException(
                f"Bucket '{shown(bucket)}' is a local directory: objects have no versions."
            )
        check_object_name(bucket, name)
        path = (root / name).resolve()
        # A symlink inside the bucket may still point outside it: check where it lands.
        if not path.is_relative_to(root) or not path.is_file():
            raise InvalidS3ObjectException(NOT_READABLE)
        return path


class S3Buckets:
    """Allow-listed buckets read through boto3 (AWS S3, MinIO, Ceph, moto ...)."""

    def __init__(self, buckets: Iterable[str], client: Any, max_bytes: int) -> None:
        self.buckets = frozenset(buckets)
        self.client = client
        self.max_bytes = max_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Buckets:
        import boto3
        from botocore.config import Config

        secret = settings.s3_secret_access_key
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=None if secret is None else secret.get_secret_value(),
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=5,
                read_timeout=30,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )
        return cls(settings.s3_buckets, client, settings.max_s3_image_bytes)

    @contextmanager
    def _object(self, bucket: str, name: str, version: str | None, max_bytes: int,
                too_large: Callable[[str, str, int, int], Exception]) -> Iterator[Any]:
        """The object's streaming body, after its size was checked against `max_bytes`; every
        S3 failure becomes InvalidS3ObjectException (the caller's values escaped in the log)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if bucket not in self.buckets:
            raise InvalidS3ObjectException(not_configured(bucket))
        check_object_name(bucket, name)  # sent as is, `..` could leave the bucket
        ref: dict[str, str] = {"Bucket": bucket, "Key": name}
        if version is not None:
            ref["VersionId"] = version
        try:
            head = self.client.head_object(**ref)
            size = int(head.get("ContentLength", 0))
            if size > max_bytes:
                raise too_large(bucket, name, size, max_bytes)
            body = self.client.get_object(**ref)["Body"]
            try:
                yield body
            finally:
                body.close()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            log.info("S3 %s/%s (version %s): %s", shown(bucket), shown(name, 200), shown(version),
                     shown(code))
            raise InvalidS3ObjectException(NOT_READABLE) from exc
        except BotoCoreError as exc:
            log.warning("S3 endpoint failed for %s/%s: %s", shown(bucket), shown(name, 200), exc)
            raise InvalidS3ObjectException(
                "The object storage endpoint could not be reached; try again later."
            ) from exc

    def list_objects(self, bucket: str, prefix: str) -> list[str]:
        """Keys under `prefix` in a configured bucket (every page of ListObjectsV2), sorted."""
        from botocore.exceptions import BotoCoreError, ClientError

        if bucket not in self.buckets:
            raise InvalidS3ObjectException(not_configured(bucket))
        check_prefix(prefix)
        names: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=prefix):
                names.extend(str(o["Key"]) for o in page.get("Contents", ())
                             if not str(o["Key"]).endswith("/"))
        except ClientError as exc:
            log.info("S3 list %s/%s: %s", shown(bucket), shown(prefix, 200),
                     shown(exc.response.get("Error", {}).get("Code", "")))
            raise InvalidS3ObjectException(
                f"Bucket '{shown(bucket)}' cannot be listed. Check its name, region and "
                "permissions (s3:ListBucket).") from exc
        except BotoCoreError as exc:
            raise InvalidS3ObjectException(
                "The object storage endpoint could not be reached; try again later.") from exc
        return sorted(names)

    def fetch(self, bucket: str, name: str, version: str | None) -> bytes:
        with self._object(bucket, name, version, self.max_bytes, _too_large) as body:
            data: bytes = body.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise _too_large(bucket, name, len(data), self.max_bytes)
        return data

    def download(self, bucket: str, name: str, version: str | None, dest: Path,
                 max_bytes: int) -> None:
        """Stream an object (a stored video) to `dest`; VideoTooLargeException past max_bytes."""
        with self._object(bucket, name, version, max_bytes, _video_too_large) as body:
            written = 0
            with open_private(dest) as out:  # spooled videos: 0600
                for chunk in iter(lambda: body.read(1 << 20), b""):
                    written += len(chunk)
                    if written > max_bytes:
                        raise _video_too_large(bucket, name, written, max_bytes)
                    out.write(chunk)


class BucketRouter:
    """Sends each bucket name to the resolver configured for it."""

    def __init__(self, routes: Mapping[str, ObjectResolver]) -> None:
        self.routes = dict(routes)

    def fetch(self, bucket: str, name: str, version: str | None) -> bytes:
        resolver = self.routes.get(bucket)
        if resolver is None:
            raise InvalidS3ObjectException(not_configured(bucket))
        return resolver.fetch(bucket, name, version)

    def list_objects(self, bucket: str, prefix: str) -> list[str]:
        resolver = self.routes.get(bucket)
        if not isinstance(resolver, (LocalBuckets, S3Buckets)):
            raise InvalidS3ObjectException(not_configured(bucket))
        return resolver.list_objects(bucket, prefix)

    def download(self, bucket: str, name: str, version: str | None, dest: Path,
                 max_bytes: int) -> None:
        resolver = self.routes.get(bucket)
        if not isinstance(resolver, (LocalBuckets, S3Buckets)):
            raise InvalidS3ObjectException(not_configured(bucket))
        resolver.download(bucket, name, version, dest, max_bytes)


def build_resolver(settings: Settings) -> ObjectResolver:
    """The resolver for the buckets in settings: local directories and/or S3 buckets."""
    both = set(settings.local_buckets) & set(settings.s3_buckets)
    if both:
        raise ValueError(f"buckets configured both as local and S3: {', '.join(sorted(both))}")
    routes: dict[str, ObjectResolver] = {}
    if settings.local_buckets:
        local = LocalBuckets(settings.local_buckets, settings.max_s3_image_bytes)
        routes.update({name: local for name in local.roots})
    if settings.s3_buckets:
        s3 = S3Buckets.from_settings(settings)
        routes.update({name: s3 for name in s3.buckets})
    return BucketRouter(routes) if routes else NoObjectStorage()
