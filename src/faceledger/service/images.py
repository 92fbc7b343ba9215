"""DetectFaces and CompareFaces."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..calibration import fmr_for_similarity, similarity_for_fmr
from ..context import LOCAL, RequestContext
from ..errors import InvalidParameterException
from ..shapes import Shape, bounding_box, compared_face, face_detail
from ..sources import ImageInput
from ..vision.quality import QUALITY_FILTERS, quality_reasons
from ..vision.types import FaceAnalysis
from .core import DEFAULT_COMPARE_FMR, ServiceCore, check_enum, check_number

DETECT_ATTRIBUTES = (
    "DEFAULT", "ALL", "AGE_RANGE", "BEARD", "EMOTIONS", "EYE_DIRECTION", "EYEGLASSES",
    "EYES_OPEN", "GENDER", "MOUTH_OPEN", "MUSTACHE", "FACE_OCCLUDED", "SMILE", "SUNGLASSES",
)  # fmt: skip
# Everything beyond DEFAULT (box, landmarks, pose, quality, confidence) is refused on purpose,
# and a response that was asked for any of it says so (docs/sdk.md, "Face attributes").
NOT_ESTIMATED = DETECT_ATTRIBUTES[2:]
NOT_ESTIMATED_REASON = (
    "Not estimated on purpose: age, gender and emotion read from a face are unreliable and err "
    "more for some groups (emotion recognition is banned at work and in schools in the EU); "
    "the others have no measured model here. See docs/sdk.md.")


def attributes_not_returned(asked: Sequence[str] | None) -> Shape:
    """Extension members naming the attributes a request asked for that are not returned, and
    why (nothing when it asked for none beyond DEFAULT)."""
    wanted = set(asked or ())
    missing = [a for a in NOT_ESTIMATED if "ALL" in wanted or a in wanted]
    if not missing:
        return {}
    return {"AttributesNotReturned": missing, "AttributesNotReturnedReason": NOT_ESTIMATED_REASON}


def passes(face: FaceAnalysis, quality_filter: str) -> bool:
    """Whether a face clears a QualityFilter level."""
    return not quality_reasons(quality_filter, face.confidence, face.box, face.pose, face.quality)


class ImageOperations(ServiceCore):
    """Operations on images alone: nothing is stored."""

    def detect_faces(
        self,
        image: ImageInput,
        attributes: Sequence[str] | None = None,
        *,
        ctx: RequestContext = LOCAL,
    ) -> Shape:
        """Rekognition DetectFaces: the 100 largest faces with box, landmarks, pose, quality.

        Attributes other than the default set (age, emotions, ...) are accepted and not
        returned: faceledger does not estimate them rather than invent them, and says so in
        AttributesNotReturned (an extension member and header).
        """
        if attributes is not None:
            if isinstance(attributes, str) or not isinstance(attributes, Sequence):
                raise InvalidParameterException("Attributes must be a list of strings.")
            for a in attributes:
                check_enum(a, DETECT_ATTRIBUTES, "Attributes")
        img = self.decode(image, ctx=ctx)
        faces = self.pipeline.analyze(img.pixels, embed=False)
        with self.audit("DetectFaces", ctx) as op:  # the ledger event (nothing else changes)
            op.image(img.sha256)
            op.record(faces=len(faces))
        return {"FaceDetails": [face_detail(f, img.width, img.height) for f in faces],
                **attributes_not_returned(attributes)}

    def compare_faces(
        self,
        source_image: ImageInput,
        target_image: ImageInput,
        similarity_threshold: float | None = None,
        quality_filter: str | None = None,
        *,
        ctx: RequestContext = LOCAL,
    ) -> Shape:
        """Rekognition CompareFaces: the largest source face against up to 100 target faces.

        Similarity is calibrated (100 x (1 - false-match rate at that distance)); without a
        SimilarityThreshold only matches at FMR <= 1e-4 are returned as FaceMatches.
        """
        if similarity_threshold is None:
            threshold = similarity_for_fmr(DEFAULT_COMPARE_FMR)
        else:
            threshold = check_number(similarity_threshold, 0.0, 100.0, "SimilarityThreshold")
        qf = "NONE" if quality_filter is None else check_enum(
            quality_filter, QUALITY_FILTERS, "QualityFilter"
        )
        cal = self.calibration
        src = self.decode(source_image, "SourceImage", ctx=ctx)
        tgt = self.decode(target_image, "TargetImage", ctx=ctx)
        model = cal.model_version  # the configured model's faces, templates and table
        source_faces = [f for f in self.pipeline.analyze(src.pixels, embed=False,
                                                         model_version=model) if passes(f, qf)]
        if not source_faces:
            raise InvalidParameterException(
                "No face was found in SourceImage"
                + ("" if qf == "NONE" else f" that meets QualityFilter {qf}")
                + "."
            )
        source = source_faces[0]
        source_vec = self.pipeline.embed_boxes(src.pixels, [source.box], [source.landmarks],
                                               model_version=model)[0]
        targets = [f for f in self.pipeline.analyze(tgt.pixels, embed=True, model_version=model)
                   if passes(f, qf)]
        matches: list[tuple[float, Shape]] = []
        unmatched: list[Shape] = []
        if targets:
            vectors = np.stack([f.embedding for f in targets if f.embedding is not None])
            distances = cal.distances(source_vec, vectors)[0]
            similarities = cal.similarity(distances)
            for face, sim in zip(targets, similarities):
                shape = compared_face(face, tgt.width, tgt.height)
                if sim >= threshold:
                    matches.append((float(sim), shape))
                else:
                    # not in Rekognition's ComparedFace: how far below the threshold it was
                    unmatched.append({**shape, "Similarity": float(sim)})
        matches.sort(key=lambda m: m[0], reverse=True)
        result: dict[str, Any] = {
            "SourceImageFace": {
                "BoundingBox": bounding_box(source.box, src.width, src.height),
                "Confidence": source.confidence,
            },
            "FaceMatches": [{"Similarity": s, "Face": f} for s, f in matches],
            "UnmatchedFaces": unmatched,
            # Not in Rekognition's model (boto3 ignores them); what the threshold means here.
            "FaceModelVersion": cal.model_version,
            "SimilarityThreshold": threshold,
            "FalseMatchRate": fmr_for_similarity(threshold),
        }
        with self.audit("CompareFaces", ctx) as op:  # the ledger event (nothing else changes)
            op.image(src.sha256)
            op.image(tgt.sha256)
            op.note_threshold("SimilarityThreshold", threshold)
            op.note(QualityFilter=qf)
            op.record(similarities=[s for s, _ in matches], unmatched=len(unmatched),
                      compared=len(targets),
                      expected_false_matches=len(targets) * fmr_for_similarity(threshold))
        return result
