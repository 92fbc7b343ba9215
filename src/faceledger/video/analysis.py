"""One pass over a video: sampled frames -> faces (the image pipeline) -> persons (the tracker)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
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


def analyse(path: Path, pipeline: FacePipeline, rate: float, *,
            progress: Callable[[int, int], None] | None = None) -> Analysis:
    """Detect, embed and track faces at `rate` samples per second; `progress(samples, ms)` is
    called after each sample (jobs use it to notice shutdown). Faces that overlap alone links
    to a person without doubt are not embedded (FaceTracker.needs_template): embedding is
    most of the cost of a sample."""
    info = probe(path)
    tracker = FaceTracker()
    samples = 0
    for frame in sample_frames(path, rate):
        faces = pipeline.analyze(frame.pixels, embed=False)
        wanted = tracker.needs_template(frame.timestamp_ms, faces)
        if any(wanted):
            chosen = [f for f, w in zip(faces, wanted) if w]
            vectors = iter(pipeline.embed_boxes(frame.pixels, [f.box for f in chosen],
                                                [f.landmarks for f in chosen]))
            faces = [replace(f, embedding=next(vectors)) if w else f
                     for f, w in zip(faces, wanted)]
        tracker.update(frame.timestamp_ms, frame.number, faces)
        samples += 1
        if progress is not None:
            progress(samples, frame.timestamp_ms)
    return Analysis(info, tracker.persons, samples)
