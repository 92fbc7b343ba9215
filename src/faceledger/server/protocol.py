"""Rekognition's JSON 1.1 protocol, driven by botocore's service model.

Requests: `X-Amz-Target: RekognitionService.<Operation>` names the operation; the body is a JSON
object checked against the operation's input shape the way AWS JSON services do it:

    body not JSON, not an object, a member of the wrong JSON type    SerializationException
    required member missing, enum/length/range/pattern violated      ValidationException

Blob members (Image.Bytes) arrive base64-encoded and leave here as bytes, in place, so
`{"Image": {"Bytes": "<b64>"}}` becomes `image={"Bytes": b"..."}` for the service method.
Responses: the service's dict, with timestamps as epoch seconds and blobs base64, as JSON.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

import numpy as np

from ..text import shown
from ..errors import (
    InvalidParameterException,
    SerializationException,
    UnknownOperationException,
    ValidationException,
)

SERVICE = "rekognition"
TARGET_PREFIX = "RekognitionService."
CONTENT_TYPE = "application/x-amz-json-1.1"
ACCEPTED_CONTENT_TYPES = ("application/x-amz-json-1.1", "application/x-amz-json-1.0",
                          "application/json")
# The member AWS uses everywhere to name a collection; permissions are checked on its values.
COLLECTION_MEMBER = "CollectionId"
MAX_ERRORS_LISTED = 10
# The model's integer and long are Java's: values outside them are refused even where the model
# names no bound (IndexFaces' MaxFaces has only a minimum), never passed on to SQL or numpy.
INTEGER_RANGE = {"integer": (-(1 << 31), (1 << 31) - 1), "long": (-(1 << 63), (1 << 63) - 1)}
# The model's patterns run on Python's backtracking engine, and some take more than linear time:
# SNSTopicArn's `(^arn:aws:sns:.*:\w{12}:.+$)` is quadratic, and a 336 KB topic held the GIL for
# 12-22 s (issue 24) while every other request waited. So a string is measured first and matched
# only within its length bound. Where the model gives a pattern but no maximum, the bound is
# AWS's own: 2048 for an ARN (IAM's arnType, STS's RoleArn and Kinesis's StreamARN are 20-2048
# characters; an SNS topic name is at most 256) and the length of a UUID for ids. A shape not
# listed (a newer botocore) gets the ARN bound: AWS's longest documented identifier.
ARN_MAX_CHARS = 2048
PATTERN_CAPS = {"FaceId": 36, "ImageId": 36}


@cache
def service_model() -> Any:
    """botocore's rekognition service model (loaded once)."""
    import botocore.session

    return botocore.session.get_session().get_service_model(SERVICE)


def model_operations() -> tuple[str, ...]:
    """Every operation name in Rekognition's model."""
    return tuple(service_model().operation_names)


def snake_case(name: str) -> str:
    """botocore's own CamelCase -> snake_case (CompareFaces -> compare_faces)."""
    from botocore import xform_name

    result: str = xform_name(name)
    return result


def implemented_operations(service: object) -> tuple[str, ...]:
    """The model operations `service` (an instance or its class) has a method for."""
    cls = service if isinstance(service, type) else type(service)
    # Looked up on the class: never evaluates a (cached) property of the instance.
    return tuple(
        op for op in model_operations()
        if inspect.isfunction(inspect.getattr_static(cls, snake_case(op), None))
    )


def operation_from_target(target: str | None) -> str:
    """The operation name in an X-Amz-Target header (unchecked against any service)."""
    if not target:
        raise UnknownOperationException("Missing X-Amz-Target header naming the operation.")
    prefix, _, name = target.strip().partition(".")
    if f"{prefix}." != TARGET_PREFIX or not name:
        raise UnknownOperationException(
            f"X-Amz-Target must be {TARGET_PREFIX}<Operation>, got '{shown(target, 100)}'."
        )
    if name not in service_model().operation_names:
        raise UnknownOperationException(f"Operation {shown(name, 100)} is not a Rekognition operation.")
    return name


def check_content_type(value: str | None) -> None:
    media = (value or "").split(";")[0].strip().lower()
    if media not in ACCEPTED_CONTENT_TYPES:
        raise SerializationException(
            f"Content-Type must be {CONTENT_TYPE}, got '{shown(media, 100) or 'none'}'."
        )


@dataclass
class ParsedInput:
    """A request's members (model names, blobs decoded) and every CollectionId it names."""

    members: dict[str, Any]
    collection_ids: list[str] = field(default_factory=list)


def parse_input(operation: str, body: bytes) -> ParsedInput:
    """Decode and validate a request body against the operation's input shape."""
    op = service_model().operation_model(operation)
    if not body.strip():
        raw: Any = {}
    else:
        try:
            raw = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeError too
            raise SerializationException(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise SerializationException(
            f"Request body must be a JSON object, got {_json_type(raw)}."
        )
    shape = op.input_shape
    if shape is None:
        return ParsedInput({})
    v = _Validator()
    members = v.structure(shape, raw, "")
    if v.errors:
        listed = v.errors[:MAX_ERRORS_LISTED]
        n = len(v.errors)
        raise ValidationException(
            f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(listed)
        )
    return ParsedInput(members, v.collection_ids)


def call_arguments(
    operation: str, method: Callable[..., Any], members: Mapping[str, Any]
) -> dict[str, Any]:
    """Request members as the snake_case keyword arguments `method` takes.

    A member the method does not take is refused (never silently ignored), except botocore's
    auto-filled idempotency tokens.
    """
    params = inspect.signature(method).parameters
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    shape = service_model().operation_model(operation).input_shape
    kwargs: dict[str, Any] = {}
    for name, value in members.items():
        arg = snake_case(name)
        if arg in params or open_kwargs:
            kwargs[arg] = value
        elif not shape.members[name].metadata.get("idempotencyToken"):
            raise InvalidParameterException(
                f"{name} is not supported by this server's {operation}."
            )
    return kwargs


def render_output(result: Any) -> bytes:
    """A service result as the JSON response body."""
    return json.dumps(result, default=_json_default, allow_nan=False,
                      separators=(",", ":")).encode("utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
        return when.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


@cache
def _pattern(pattern: str) -> re.Pattern[str] | None:
    # The model's patterns are Java regexes; the few Python cannot compile (\p{L}) are skipped.
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _lower_camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _show(value: Any) -> str:
    return shown(value if isinstance(value, str) else json.dumps(value, default=str))


class _Validator:
    """Walks a JSON value along a botocore shape, collecting AWS-style validation errors."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.collection_ids: list[str] = []

    def fail(self, path: str, value: Any, constraint: str) -> None:
        shown = "null" if value is None else f"'{_show(value)}'"
        self.errors.append(
            f"Value {shown} at '{path}' failed to satisfy constraint: {constraint}"
        )

    def value(self, shape: Any, raw: Any, path: str) -> Any:
        kind = shape.type_name
        if kind == "structure":
            if not isinstance(raw, dict):
                raise _wrong_type(path, "an object", raw)
            return self.structure(shape, raw, path)
        if kind == "list":
            if not isinstance(raw, list):
                raise _wrong_type(path, "a list", raw)
            self.bounds(shape, len(raw), path, raw, "have length")
            return [self.value(shape.member, item, f"{path}.{i + 1}.member")
                    for i, item in enumerate(raw)]
        if kind == "map":
            if not isinstance(raw, dict):
                raise _wrong_type(path, "an object", raw)
            self.bounds(shape, len(raw), path, raw, "have length")
            # a map key is the caller's text: escaped before it becomes part of a message
            return {self.value(shape.key, k, f"{path}.key"): self.value(shape.value, v,
                                                                        f"{path}.{shown(k)}")
                    for k, v in raw.items()}
        if kind == "string":
            if not isinstance(raw, str):
                raise _wrong_type(path, "a string", raw)
            self.string(shape, raw, path)
            return raw
        if kind in ("integer", "long"):
            if isinstance(raw, bool) or not isinstance(raw, int):
                if isinstance(raw, float) and raw.is_integer():
                    raw = int(raw)
                else:
                    raise _wrong_type(path, "an integer", raw)
            low, high = INTEGER_RANGE[kind]
            if not low <= raw <= high:
                self.fail(path, raw, f"Member must have value less than or equal to {high}"
                          if raw > high else
                          f"Member must have value greater than or equal to {low}")
                return raw
            self.bounds(shape, raw, path, raw, "have value")
            return raw
        if kind in ("float", "double"):
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
                raise _wrong_type(path, "a number", raw)
            self.bounds(shape, raw, path, raw, "have value")
            return float(raw)
        if kind == "boolean":
            if not isinstance(raw, bool):
                raise _wrong_type(path, "true or false", raw)
            return raw
        if kind == "blob":
            if not isinstance(raw, str):
                raise _wrong_type(path, "a base64 string", raw)
            try:
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise SerializationException(f"{path}: value is not valid base64.") from None
            # Only the minimum: image size limits are the service's (settings-driven, and
            # answered with Rekognition's ImageTooLargeException).
            minimum = shape.metadata.get("min")
            if minimum is not None and len(data) < minimum:
                self.errors.append(
                    f"Value at '{path}' failed to satisfy constraint: "
                    f"Member must have length greater than or equal to {minimum}"
                )
            return data
        if kind == "timestamp":
            if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                return datetime.fromtimestamp(raw, UTC)
            if isinstance(raw, str):
                try:
                    return datetime.fromisoformat(raw)
                except ValueError:
                    pass
            raise _wrong_type(path, "a timestamp", raw)
        raise SerializationException(f"{path}: unsupported member type {kind}.")  # pragma: no cover

    def structure(self, shape: Any, raw: dict[str, Any], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        wire = {m.serialization.get("name", n): n for n, m in shape.members.items()}
        for key, value in raw.items():
            name = wire.get(key)
            if name is None or value is None:
                continue  # AWS JSON services ignore members they do not know, and nulls
            member = shape.members[name]
            sub = f"{path}.{_lower_camel(name)}" if path else _lower_camel(name)
            out[name] = self.value(member, value, sub)
            if name == COLLECTION_MEMBER and isinstance(out[name], str):
                self.collection_ids.append(out[name])
        for name in shape.required_members:
            if name not in out:
                sub = f"{path}.{_lower_camel(name)}" if path else _lower_camel(name)
                self.fail(sub, None, "Member must not be null")
        return out

    def string(self, shape: Any, raw: str, path: str) -> None:
        failed = string_constraint(shape, raw)
        if failed is not None:
            self.fail(path, raw, failed)

    def bounds(self, shape: Any, measure: float, path: str, raw: Any, what: str) -> None:
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if low is not None and measure < low:
            self.fail(path, raw, f"Member must {what} greater than or equal to {low}")
        elif high is not None and measure > high:
            self.fail(path, raw, f"Member must {what} less than or equal to {high}")


def length_cap(shape: Any) -> int | None:
    """The most characters a string member may have: the model's max, or for a patterned
    member without one, AWS's documented bound (PATTERN_CAPS, else an ARN's)."""
    high = shape.metadata.get("max")
    if high is not None:
        return int(high)
    if shape.metadata.get("pattern"):
        return PATTERN_CAPS.get(shape.name, ARN_MAX_CHARS)
    return None


def string_constraint(shape: Any, raw: str) -> str | None:
    """The constraint a string member's value fails (enum, length, pattern), or None. The
    pattern only ever runs on a value within the length bound."""
    if shape.enum:
        if raw not in shape.enum:
            return f"Member must satisfy enum value set: [{', '.join(shape.enum)}]"
        return None
    low, high = shape.metadata.get("min"), length_cap(shape)
    if low is not None and len(raw) < low:
        return f"Member must have length greater than or equal to {low}"
    if high is not None and len(raw) > high:
        return f"Member must have length less than or equal to {high}"
    pattern = shape.metadata.get("pattern")
    compiled = _pattern(pattern) if pattern else None
    if compiled is not None and raw and not compiled.fullmatch(raw):
        return f"Member must satisfy regular expression pattern: {pattern}"
    return None


def _wrong_type(path: str, expected: str, raw: Any) -> SerializationException:
    return SerializationException(f"{path}: expected {expected}, got {_json_type(raw)}.")
