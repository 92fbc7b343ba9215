"""Per-collection policies: the rules a collection's owner set, enforced before an operation acts.

    MinSimilarityThreshold  searches may not ask for a lower FaceMatchThreshold (refused if they
                            do; without one they get max(service default, this floor))
    RequirePurpose          index, search and list operations need a stated purpose
    RequireConsent          IndexFaces needs a consent reference
    IdentificationMode      search results are candidates, held for human review until
                            ReviewersRequired independent reviewers confirm them
                            (EU AI Act Art. 14(5): at least two for remote biometric identification)
    VerifierSeesEarlierDecisions  the reviewer who would give the last of ReviewersRequired
                            confirmations sees the earlier conclusions (open verification,
                            ACE-V); otherwise every reviewer decides blind (the default)
    VerifyEveryConclusion   exclusions and inconclusives need ReviewersRequired reviewers
                            too (ACE-V: every conclusion is verified); reviewers who disagree
                            leave the candidate INCONCLUSIVE. Default: the first answer that is
                            not a confirmation settles the candidate
    RetentionDays           faces expire this many days after indexing (or their last renewal);
                            the retention sweep deletes them and logs it

Policies are stored as JSON in `ledger_policies`; only an admin may change them, and every
change is a ledger event carrying the old and the new policy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Connection, delete, insert, select, update

from ..errors import InvalidParameterException
from . import schema
from .events import format_time, utc_now

COLLECTION_ID = re.compile(r"^[a-zA-Z0-9_.\-]{1,255}$")
DEFAULT_REVIEWERS = 2


class CollectionPolicy(BaseModel):
    """A collection's rules; the default (no row stored) enforces nothing beyond the service."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)

    min_similarity_threshold: float | None = Field(
        default=None, ge=0.0, le=100.0, alias="MinSimilarityThreshold"
    )
    require_purpose: bool = Field(default=False, alias="RequirePurpose")
    require_consent: bool = Field(default=False, alias="RequireConsent")
    identification_mode: bool = Field(default=False, alias="IdentificationMode")
    reviewers_required: int = Field(default=DEFAULT_REVIEWERS, ge=1, le=10,
                                    alias="ReviewersRequired")
    verifier_sees_earlier: bool = Field(default=False, alias="VerifierSeesEarlierDecisions")
    verify_every_conclusion: bool = Field(default=False, alias="VerifyEveryConclusion")
    retention_days: int | None = Field(default=None, ge=1, le=36500, alias="RetentionDays")

    def to_wire(self) -> dict[str, Any]:
        """The policy as the API shows it (PascalCase, like Rekognition's shapes)."""
        return self.model_dump(by_alias=True)

    @classmethod
    def from_wire(cls, raw: Any) -> CollectionPolicy:
        """Validate a caller's policy document; bad ones are InvalidParameterException."""
        if not isinstance(raw, Mapping):
            raise InvalidParameterException("Policy must be an object.")
        data = dict(raw)
        # JSON has one number type: accept 3 for a float field, refuse 3.5 for an int field.
        threshold = data.get("MinSimilarityThreshold")
        if isinstance(threshold, int) and not isinstance(threshold, bool):
            data["MinSimilarityThreshold"] = float(threshold)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "Policy"
            raise InvalidParameterException(f"Policy.{where}: {first['msg']}.") from exc


def check_collection_id(collection_id: Any) -> str:
    """Rekognition's CollectionId pattern, else InvalidParameterException."""
    if not isinstance(collection_id, str) or not COLLECTION_ID.match(collection_id):
        raise InvalidParameterException(
            "CollectionId must be 1-255 characters of letters, digits, '_', '.' and '-'."
        )
    return collection_id


def load_policy(conn: Connection, collection: str | None) -> CollectionPolicy:
    """The collection's policy, or the default one."""
    if collection is None:
        return CollectionPolicy()
    p = schema.policies
    row = conn.execute(select(p.c.body).where(p.c.collection == collection)).first()
    return CollectionPolicy() if row is None else CollectionPolicy.model_validate_json(row[0])


def store_policy(conn: Connection, collection: str, policy: CollectionPolicy,
                 principal: str) -> None:
    """Write (or reset, for the default policy) the collection's policy row."""
    p = schema.policies
    if policy == CollectionPolicy():
        conn.execute(delete(p).where(p.c.collection == collection))
        return
    values = {"body": json.dumps(policy.to_wire(), sort_keys=True),
              "updated_at": format_time(utc_now()), "updated_by": principal}
    done = conn.execute(update(p).where(p.c.collection == collection).values(**values))
    if done.rowcount == 0:
        conn.execute(insert(p).values(collection=collection, **values))


def policies_with_retention(conn: Connection) -> dict[str, CollectionPolicy]:
    """Every collection whose policy sets RetentionDays."""
    rows = conn.execute(select(schema.policies.c.collection, schema.policies.c.body)).all()
    found = {r[0]: CollectionPolicy.model_validate_json(r[1]) for r in rows}
    return {c: pol for c, pol in found.items() if pol.retention_days is not None}
