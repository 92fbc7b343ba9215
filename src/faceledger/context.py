"""Who is asking and why: the request context every service operation receives."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from .text import check_text

# The ledger's purpose and case columns hold 255 characters.
MAX_CONTEXT_CHARS = 255


@dataclass(frozen=True)
class RequestContext:
    """The caller of one operation: principal (key id), stated purpose and case, request id."""

    principal: str = "local"
    purpose: str | None = None
    case: str | None = None
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # Reference to the consent record an IndexFaces relies on (HTTP: X-Faceledger-Consent).
    consent: str | None = None
    # Admins may change collection policies; the key store says which keys are admins.
    admin: bool = False
    # Console roles of the signed-in key (reviewer, auditor, admin); None: not role-restricted
    # (the local operator, and API requests, which are governed by operation permissions).
    roles: frozenset[str] | None = None
    # Collections the caller may name (ids or globs; HTTP and console: the key's). Listing
    # operations show only these, and pagination tokens never lead past them.
    collections: tuple[str, ...] = ("*",)
    # SNS topics (ARNs or globs) the caller's video jobs may notify (HTTP: the key's, none by
    # default; NotificationChannel.RoleArn is not an authorisation faceledger can check).
    sns_topics: tuple[str, ...] = ("*",)
    # S3 objects the caller may read, as `bucket/key` globs (HTTP: the key's `--s3` grants, none
    # by default); Image.S3Object and Video.S3Object outside them are answered as missing.
    s3_objects: tuple[str, ...] = ("*",)
    # How this caller's adapter takes a purpose and a consent reference, named by a refusal
    # that asks for one: each adapter sets its own (an HTTP header, a CLI option, a form field);
    # the default is the Python API's.
    purpose_via: str = "FaceLedger.with_context(purpose=...)"
    consent_via: str = "FaceLedger.with_context(consent=...)"

    def has_role(self, *roles: str) -> bool:
        """Whether this caller holds one of `roles` (always, when not role-restricted)."""
        if self.roles is None or self.admin or "admin" in self.roles:
            return True
        return any(r in self.roles for r in roles)

    def may_notify(self, topic_arn: str) -> bool:
        """Whether the caller may have a job's completion published to `topic_arn`."""
        return any(fnmatchcase(topic_arn, p) for p in self.sns_topics)

    def may_read(self, bucket: str, name: str) -> bool:
        """Whether a grant covers object `name` of `bucket` (`*` in a glob spans '/')."""
        return any(fnmatchcase(f"{bucket}/{name}", p) for p in self.s3_objects)

    def may_name(self, collection_id: str) -> bool:
        """Whether the caller may name (and so see) `collection_id`."""
        return any(fnmatchcase(collection_id, p) for p in self.collections)


# The local operator (CLI, in-process Python API) owns the database, so it is an admin.
LOCAL = RequestContext(admin=True)


def stated(value: str | None, field: str) -> str | None:
    """A purpose, case reference or consent reference as a caller states it (HTTP header, CLI
    option, console form, Python API): None when not given, else `check_text`'s value (purposes
    are prose; references are identifiers, so no invisible joiners), or InvalidParameterException."""
    if value is None:
        return None
    return check_text(value, field, max_chars=MAX_CONTEXT_CHARS, prose=field == "Purpose")
