"""One pass over a video: sampled frames -> faces (the image pipeline) -> persons (the tracker)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..vision import FacePipeline
from .decode import FrameLimits, VideoInfo, probe, sample_frames
from .shots import is_cut, signature
from .tracks import FaceTracker, link_distance_for, Person


@dataclass
class Analysis:
    """What a pass found: the video's metadata, every person with their sightings, and the
    timestamps of the samples that follow a shot cut."""

    info: VideoInfo
    persons: list[Person]
    samples: int
    cuts: list[int]


def analyse(path: Path, pipeline: FacePipeline, rate: float, *,
            progress: Callable[[int, int], None] | None = None,
            max_pixels: int | None = None, max_frame_rate: float | None = None,
            max_seconds: float | None = None, max_jpeg_scans: int | None = None) -> Analysis:
    """Detect, embed and track faces at `rate` samples per second; `progress(samples, ms)` is
    called after each sample (jobs use it to notice shutdown). Every face is embedded: the
    tracker links a face to a person by its own template only (video/tracks.py), and boxes
    carry over only within a shot (video/shots.py). Frames above `max_pixels` are refused;
    frames past the probed duration are not read, and a video of more than `max_frame_rate`
    frames a second, or an analysis of more than `max_seconds`, ends with
    VideoTooLargeException (decode.FrameLimits)."""
    info = probe(path, max_pixels)
    limits = FrameLimits.for_video(info, max_frame_rate=max_frame_rate,
                                   max_seconds=max_seconds, max_jpeg_scans=max_jpeg_scans)
    tracker = FaceTracker(link_distance=link_distance_for(pipeline.model_version))
    samples = 0
    before = None
    for frame in sample_frames(path, rate, max_pixels=max_pixels, limits=limits):
        faces = pipeline.analyze(frame.pixels, embed=True)
        now = signature(frame.pixels)
        tracker.update(frame.timestamp_ms, frame.number, faces, cut=is_cut(before, now))
        before = now
        samples += 1
        if progress is not None:
            progress(samples, frame.timestamp_ms)
    return Analysis(info, tracker.persons, samples, tracker.cuts)
