"""Persons: faces linked across sampled frames by template distance, overlap breaking ties.

Why not a tracking library: the maintained Python trackers on PyPI either pin numpy < 2 and pull
matplotlib (norfair 2.3), need PyTorch (boxmot), or are unmaintained packagings of SORT /
ByteTrack code (motpy, bytetracker) whose motion models assume every frame is seen. Faceledger
samples a few frames per second and has a face template for every detection, which is the
stronger cue (it also re-links a person across a cut, where boxes jump); so the tracker is a
small assignment problem solved with SciPy's Hungarian solver:

    cost(track, face) = distance(face template, nearest of the track's templates) - 0.5 * IoU

A face joins a person only if its own template is within `link_distance` of one of the
person's templates: every sighting of a person is proven the same person by distance, so a
match found for the person is a match for each of its frames. Overlap (IoU with the person's
last box, seen within `max_gap_ms`, no shot cut in between) only decides between persons that
are all close enough. It never links by itself: a box in the same place after a cut (or a
stranger stepping into it) is someone else until the template says otherwise (issue 18: a cut
from Colin Powell to Tony Blair in the same place once gave Blair's frames Powell's matches,
because overlap alone linked them and those faces were not embedded). Unassigned faces start
new persons. Each person keeps only its `memory` best templates, so memory stays bounded
however long the person is on screen.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from ..vision.types import Box, FaceAnalysis

# Model 1.x (dlib): same-person templates are mostly below 0.5, different people mostly above
# 0.6; between the two lie look-alikes, which overlap once linked (0.6 with overlap, issue 18).
LINK_DISTANCE = 0.5
# Other models link at their calibration's raw distance for FMR 1e-3 (99.9): the table of model
# 2.0 is on raw scores and covers every adult group there (0.936); 1.x's table is on normalised
# scores, which the tracker does not compute, so 1.x keeps the measured constant.
LINK_FMR = 1e-3


def link_distance_for(model_version: str) -> float:
    """The template distance within which the tracker links a face to a person."""
    from ..calibration import find_calibration
    from ..model_versions import canonical

    version = canonical(model_version)
    if version.startswith("1."):
        return LINK_DISTANCE
    table = find_calibration(version)
    if table.normaliser is not None:
        return LINK_DISTANCE
    return float(table.distance_for_fmr(LINK_FMR))


def face_score(face: FaceAnalysis) -> float:
    """How good a view of the face this is, for choosing a person's best frames: larger,
    sharper, more frontal and more confidently detected faces first."""
    frontal = (max(0.0, 1.0 - abs(face.pose.yaw) / 90.0)
               * max(0.0, 1.0 - abs(face.pose.pitch) / 90.0))
    return float(np.sqrt(face.box.area) * frontal * (0.5 + face.quality.sharpness / 200.0)
                 * (face.confidence / 100.0))


@dataclass
class Sighting:
    """One face of a person in one sampled frame."""

    timestamp_ms: int
    frame: int
    face: FaceAnalysis


@dataclass
class Person:
    """A face followed through the video."""

    index: int
    sightings: list[Sighting] = field(default_factory=list)
    # (score, template) of the best views, at most `memory` of them
    best: list[tuple[float, NDArray[np.float32]]] = field(default_factory=list)

    @property
    def last(self) -> Sighting:
        return self.sightings[-1]

    def templates(self) -> list[NDArray[np.float32]]:
        """The templates of the best views, best first."""
        return [t for _, t in self.best]

    def remember(self, face: FaceAnalysis, memory: int) -> None:
        if face.embedding is None:
            return
        self.best.append((face_score(face), face.embedding))
        self.best.sort(key=lambda item: item[0], reverse=True)
        del self.best[memory:]


class FaceTracker:
    """Assigns each sampled frame's faces to persons (Person.Index from 0, in order of
    first appearance)."""

    def __init__(self, *, link_distance: float = LINK_DISTANCE, iou_gate: float = 0.2,
                 max_gap_ms: int = 1500, memory: int = 5) -> None:
        self.link_distance = link_distance
        self.iou_gate = iou_gate
        self.max_gap_ms = max_gap_ms
        self.memory = memory
        self.persons: list[Person] = []
        self.cuts: list[int] = []  # timestamps of the samples that follow a shot cut

    def update(self, timestamp_ms: int, frame: int, faces: list[FaceAnalysis], *,
               cut: bool = False) -> list[int]:
        """The person index of each face in this frame (new persons for unmatched faces).
        `cut`: a shot cut lies between the previous sample and this one, so boxes do not carry
        over (only templates link across it). A face without a template starts a person."""
        if cut:
            self.cuts.append(timestamp_ms)
        assigned: list[int | None] = [None] * len(faces)
        if faces and self.persons:
            cost = np.full((len(self.persons), len(faces)), np.inf)
            for i, person in enumerate(self.persons):
                if person.last.timestamp_ms == timestamp_ms:
                    continue  # already holds a face of this frame
                recent = not cut and timestamp_ms - person.last.timestamp_ms <= self.max_gap_ms
                templates = person.templates()
                for j, face in enumerate(faces):
                    dist = _nearest(face, templates)
                    if dist > self.link_distance:
                        continue  # not proven the same person, whatever the overlap
                    iou = person.last.face.box.iou(face.box) if recent else 0.0
                    cost[i, j] = dist - 0.5 * (iou if iou >= self.iou_gate else 0.0)
            finite = np.isfinite(cost)
            if finite.any():
                rows, cols = linear_sum_assignment(np.where(finite, cost, 1e6))
                for r, c in zip(rows, cols):
                    if finite[r, c]:
                        assigned[c] = int(r)
        out = []
        for j, face in enumerate(faces):
            k = assigned[j]
            if k is None:
                k = len(self.persons)
                self.persons.append(Person(k))
            person = self.persons[k]
            person.remember(face, self.memory)
            # sightings keep no template (only the best few are kept): memory stays small
            person.sightings.append(Sighting(timestamp_ms, frame, replace(face, embedding=None)))
            out.append(k)
        return out


def _nearest(face: FaceAnalysis, templates: list[NDArray[np.float32]]) -> float:
    if face.embedding is None or not templates:
        return float("inf")
    diffs = np.stack(templates).astype(np.float64) - face.embedding.astype(np.float64)
    return float(np.sqrt((diffs ** 2).sum(axis=1)).min())


def box_at(sightings: list[Sighting], t_ms: float) -> Box | None:
    """The person's box at time `t_ms`, interpolated between the sightings around it
    (None outside the span of the sightings)."""
    if not sightings or t_ms < sightings[0].timestamp_ms or t_ms > sightings[-1].timestamp_ms:
        return None
    times = [s.timestamp_ms for s in sightings]
    i = int(np.searchsorted(times, t_ms, side="right")) - 1
    a = sightings[i]
    if i + 1 >= len(sightings) or a.timestamp_ms == t_ms:
        return a.face.box
    b = sightings[i + 1]
    w = (t_ms - a.timestamp_ms) / max(b.timestamp_ms - a.timestamp_ms, 1)
    p, q = a.face.box, b.face.box
    return Box(p.left + w * (q.left - p.left), p.top + w * (q.top - p.top),
               p.right + w * (q.right - p.right), p.bottom + w * (q.bottom - p.bottom))
