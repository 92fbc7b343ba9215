"""Who is asking and why: the request context every service operation receives."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestContext:
    """The caller of one operation: principal (key id), stated purpose and case, request id."""

    principal: str = "local"
    purpose: str | None = None
    case: str | None = None
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))


LOCAL = RequestContext()
