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

A file's timing is the caller's: `FrameLimits` bound a pass whatever it claims. After a sample
the next sample time is computed, not stepped towards (issue 24: timestamps that jumped to
9e15 ms made the old loop add 0.5 s some 1.8e13 times); frames later than the probed duration
end the pass (so a patched Duration cannot hide a longer video from `max_video_seconds`);
and packets read, wall time, and the scans of each MJPEG frame (a progressive JPEG is decoded
once per scan: imaging.MAX_JPEG_SCANS) are capped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import (
    InvalidImageFormatException,
    InvalidParameterException,
    VideoTooLargeException,
)
from ..imaging import jpeg_layout
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


# Frames this much later than the probed duration still belong to the video (container
# durations are rounded, and an edit list may start a stream late).
END_SLACK_SECONDS = 1.0


@dataclass(frozen=True)
class FrameLimits:
    """What one pass may read of a video, whatever its file claims."""

    end_s: float = math.inf  # a frame later than this (seconds from the start) ends the pass
    max_packets: int | None = None  # video packets (frames) read, decoded or skipped
    deadline: float | None = None  # time.monotonic() by which the pass must have ended
    max_jpeg_scans: int | None = None  # an MJPEG frame of more scans is refused, not decoded

    @classmethod
    def for_video(cls, info: VideoInfo, *, max_frame_rate: float | None = None,
                  max_seconds: float | None = None,
                  max_jpeg_scans: int | None = None) -> FrameLimits:
        """The limits of a pass over the video `info` describes: up to its probed duration,
        at most `max_frame_rate` frames a second of it, for at most `max_seconds`."""
        end = info.duration_ms / 1000 + END_SLACK_SECONDS
        return cls(
            end_s=end,
            max_packets=None if max_frame_rate is None else math.ceil(end * max_frame_rate),
            deadline=None if max_seconds is None else time.monotonic() + max_seconds,
            max_jpeg_scans=max_jpeg_scans,
        )

    def check(self, packets: int, seconds: float) -> None:
        """VideoTooLargeException once `packets` read or the time are beyond the limits."""
        if self.max_packets is not None and packets > self.max_packets:
            raise VideoTooLargeException(
                f"The video holds more than {self.max_packets} frames in its "
                f"{self.end_s - END_SLACK_SECONDS:.1f} s (the limit is "
                f"{self.max_packets / self.end_s:.0f} frames a second, "
                "FACELEDGER_VIDEO_MAX_FRAME_RATE); it was not analysed further.")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise VideoTooLargeException(
                f"The analysis stopped {seconds:.1f} s into the video: the job ran longer than "
                "a job may (FACELEDGER_VIDEO_MAX_JOB_SECONDS).")


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
                  max_pixels: int | None = None,
                  limits: FrameLimits = FrameLimits()) -> Iterator[Frame]:
    """RGB frames at about `rate` per second (every frame if rate is 0 or above the frame
    rate), from `start_ms` on; timestamps are the frames' own presentation times. A frame of
    more than `max_pixels` (a stream whose size changes after its first frame) ends the pass
    with VideoTooLargeException before it is converted; so does reaching `limits`, and an
    MJPEG frame beyond their scans is refused with InvalidParameterException; a frame later
    than their end ends the pass. (PyAV pads rows to its alignment: a 500-pixel RGB row takes
    1536 bytes, so frames may not be contiguous; FacePipeline makes them so where they enter
    it.)"""
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
        first_t = next_t = start_ms / 1000.0
        ctx = stream.codec_context
        scans = limits.max_jpeg_scans if ctx.name == "mjpeg" else None
        count = packets = 0  # frames decoded (the clock of streams without timestamps), read
        try:
            for packet in container.demux(stream):
                packets += 1
                limits.check(packets, next_t)
                at = None if packet.pts is None else float(packet.pts * tb) - t0
                if at is not None and at > limits.end_s:
                    break  # past the probed duration: not part of the video
                if step and at is not None:
                    ahead = at + slack + 2.0 / fps < next_t
                    if intra_only and ahead:
                        continue  # a whole picture that no sample needs: not decoded
                    if not intra_only:
                        # frames no other frame refers to (B-frames) are skipped by FFmpeg
                        # while the next sample is more than two frames away
                        ctx.skip_frame = "NONREF" if ahead else "DEFAULT"
                if scans is not None and packet.size:
                    _check_scans(bytes(packet), scans, at)
                for frame in packet.decode():
                    t = (float(frame.pts * tb) - t0) if frame.pts is not None else count / fps
                    count += 1
                    if t + slack < next_t:
                        continue
                    if t > limits.end_s:
                        return
                    if max_pixels is not None and frame.width * frame.height > max_pixels:
                        raise VideoTooLargeException(
                            f"A frame at {t:.1f} s is {frame.width}x{frame.height} pixels; the "
                            f"limit is {max_pixels} pixels a frame.")
                    yield Frame(int(round(t * fps)), int(round(t * 1000)),
                                frame.to_ndarray(format="rgb24"))
                    next_t = _next_sample(first_t, step, t + slack) if step else t
        except av.FFmpegError as exc:
            raise InvalidParameterException(
                f"The video could not be decoded ({_reason(exc)}).") from None


def _next_sample(first: float, step: float, after: float) -> float:
    """The first sample time `first + n * step` later than `after`: computed, so a jump in the
    timestamps costs nothing."""
    n = max(math.floor((after - first) / step) + 1, 0)
    for k in (n, n + 1):  # float rounding at the boundary
        if first + k * step > after:
            return first + k * step
    # beyond 2**53 steps a step is below a float's resolution: the next float will do
    return math.nextafter(after + step, math.inf)


def _check_scans(data: bytes, max_scans: int, at: float | None) -> None:
    try:
        jpeg_layout(data, max_scans)
    except InvalidImageFormatException as exc:
        where = "A frame" if at is None else f"The frame at {at:.1f} s"
        raise InvalidParameterException(f"{where} of the video is refused: {exc.message}"
                                        ) from None
