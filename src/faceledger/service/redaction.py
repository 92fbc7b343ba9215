"""Redaction: a copy of a video or image with every face blurred except those a reviewer kept.

Kept faces are named by FaceId or UserId in a collection; a face (image) or person (video) is
kept when its best template is within the distance of FMR 1e-4 of a kept template. Erring is
one-sided on purpose: a kept person the model misses is blurred (over-redaction), a stranger is
left visible only at the false-match rate of 1e-4. Each redaction is a ledger event with the
SHA-256 of input and output, the kept ids, and what was blurred.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ..calibration import CalibrationTable
from ..context import LOCAL, RequestContext
from ..errors import InvalidParameterException
from ..imaging import decode_image, file_sha256
from ..video.redaction import redact_pixels, redact_video
from ..vision.types import FaceAnalysis
from . import collection_members as m
from .collections import CollectionOperations
from .core import DEFAULT_COMPARE_FMR

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class RedactionOperations(CollectionOperations):
    """`redact`: video and images."""

    def redact(self, source: Path, output: Path, keep: Sequence[str] = (),
               collection_id: str | None = None, *, ctx: RequestContext = LOCAL
               ) -> dict[str, Any]:
        """Write `output`: `source` (video or image) with every face not kept blurred."""
        source, output = Path(source), Path(output)
        if not source.is_file():
            raise InvalidParameterException(f"{source} is not a file.")
        if source.resolve() == output.resolve():
            raise InvalidParameterException("The output must not overwrite the input.")
        if keep and collection_id is None:
            raise InvalidParameterException("--keep names faces or users of a --collection.")
        is_video = source.suffix.lower() in VIDEO_SUFFIXES
        if not is_video and source.suffix.lower() not in IMAGE_SUFFIXES:
            raise InvalidParameterException(
                f"{source.suffix or 'no suffix'}: redact takes a video "
                f"({', '.join(VIDEO_SUFFIXES)}) or an image ({', '.join(IMAGE_SUFFIXES)}).")
        wanted = output.suffix.lower()
        if (VIDEO_SUFFIXES if is_video else IMAGE_SUFFIXES).count(wanted) == 0:
            raise InvalidParameterException(
                f"The output of a {'video' if is_video else 'image'} must end in one of "
                f"{', '.join(VIDEO_SUFFIXES if is_video else IMAGE_SUFFIXES)}.")
        with self.audit("Redact", ctx, collection=collection_id) as op:
            templates = self._kept_templates(collection_id, keep)
            op.image(file_sha256(source))
            op.note(Keep=list(keep) or None, Source=source.name, Output=output.name)
            limit = self.calibration.distance_for_fmr(DEFAULT_COMPARE_FMR)
            # written aside and renamed: a failure never leaves a half-redacted file behind
            partial = output.with_name(f".{output.name}.partial{output.suffix}")
            try:
                if is_video:
                    summary = redact_video(
                        source, partial, self.pipeline, rate=self.settings.redact_sample_rate,
                        keep=lambda p: _kept(p.templates(), templates, self.calibration, limit),
                        max_pixels=self.settings.max_decoded_pixels)
                else:
                    summary = self._redact_image(source, partial, templates, limit)
                os.replace(partial, output)
            finally:
                partial.unlink(missing_ok=True)
            out_sha = file_sha256(output)
            op.record(output_sha256=out_sha, **summary)
            op.note_threshold("KeepSimilarityThreshold",
                              float(self.calibration.similarity(np.array([limit]))[0]))
        return {"Output": str(output), "InputSha256": op.images[0], "OutputSha256": out_sha,
                **summary}

    def _kept_templates(self, collection_id: str | None, keep: Sequence[str]
                        ) -> list[NDArray[np.float32]]:
        if not keep or collection_id is None:
            return []
        cid = m.collection_id(collection_id)
        out: list[NDArray[np.float32]] = []
        with self.catalog.read() as conn:
            coll = self._same_model(self.catalog.collection(conn, cid))
            for ident in keep:
                if m.FACE_ID.fullmatch(ident):
                    row = self.catalog.faces_by_id(conn, coll.pk, [ident],
                                                   with_embedding=True).get(ident)
                    if row is not None and row.embedding is not None:
                        out.append(row.embedding)
                        continue
                user = self.catalog.user(conn, coll.pk, ident)
                if user is None:
                    raise InvalidParameterException(
                        f"{ident} is neither a FaceId nor a UserId in collection {cid}.")
                out.extend(r.embedding for r in self.catalog.user_faces(conn, coll.pk, user.pk)
                           if r.embedding is not None)
        return out

    def _redact_image(self, source: Path, output: Path, templates: list[NDArray[np.float32]],
                      limit: float) -> dict[str, Any]:
        img = decode_image(source.read_bytes(), max_bytes=self.settings.max_s3_image_bytes,
                           max_pixels=self.settings.max_image_pixels,
                           max_jpeg_scans=self.settings.max_jpeg_scans)
        faces = self.pipeline.analyze(img.pixels, embed=True)

        def keep(face: FaceAnalysis) -> bool:
            return face.embedding is not None and _kept([face.embedding], templates, self.calibration, limit)

        pixels, blurred, kept = redact_pixels(img.pixels, faces, keep)
        buf = io.BytesIO()
        fmt = "PNG" if output.suffix.lower() == ".png" else "JPEG"
        Image.fromarray(pixels).save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
        output.write_bytes(buf.getvalue())  # EXIF (GPS, device) is not carried over
        return {"faces": len(faces), "faces_blurred": blurred, "faces_kept": kept}


def _kept(probes: list[NDArray[np.float32]], templates: list[NDArray[np.float32]],
          calibration: CalibrationTable, limit: float) -> bool:
    """Whether any of a face's templates matches a kept one at `limit` (the calibration's
    distance, normalised as it scores)."""
    if not probes or not templates:
        return False
    dist = calibration.distances(np.stack(probes), np.stack(templates))
    return bool(dist.min() <= limit)

