"""Persons: faces linked across sampled frames by box overlap and template distance.

Why not a tracking library: the maintained Python trackers on PyPI either pin numpy < 2 and pull
matplotlib (norfair 2.3), need PyTorch (boxmot), or are unmaintained packagings of SORT /
ByteTrack code (motpy, bytetracker) whose motion models assume every frame is seen. Faceledger
samples a few frames per second and already has a face template for every detection, which is
the stronger cue (it also re-links a person across a cut, where boxes jump); so the tracker is a
small assignment problem solved with SciPy's Hungarian solver:

    cost(track, face) = distance(face template, nearest of the track's templates) - 0.5 * IoU

A face may join a track if its template is within `link_distance` of the track while the boxes
overlap (IoU >= `iou_gate`, last seen within `max_gap_ms`), or within the stricter
`reid_distance` without overlap (motion between samples, a cut, a person coming back later).
Unassigned faces start new persons. Each person keeps only its `memory` best templates, so
memory stays bounded however long the person is on screen.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from ..vision.types import Box, FaceAnalysis

# Model 1.0 (dlib): same-person templates are mostly below 0.5, different people mostly above 0.6.
LINK_DISTANCE = 0.6
REID_DISTANCE = 0.5
# A view must score this much above a person's worst kept view to be worth a template (scores
# jitter from sample to sample with sharpness and pose).
BETTER_VIEW = 1.1


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
    # samples since the last sighting that came with a template (linked by overlap alone)
    unverified: int = 0
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
            self.unverified += 1
            return
        self.unverified = 0
        self.best.append((face_score(face), face.embedding))
        self.best.sort(key=lambda item: item[0], reverse=True)
        del self.best[memory:]


class FaceTracker:
    """Assigns each sampled frame's faces to persons (Person.Index from 0, in order of
    first appearance)."""

    def __init__(self, *, link_distance: float = LINK_DISTANCE,
                 reid_distance: float = REID_DISTANCE, iou_gate: float = 0.2,
                 max_gap_ms: int = 1500, memory: int = 5, sure_iou: float = 0.5,
                 verify_every: int = 4) -> None:
        self.link_distance = link_distance
        self.reid_distance = reid_distance
        self.iou_gate = iou_gate
        self.max_gap_ms = max_gap_ms
        self.memory = memory
        self.sure_iou = sure_iou
        self.verify_every = verify_every
        self.persons: list[Person] = []

    def needs_template(self, timestamp_ms: int, faces: list[FaceAnalysis]) -> list[bool]:
        """Which faces of this frame need a template before `update`.

        Embedding is most of a sample's cost, so a face skips it only when overlap alone links
        it without doubt: exactly one recent person overlaps it (IoU >= `sure_iou`), no other
        face of the frame overlaps that person, the person already has `memory` templates, this
        view is not clearly better than their worst kept one (`BETTER_VIEW`), and fewer than
        `verify_every` samples passed since the person's last template (a periodic check: a
        stranger stepping into the same place is split off within that many samples).
        """
        out = []
        recent = [p for p in self.persons
                  if timestamp_ms - p.last.timestamp_ms <= self.max_gap_ms]
        for j, face in enumerate(faces):
            near = [p for p in recent if p.last.face.box.iou(face.box) >= self.iou_gate]
            if len(near) != 1:
                out.append(True)
                continue
            person = near[0]
            crowded = any(person.last.face.box.iou(other.box) >= self.iou_gate
                          for k, other in enumerate(faces) if k != j)
            out.append(
                crowded
                or person.last.face.box.iou(face.box) < self.sure_iou
                or len(person.best) < self.memory
                or face_score(face) > BETTER_VIEW * person.best[-1][0]
                or person.unverified + 1 >= self.verify_every
            )
        return out

    def update(self, timestamp_ms: int, frame: int, faces: list[FaceAnalysis]) -> list[int]:
        """The person index of each face in this frame (new persons for unmatched faces)."""
        assigned: list[int | None] = [None] * len(faces)
        if faces and self.persons:
            cost = np.full((len(self.persons), len(faces)), np.inf)
            for i, person in enumerate(self.persons):
                if person.last.timestamp_ms == timestamp_ms:
                    continue  # already holds a face of this frame
                recent = timestamp_ms - person.last.timestamp_ms <= self.max_gap_ms
                templates = person.templates()
                for j, face in enumerate(faces):
                    iou = person.last.face.box.iou(face.box) if recent else 0.0
                    if face.embedding is None:
                        # linked by overlap alone (see needs_template): a neutral distance
                        if iou >= self.sure_iou:
                            cost[i, j] = self.link_distance / 2 - 0.5 * iou
                        continue
                    dist = _nearest(face, templates)
                    if (iou >= self.iou_gate and dist <= self.link_distance) or \
                            dist <= self.reid_distance:
                        cost[i, j] = dist - 0.5 * iou
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
