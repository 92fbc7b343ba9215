"""Video.S3Object -> a local file: stored video is streamed to disk, never held in memory."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import InvalidParameterException, VideoTooLargeException
from ..permissions import write_private
from ..sources import ObjectResolver


@runtime_checkable
class Downloader(Protocol):
    """A resolver that can stream an object to a file (server/storage.py's do)."""

    def download(self, bucket: str, name: str, version: str | None, dest: Path,
                 max_bytes: int) -> None: ...


def video_ref(video: Any) -> dict[str, Any]:
    """The S3Object of a `Video` parameter, checked."""
    if not isinstance(video, Mapping) or not isinstance(video.get("S3Object"), Mapping):
        raise InvalidParameterException("Video must have an S3Object {Bucket, Name}.")
    ref = video["S3Object"]
    if not isinstance(ref.get("Bucket"), str) or not isinstance(ref.get("Name"), str):
        raise InvalidParameterException("Video.S3Object needs string Bucket and Name.")
    version = ref.get("Version")
    if version is not None and not isinstance(version, str):
        raise InvalidParameterException("Video.S3Object.Version must be a string.")
    out = {"Bucket": ref["Bucket"], "Name": ref["Name"]}
    if version is not None:
        out["Version"] = version
    return out


def download_video(resolver: ObjectResolver, ref: Mapping[str, Any], dest: Path,
                   max_bytes: int) -> None:
    """Write the object `ref` names to `dest` (InvalidS3Object / VideoTooLarge on failure)."""
    bucket, name, version = ref["Bucket"], ref["Name"], ref.get("Version")
    if isinstance(resolver, Downloader):
        resolver.download(bucket, name, version, dest, max_bytes)
        return
    data = resolver.fetch(bucket, name, version)  # resolvers that only return bytes
    if len(data) > max_bytes:
        raise VideoTooLargeException(
            f"S3Object {bucket}/{name} is {len(data)} bytes; the limit is {max_bytes} bytes.")
    write_private(dest, data)  # a spooled video: owner-only
