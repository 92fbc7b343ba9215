"""Who is asking and why: the request context every service operation receives."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from fnmatch import fnmatchcase


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
    # Collections the caller may name (ids or globs; HTTP: the key's). Listing operations show
    # only these, and pagination tokens never lead past them.
    collections: tuple[str, ...] = ("*",)

    def may_name(self, collection_id: str) -> bool:
        """Whether the caller may name (and so see) `collection_id`."""
        return any(fnmatchcase(collection_id, p) for p in self.collections)


# The local operator (CLI, in-process Python API) owns the database, so it is an admin.
LOCAL = RequestContext(admin=True)
