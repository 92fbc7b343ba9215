"""The ledger's typed record: one `Event` per operation that touches biometric data.

An event holds who asked (principal), why (purpose, case, consent), what ran (operation,
collection, model version, thresholds, request parameters), what went in (SHA-256 of each input
image, never the image) and what came out (face ids, similarities, expected false matches), and
whether it was done or refused and why. Its body is serialized as canonical JSON, and that exact
text is what the hash chain commits to.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

Outcome = Literal["done", "refused"]
DONE: Outcome = "done"
REFUSED: Outcome = "refused"

# Operation names: Rekognition's where one exists, faceledger extensions otherwise.
INDEX_OPERATIONS = frozenset({"IndexFaces"})
SEARCH_OPERATIONS = frozenset(
    {"SearchFaces", "SearchFacesByImage", "SearchUsers", "SearchUsersByImage",
     # stored video: the job's results (faceledger's event name; StartFaceSearch is the request)
     "FaceSearchJob"}
)
DELETE_OPERATIONS = frozenset({"DeleteFaces", "DeleteCollection", "DeleteUser", "ExpireFaces"})
LIST_OPERATIONS = frozenset({"ListFaces", "ListUsers"})
# The review console's page reads: a refusal of one is a refused page view, not of an operation
# on faces (reports count them apart).
PAGE_VIEWS = frozenset({"ViewReviewQueue", "ViewCandidate", "ListLedgerEvents",
                        "GetLedgerEvent", "VerifyLedger", "TransparencyReport",
                        "ListCollections", "ViewCollection", "RevealCandidateScores"})

EVENT_VERSION = 1


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(t: datetime) -> str:
    """UTC, microseconds, `Z`: sorts as text, so reports can filter on the column."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """The inverse of `format_time`; also accepts dates and ISO times with offsets."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    t = datetime.fromisoformat(value)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def plain(value: Any) -> Any:
    """`value` as JSON-ready Python values (numpy scalars and arrays, tuples, sets)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [plain(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/Infinity; "no finite value" is what they meant
    if isinstance(value, datetime):
        return format_time(value)
    return value


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text, no NaN: the same value always gives the same text."""
    return json.dumps(
        plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


@dataclass(frozen=True)
class Event:
    """One audited operation, before it is chained."""

    operation: str
    principal: str
    outcome: Outcome = DONE
    time: datetime = field(default_factory=utc_now)
    collection: str | None = None
    model_version: str | None = None
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    purpose: str | None = None
    case: str | None = None
    consent: str | None = None
    images: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    result: Mapping[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    reason: str | None = None
    rule: str | None = None

    def to_body(self) -> dict[str, Any]:
        """The hashed content, as a plain dict."""
        body: dict[str, Any] = {
            "v": EVENT_VERSION,
            "time": format_time(self.time),
            "principal": self.principal,
            "operation": self.operation,
            "collection": self.collection,
            "model_version": self.model_version,
            "thresholds": plain(self.thresholds),
            "purpose": self.purpose,
            "case": self.case,
            "consent": self.consent,
            "images": list(self.images),
            "params": plain(self.params),
            "result": plain(self.result),
            "request_id": self.request_id,
            "outcome": self.outcome,
            "reason": self.reason,
            "rule": self.rule,
        }
        return body

    def to_json(self) -> str:
        return canonical_json(self.to_body())

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Event:
        """Rebuild an event from its stored body (unknown keys are ignored)."""
        outcome = body.get("outcome", DONE)
        return cls(
            operation=str(body["operation"]),
            principal=str(body["principal"]),
            outcome=REFUSED if outcome == REFUSED else DONE,
            time=parse_time(str(body["time"])),
            collection=body.get("collection"),
            model_version=body.get("model_version"),
            thresholds=dict(body.get("thresholds") or {}),
            purpose=body.get("purpose"),
            case=body.get("case"),
            consent=body.get("consent"),
            images=tuple(body.get("images") or ()),
            params=dict(body.get("params") or {}),
            result=dict(body.get("result") or {}),
            request_id=body.get("request_id"),
            reason=body.get("reason"),
            rule=body.get("rule"),
        )


@dataclass(frozen=True)
class ChainedEvent:
    """An event as stored: its place in the chain, the hash it links to, its own hash, its text."""

    seq: int
    prev: str
    hash: str
    body: str

    @property
    def event(self) -> Event:
        return Event.from_body(json.loads(self.body))
