"""Reading stored video with PyAV (FFmpeg in its wheels): metadata, and frames sampled at a rate.

Why PyAV rather than OpenCV's FFmpeg backend: it reports codec, container and colour range
(VideoMetadata), lets us skip work per packet, and can copy the audio stream when redacting;
bench/video.py measures both decoders on the same files.

Sampling: a frame is taken whenever its presentation time reaches the next multiple of
1/rate seconds. Decoding only what is sampled, as far as the codec allows: for intra-only
codecs (MJPEG, FFV1, ProRes ...) packets no sample needs are not decoded at all; inter-coded
streams (H.264, HEVC, VP9 ...) must decode every reference frame, but FFmpeg skips the
non-reference ones (B-frames) while the next sample is more than two frames away, and frames
that are decoded but not sampled are never converted to RGB. (Keyframe seeking only pays when
samples are further apart than keyframes, i.e. above a second or two: not at the default rate.)
Only one frame is held at a time, so memory does not grow with the video's length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import InvalidParameterException, VideoTooLargeException
from ..text import logger

log = logger("faceledger.video")

# Rekognition Video accepts MPEG-4 and MOV containers with H.264; faceledger decodes what
# FFmpeg decodes of these widely used codecs and refuses the rest with a clear message.
SUPPORTED_CODECS = frozenset({
    "h264", "hevc", "mpeg4", "vp8", "vp9", "av1", "mjpeg", "mpeg2video", "ffv1", "prores",
})


@dataclass(frozen=True)
class VideoInfo:
    """What Rekognition's VideoMetadata reports about a video."""

    codec: str
    format: str
    duration_ms: int
    frame_rate: float
    width: int
    height: int
    color_range: str  # FULL or LIMITED

    def shape(self) -> dict[str, Any]:
        """Rekognition's VideoMetadata."""
        return {
            "Codec": self.codec, "DurationMillis": self.duration_ms, "Format": self.format,
            "FrameRate": self.frame_rate, "FrameHeight": self.height, "FrameWidth": self.width,
            "ColorRange": self.color_range,
        }


@dataclass(frozen=True)
class Frame:
    """One sampled frame: its number among the video's frames, time, and RGB pixels."""

    number: int
    timestamp_ms: int
    pixels: NDArray[np.uint8]


# Containers FFmpeg opens that hold still pictures, not video: image sequences and piped images.
STILL_FORMATS = frozenset({"image2", "image2pipe"})
# File signatures of still images: refused before FFmpeg opens them (opening a JPEG decodes its
# first picture at full size to learn its parameters, whatever its pixel count).
_STILL_SIGNATURES = (
    (0, b"\xff\xd8\xff"), (0, b"\x89PNG\r\n\x1a\n"), (0, b"BM"),
    (0, b"II*\x00"), (0, b"MM\x00*"), (8, b"WEBP"), (4, b"jP  "), (0, b"\x00\x00\x00\x0cjP"),
)
NOT_A_VIDEO = "The file is a still image, not a video; send a video (H.264 in MP4 or MOV)."


def _reason(exc: BaseException) -> str:
    """What FFmpeg or the OS said, without the file name (a server path: never echoed)."""
    text = getattr(exc, "strerror", None)
    return str(text) if text else type(exc).__name__


def _open(path: Path) -> Any:
    import av

    with path.open("rb") as f:
        head = f.read(16)
    if any(head[at:at + len(sig)] == sig for at, sig in _STILL_SIGNATURES):
        raise InvalidParameterException(NOT_A_VIDEO)
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise InvalidParameterException(
            f"The video could not be read as a media file ({_reason(exc)}); send a video "
            "(H.264 in MP4 or MOV)."
        ) from None


def _video_stream(container: Any) -> Any:
    streams = list(container.streams.video)
    if not streams:
        raise InvalidParameterException("The file holds no video stream.")
    return streams[0]


def probe(path: Path, max_pixels: int | None = None) -> VideoInfo:
    """The video's metadata; InvalidParameterException if it is not a video faceledger decodes
    (or a still image), VideoTooLargeException if its frames have more than `max_pixels`."""
    with _open(path) as container:
        stream = _video_stream(container)
        ctx = stream.codec_context
        codec = str(ctx.name)
        names = set(str(container.format.name or "").split(","))
        if names & STILL_FORMATS or any(n.endswith("_pipe") for n in names):
            raise InvalidParameterException(NOT_A_VIDEO)
        if codec not in SUPPORTED_CODECS:
            raise InvalidParameterException(
                f"Video codec {codec} is not supported; use one of "
                f"{', '.join(sorted(SUPPORTED_CODECS))} (H.264 in MP4 or MOV is the usual)."
            )
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1_000_000
        else:
            seconds = (stream.frames / fps) if stream.frames and fps else 0.0
        width, height = int(ctx.width), int(ctx.height)
        if width <= 0 or height <= 0 or fps <= 0:
            raise InvalidParameterException("The video stream has no frame size or frame rate.")
        if stream.frames == 1:
            raise InvalidParameterException(NOT_A_VIDEO)
        if seconds <= 0:
            raise InvalidParameterException(
                "The file has no duration: a still image, or a stream without timing; send a "
                "video (H.264 in MP4 or MOV).")
        if max_pixels is not None and width * height > max_pixels:
            raise VideoTooLargeException(
                f"The video's frames are {width}x{height} pixels; the limit is {max_pixels} "
                "pixels a frame (the image limit, FACELEDGER_MAX_DECODED_PIXELS).")
        # FFmpeg: AVCOL_RANGE_JPEG (2) is full range; MJPEG's yuvj formats are full range too
        full = _color_range(ctx) == 2 or str(ctx.pix_fmt or "").startswith("yuvj")
        color = "FULL" if full else "LIMITED"
        # FFmpeg's long name is what Rekognition reports ("QuickTime / MOV")
        fmt = str(container.format.long_name or container.format.name)
        return VideoInfo(codec=codec, format=fmt, duration_ms=int(round(seconds * 1000)),
                         frame_rate=round(fps, 3), width=width, height=height,
                         color_range=color)


def _color_range(ctx: Any) -> int:
    value = getattr(ctx, "color_range", 0)
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 2 if "JPEG" in str(value).upper() else 1


def start_seconds(stream: Any) -> float:
    """The stream's first presentation time: timestamps are reported from the video's start."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def sample_frames(path: Path, rate: float, *, start_ms: int = 0,
                  max_pixels: int | None = None) -> Iterator[Frame]:
    """RGB frames at about `rate` per second (every frame if rate is 0 or above the frame
    rate), from `start_ms` on; timestamps are the frames' own presentation times. A frame of
    more than `max_pixels` (a stream whose size changes after its first frame) ends the pass
    with VideoTooLargeException before it is converted. (PyAV pads rows to its alignment: a
    500-pixel RGB row takes 1536 bytes, so frames may not be contiguous; FacePipeline makes
    them so where they enter it.)"""
    import av

    with _open(path) as container:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"  # frame and slice threads inside FFmpeg
        intra_only = bool(stream.codec_context.codec.properties & 0x1)  # AV_CODEC_PROP_INTRA_ONLY
        tb = stream.time_base or Fraction(1, 1000)
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        step = 0.0 if rate <= 0 or rate >= fps else 1.0 / rate
        # Half a frame of slack, so a sample falls on the frame nearest its time.
        slack = 0.5 / fps
        t0 = start_seconds(stream)
        next_t = start_ms / 1000.0
        ctx = stream.codec_context
        count = 0  # frames decoded: the clock of streams without timestamps
        try:
            for packet in container.demux(stream):
                if step and packet.pts is not None:
                    ahead = float(packet.pts * tb) - t0 + slack + 2.0 / fps < next_t
                    if intra_only and ahead:
                        continue  # a whole picture that no sample needs: not decoded
                    if not intra_only:
                        # frames no other frame refers to (B-frames) are skipped by FFmpeg
                        # while the next sample is more than two frames away
                        ctx.skip_frame = "NONREF" if ahead else "DEFAULT"
                for frame in packet.decode():
                    t = (float(frame.pts * tb) - t0) if frame.pts is not None else count / fps
                    count += 1
                    if t + slack < next_t:
                        continue
                    if max_pixels is not None and frame.width * frame.height > max_pixels:
                        raise VideoTooLargeException(
                            f"A frame at {t:.1f} s is {frame.width}x{frame.height} pixels; the "
                            f"limit is {max_pixels} pixels a frame.")
                    yield Frame(int(round(t * fps)), int(round(t * 1000)),
                                frame.to_ndarray(format="rgb24"))
                    if step:
                        while next_t <= t + slack:
                            next_t += step
                    else:
                        next_t = t
        except av.FFmpegError as exc:
            raise InvalidParameterException(
                f"The video could not be decoded ({_reason(exc)}).") from None
