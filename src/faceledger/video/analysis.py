"""One pass over a video: sampled frames -> faces (the image pipeline) -> persons (the tracker)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..vision import FacePipeline
from .decode import VideoInfo, probe, sample_frames
from .tracks import FaceTracker, Person


@dataclass
class Analysis:
    """What a pass found: the video's metadata, every person with their sightings."""

    info: VideoInfo
    persons: list[Person]
    samples: int


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks (videos may be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def analyse(path: Path, pipeline: FacePipeline, rate: float, *,
            progress: Callable[[int, int], None] | None = None) -> Analysis:
    """Detect, embed and track faces at `rate` samples per second; `progress(samples, ms)` is
    called after each sample (jobs use it as heartbeat and to notice shutdown)."""
    info = probe(path)
    tracker = FaceTracker()
    samples = 0
    for frame in sample_frames(path, rate):
        faces = pipeline.analyze(frame.pixels, embed=True)
        tracker.update(frame.timestamp_ms, frame.number, faces)
        samples += 1
        if progress is not None:
            progress(samples, frame.timestamp_ms)
    return Analysis(info, tracker.persons, samples)
