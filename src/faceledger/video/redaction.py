"""Redaction for disclosure: every face not kept is blurred, in every frame, audio carried over.

How no frame leaks a face although only some frames are analysed:
  * faces are found at `redact_sample_rate` samples per second and linked into persons;
  * between two sightings of a person the box is interpolated; when the two boxes do not
    overlap (a cut, a jump) both are covered too;
  * before a person's first and after their last sighting the box is held for one sampling
    interval (plus a frame), so frames between samples are covered;
  * every box is padded (`PAD` of its size on each side) for hair, ears and the detector's
    loose fit.

Blur, not pixelation: pixelated faces keep their coarse layout, which recognition networks and
people can still match; a Gaussian blur with a sigma of two fifths of the face's size leaves no
structure at that scale. bench/video.py measures it on the generated video: a template taken
from a blurred face at its true box is as close to that person's enrolled template as to
another person's (a sigma of a fifth still left a small bias). tests/test_redaction.py checks
that SearchFacesByImage at Similarity 99 does not find a blurred face and that no frame of the
output shows a detectable face of anyone not kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from ..errors import InvalidParameterException
from ..vision import FacePipeline
from ..vision.types import Box, FaceAnalysis
from .analysis import analyse
from .decode import FrameLimits, start_seconds
from .tracks import Person, box_at
from ..text import logger

log = logger("faceledger.video")

PAD = 0.25


def blur_boxes(pixels: NDArray[np.uint8], boxes: list[Box], pad: float = PAD) -> int:
    """Blur each (padded) box of `pixels` in place; the number of boxes blurred."""
    h, w = pixels.shape[:2]
    n = 0
    for box in boxes:
        bw, bh = box.width, box.height
        if bw <= 0 or bh <= 0:
            continue
        left = int(max(0, np.floor(box.left - pad * bw)))
        top = int(max(0, np.floor(box.top - pad * bh)))
        right = int(min(w, np.ceil(box.right + pad * bw)))
        bottom = int(min(h, np.ceil(box.bottom + pad * bh)))
        if right <= left or bottom <= top:
            continue
        region = pixels[top:bottom, left:right]
        sigma = max(bw, bh) / 2.5
        # Downscale, blur, upscale: the same result as a huge kernel at a fraction of its cost.
        small = cv2.resize(region, (max(1, (right - left) // 4), max(1, (bottom - top) // 4)),
                           interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigmaX=max(sigma / 4, 1.0))
        pixels[top:bottom, left:right] = cv2.resize(small, (right - left, bottom - top),
                                                    interpolation=cv2.INTER_LINEAR)
        n += 1
    return n


@dataclass
class RedactionPlan:
    """The persons to blur and how far to hold their boxes beyond their sightings."""

    persons: list[Person]
    hold_ms: float

    def boxes_at(self, t_ms: float) -> list[Box]:
        """Every box to blur at time `t_ms`."""
        out: list[Box] = []
        for person in self.persons:
            s = person.sightings
            first, last = s[0].timestamp_ms, s[-1].timestamp_ms
            if t_ms < first - self.hold_ms or t_ms > last + self.hold_ms:
                continue
            if t_ms <= first:
                out.append(s[0].face.box)
                continue
            if t_ms >= last:
                out.append(s[-1].face.box)
                continue
            box = box_at(s, t_ms)
            if box is not None:
                out.append(box)
            times = [x.timestamp_ms for x in s]
            i = int(np.searchsorted(times, t_ms, side="right")) - 1
            a, b = s[i].face.box, s[min(i + 1, len(s) - 1)].face.box
            if a.iou(b) < 0.3:  # a jump or a cut between the samples: cover both ends
                out.extend([a, b])
        return out


def find_persons(path: Path, pipeline: FacePipeline, rate: float,
                 max_pixels: int | None = None) -> tuple[list[Person], float, float]:
    """Every person in the video at `rate` samples/s, the video's frame rate, and the last
    time (ms) analysed: frames past the probed duration are not (frames of more than
    `max_pixels` refused)."""
    found = analyse(path, pipeline, rate, max_pixels=max_pixels)
    return found.persons, found.info.frame_rate, FrameLimits.for_video(found.info).end_s * 1000


def redact_video(src: Path, dst: Path, pipeline: FacePipeline, *, rate: float,
                 keep: Callable[[Person], bool], max_pixels: int | None = None
                 ) -> dict[str, Any]:
    """Write `dst`: `src` with every person not kept blurred, audio copied; a summary."""
    import av

    persons, fps, end_ms = find_persons(src, pipeline, rate, max_pixels)
    blurred = [p for p in persons if not keep(p)]
    interval = 1000.0 / rate if rate > 0 else 1000.0 / max(fps, 1.0)
    plan = RedactionPlan(blurred, hold_ms=interval + 1000.0 / max(fps, 1.0))
    frames = boxes = 0
    aout: Any = None
    try:
        inp: Any = av.open(str(src))
        out: Any = av.open(str(dst), "w")
        with inp, out:
            vin = inp.streams.video[0]
            vin.thread_type = "AUTO"
            rate_q = vin.average_rate or vin.guessed_rate or 25
            vout = out.add_stream("libx264", rate=rate_q)
            # H.264 in yuv420p needs even sizes: an odd last row or column is dropped
            width, height = vin.codec_context.width & ~1, vin.codec_context.height & ~1
            vout.width, vout.height = width, height
            vout.pix_fmt = "yuv420p"
            vout.options = {"crf": "20", "preset": "veryfast"}
            ain = inp.streams.audio[0] if inp.streams.audio else None
            aout = out.add_stream_from_template(ain) if ain is not None else None
            streams = [vin] + ([ain] if ain is not None else [])
            tb = vin.time_base
            t0 = start_seconds(vin)
            for packet in inp.demux(*streams):
                if packet.stream is ain and aout is not None:
                    if packet.dts is None:
                        continue
                    packet.stream = aout
                    out.mux(packet)  # audio is copied as it is, never re-encoded
                    continue
                for frame in packet.decode():
                    t = (float(frame.pts * tb) - t0) * 1000 if frame.pts is not None \
                        else frames * 1000.0 / max(fps, 1.0)
                    if t > end_ms:
                        continue  # not analysed (past the duration): never written unblurred
                    pixels = np.ascontiguousarray(
                        frame.to_ndarray(format="rgb24")[:height, :width])
                    boxes += blur_boxes(pixels, plan.boxes_at(t))
                    new = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                    new.pts = None
                    frames += 1
                    for p in vout.encode(new):
                        out.mux(p)
            for p in vout.encode():
                out.mux(p)
    except av.FFmpegError as exc:
        raise InvalidParameterException(f"The video could not be redacted: {exc}") from None
    return {"persons": len(persons), "persons_blurred": len(blurred),
            "persons_kept": len(persons) - len(blurred), "frames": frames,
            "boxes_blurred": boxes, "audio_copied": aout is not None}


def redact_pixels(pixels: NDArray[np.uint8], faces: list[FaceAnalysis],
                  keep: Callable[[FaceAnalysis], bool]) -> tuple[NDArray[np.uint8], int, int]:
    """An image with every face not kept blurred; (image, blurred, kept)."""
    out = np.ascontiguousarray(pixels.copy())
    gone = [f.box for f in faces if not keep(f)]
    blur_boxes(out, gone)
    return out, len(gone), len(faces) - len(gone)

