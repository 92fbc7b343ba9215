"""Request members and response shapes of the collection operations (botocore's rekognition
model: patterns, ranges, NextToken, Face, search annotations)."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..model_versions import canonical, is_valid
from ..errors import InvalidParameterException, ServiceQuotaExceededException
from ..shapes import Shape
from ..sources import ImageInput
from ..text import shown
from ..store import FaceRow
from ..store.thresholds import expected_false_matches
from ..vision.types import FaceAnalysis
from .core import check_enum, check_number
from .images import DETECT_ATTRIBUTES

COLLECTION_ID = re.compile(r"[a-zA-Z0-9_.\-]{1,255}")
USER_ID = re.compile(r"[a-zA-Z0-9_.\-:]{1,128}")
EXTERNAL_IMAGE_ID = re.compile(r"[a-zA-Z0-9_.\-:]{1,255}")
FACE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
REQUEST_TOKEN = re.compile(r"[a-zA-Z0-9\-_]{1,64}")


# --- request members ---------------------------------------------------------------------------


def match(value: Any, pattern: re.Pattern[str], field: str) -> str:
    if value is None:
        raise InvalidParameterException(f"{field} is required.")
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidParameterException(
            f"{field} must be a string matching {pattern.pattern}; got '{shown(value)}'.")
    return value


def model_version(value: Any) -> str:
    """A face model version ("1.0", "2.0", "100.<n>"; legacy names accepted and mapped)."""
    if not isinstance(value, str) or not is_valid(canonical(value)):
        raise InvalidParameterException(
            "FaceModelVersion must be a model version such as 1.0 or 2.0 (pattern [0-9.]+).")
    return canonical(value)


def image(value: ImageInput | None) -> ImageInput:
    if value is None:
        raise InvalidParameterException("Image is required.")
    return value


def collection_id(value: Any) -> str:
    return match(value, COLLECTION_ID, "CollectionId")


def face_id(value: Any, field: str) -> str:
    return match(value, FACE_ID, field)


def face_ids(value: Any, field: str, low: int, high: int) -> list[str]:
    if value is None:
        raise InvalidParameterException(f"{field} is required.")
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidParameterException(f"{field} must be a list of face ids.")
    if not (low <= len(value) <= high):
        raise InvalidParameterException(f"{field} must hold {low} to {high} face ids.")
    return [face_id(v, field) for v in value]


def integer(value: Any, low: int, high: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameterException(f"{field} must be an integer.")
    if not (low <= value <= high):
        raise InvalidParameterException(f"{field} must be between {low} and {high}.")
    return value


def page_size(value: Any, default: int, high: int, field: str, low: int = 0) -> int:
    if value is None:
        return default
    n = integer(value, low, high, field)
    return n or default


def threshold(value: Any, field: str) -> float | None:
    return None if value is None else check_number(value, 0.0, 100.0, field)


def request_token(value: Any) -> str | None:
    return None if value is None else match(value, REQUEST_TOKEN, "ClientRequestToken")


def attributes(value: Any, field: str) -> None:
    if value is None:
        return
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidParameterException(f"{field} must be a list of strings.")
    for a in value:
        check_enum(a, DETECT_ATTRIBUTES, field)


# AWS's limit of user tags on one resource; a request may name up to 200 (the model's map)
MAX_TAGS = 50


def tags(value: Any) -> dict[str, str] | None:
    """Tags as AWS takes them: keys of 1-128 and values of 0-256 letters, digits, spaces and
    _.:/=+-@, keys not starting with "aws:" (the model's pattern, in \\p{..} classes the
    request validator cannot compile); at most MAX_TAGS (ServiceQuotaExceededException)."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or len(value) > 200:
        raise InvalidParameterException("Tags must be a map of at most 200 keys.")
    for k, v in value.items():
        tag_key(k, "Tags")
        if not isinstance(v, str) or len(v) > 256 or not _tag_text(v):
            raise InvalidParameterException(
                f"The value of tag '{shown(k)}' must be up to 256 letters, digits, spaces or _.:/=+-@.")
    if len(value) > MAX_TAGS:
        raise ServiceQuotaExceededException(
            f"A collection has at most {MAX_TAGS} tags; {len(value)} were given.")
    return dict(value)


def tag_key(value: Any, field: str) -> str:
    """One tag key (see `tags`)."""
    if not isinstance(value, str) or not 1 <= len(value) <= 128 or not _tag_text(value):
        raise InvalidParameterException(
            f"{field}: a tag key is 1-128 letters, digits, spaces or _.:/=+-@.")
    if value.startswith("aws:"):
        raise InvalidParameterException(f"{field}: tag keys starting with 'aws:' are reserved.")
    return value


def _tag_text(text: str) -> bool:
    # \p{L}\p{Z}\p{N}_.:/=+\-@ of botocore's pattern
    return all(ch.isalnum() or unicodedata.category(ch).startswith("Z") or ch in "_.:/=+-@"
               for ch in text)


# --- response shapes ---------------------------------------------------------------------------


def new_id() -> str:
    return str(uuid.uuid4())


def template(face: FaceAnalysis) -> NDArray[np.float32]:
    assert face.embedding is not None  # analyze(embed=True)
    return np.asarray(face.embedding, dtype=np.float32)


def box(bb: Shape) -> tuple[float, float, float, float]:
    return (float(bb["Width"]), float(bb["Height"]), float(bb["Left"]), float(bb["Top"]))


def face_shape(row: FaceRow, model: str) -> Shape:
    """Rekognition's Face."""
    w, h, left, top = row.box
    out: dict[str, Any] = {
        "FaceId": row.face_id,
        "BoundingBox": {"Width": w, "Height": h, "Left": left, "Top": top},
        "ImageId": row.image_id,
        "Confidence": row.confidence,
        "IndexFacesModelVersion": model,
    }
    if row.external_image_id is not None:
        out["ExternalImageId"] = row.external_image_id
    if row.user_id is not None:
        out["UserId"] = row.user_id
    return out


def status(face_count: int) -> str:
    return "ACTIVE" if face_count > 0 else "CREATED"


def search_info(threshold_name: str, similarity: float, fmr: float, searched: int,
                 fnmr: float) -> Shape:
    """Extra response members (boto3 ignores them): what the threshold means for this search."""
    return {
        threshold_name: similarity,
        "FalseMatchRate": fmr,
        "FacesSearched": searched,
        "ExpectedFalseMatches": expected_false_matches(fmr, searched),
        # share of a person's other photos that this threshold misses, as measured (calibration)
        "FalseNonMatchRate": fnmr,
    }


# --- ledger summaries ------------------------------------------------------------------------


def unsuccessful(failed: Sequence[Shape]) -> list[Shape]:
    """What the ledger keeps of Unsuccessful* lists: each face id and its reasons."""
    return [{"FaceId": f["FaceId"], "Reasons": list(f["Reasons"])} for f in failed]


def membership(user_id: str, out: Shape) -> dict[str, Any]:
    """The ledger's summary of an AssociateFaces / DisassociateFaces response."""
    done = out.get("AssociatedFaces", out.get("DisassociatedFaces")) or []
    failed = out.get("UnsuccessfulFaceAssociations",
                     out.get("UnsuccessfulFaceDisassociations")) or []
    return {"user_ids": [user_id], "face_ids": [f["FaceId"] for f in done],
            "unsuccessful": unsuccessful(failed), "user_status": out.get("UserStatus")}
