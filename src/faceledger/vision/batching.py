"""Faces of many images through an embedder in runs of `batch` faces (bulk work: bulk index,
re-enrolment, evaluation, Ray actors).

A network run costs a fixed overhead plus a cost per face, and a run of several faces lets the
runtime use wider matrix products: bench/runtimes.py and bench/pipeline.py measure CPU ms per
face at 1, 8 and 32 faces per run (docs/inference.md), and `Settings.embed_batch` keeps the
measured best. An embedder that cannot take faces of several images in one run (dlib's own
runtime, test-time augmentation, an operator model) embeds image by image: the same templates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from .types import BatchEmbedder, Embedder, FaceNetwork, FacesOfImage, Landmarks5


def in_runs(
    embed: Callable[[NDArray[np.uint8]], NDArray[np.float32]], faces: NDArray[np.uint8],
    batch: int, dim: int,
) -> NDArray[np.float32]:
    """`embed` of `faces` in runs of at most `batch`, stacked in order."""
    if len(faces) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    step = max(1, batch)
    return np.vstack([embed(faces[i:i + step]) for i in range(0, len(faces), step)])


def landmarks_of(items: Sequence[FacesOfImage], who: str) -> list[list[Landmarks5]]:
    """Each image's landmarks, one per box (ValueError naming `who` when they are missing)."""
    out = []
    for _, boxes, landmarks in items:
        if landmarks is None or len(landmarks) != len(boxes):
            raise ValueError(f"{who} aligns by five landmarks per face")
        out.append(landmarks)
    return out


def network_templates(
    net: FaceNetwork, items: Sequence[FacesOfImage], landmarks: list[list[Landmarks5]],
    batch: int,
) -> NDArray[np.float32]:
    """`net`'s templates of every face of every image, in order, in runs of `batch`."""
    crops = [net.aligned(pixels, lms) for (pixels, _, _), lms in zip(items, landmarks) if lms]
    if not crops:
        return np.zeros((0, net.dim), dtype=np.float32)
    return in_runs(net.embed_aligned, np.concatenate(crops), batch, net.dim)


def split_by_image(
    rows: NDArray[np.float32], items: Sequence[FacesOfImage]
) -> list[NDArray[np.float32]]:
    """Rows of every face back into one array per image."""
    if not items:
        return []
    ends = np.cumsum([len(boxes) for _, boxes, _ in items])
    return [np.asarray(part, dtype=np.float32) for part in np.split(rows, ends[:-1])]


def embed_many(
    embedder: Embedder, items: Sequence[FacesOfImage], batch: int
) -> list[NDArray[np.float32]]:
    """Templates of the faces of every image (one array per image), in runs of `batch` faces
    where the embedder can, image by image where it cannot."""
    if isinstance(embedder, BatchEmbedder):
        return embedder.embed_many(items, batch)
    return [embedder.embed(pixels, boxes, landmarks) if boxes
            else np.zeros((0, embedder.dim), dtype=np.float32)
            for pixels, boxes, landmarks in items]
