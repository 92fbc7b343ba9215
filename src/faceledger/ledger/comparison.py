"""What a reviewer compared, by name: the one list of facial features and findings that the
console's form, the CLI and the decision event share (field names live here and nowhere else).

The features follow the components of FISWG's "Facial Image Comparison Feature List for
Morphological Analysis" (v2.0, 2018), grouped as an examiner names them; each is recorded as
one of FINDINGS or left out (not compared). The structured record says which features the
conclusion rests on, next to the free-text reason; it does not replace the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InvalidParameterException

# (key in the decision event, label people read), in the order an examiner works down a face
FEATURES: tuple[tuple[str, str], ...] = (
    ("face_outline", "Face and head outline"),
    ("hair", "Hair and hairline"),
    ("forehead", "Forehead"),
    ("eyebrows", "Eyebrows"),
    ("eyes", "Eyes"),
    ("nose", "Nose"),
    ("cheeks", "Cheeks"),
    ("ears", "Ears"),
    ("mouth", "Mouth and lips"),
    ("chin_jaw", "Chin and jawline"),
    ("facial_hair", "Facial hair"),
    ("lines", "Facial lines and wrinkles"),
    ("marks", "Scars, moles and other marks"),
    ("skin", "Skin"),
    ("neck", "Neck"),
)
FEATURE_KEYS = tuple(k for k, _ in FEATURES)
SIMILAR, DIFFERENT, NOT_VISIBLE = "similar", "different", "not visible"
FINDINGS = (SIMILAR, DIFFERENT, NOT_VISIBLE)
# the decision event's params field, the console form's field prefix
EVENT_FIELD = "features"
FORM_PREFIX = "feature."


def check_features(value: Mapping[str, Any] | None) -> dict[str, str]:
    """The features compared as recorded ({key: finding}, in FEATURES order, the ones left
    out dropped), or InvalidParameterException for an unknown feature or finding."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidParameterException("Features must map feature names to findings.")
    unknown = sorted(str(k)[:40] for k in value if k not in FEATURE_KEYS)
    if unknown:
        raise InvalidParameterException(
            f"Unknown feature {unknown[0]!r}: features are {', '.join(FEATURE_KEYS)}.")
    out: dict[str, str] = {}
    for key in FEATURE_KEYS:
        finding = value.get(key)
        if finding in (None, ""):
            continue
        if finding not in FINDINGS:
            raise InvalidParameterException(
                f"Feature {key} must be one of {', '.join(FINDINGS)} (or left out).")
        out[key] = str(finding)
    return out


def from_form(form: Mapping[str, Any]) -> dict[str, str]:
    """The features of a posted console form (`feature.<key>` fields), unchecked."""
    return {name[len(FORM_PREFIX):]: str(v) for name, v in form.items()
            if name.startswith(FORM_PREFIX) and v}
