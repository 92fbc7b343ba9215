"""Refusals: errors that a rule caused, carrying the rule's name so the ledger can log them.

Each is an ordinary faceledger error (its wire code is its base class's), plus `rule`.
"""

from __future__ import annotations

from ..errors import (
    AccessDeniedException,
    ConflictException,
    InvalidParameterException,
    PolicyRefusedException,
)


class Refusal:
    """Mixin: the named rule that refused the operation."""

    rule: str = "policy"


class PolicyRefusal(Refusal, PolicyRefusedException):
    """A collection policy refused the operation (AccessDeniedException on the wire)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class AdminRequired(Refusal, AccessDeniedException):
    """Only an admin principal may do this."""

    rule = "admin_required"


class ReviewConflict(Refusal, ConflictException):
    """A review decision that the review rules do not allow (duplicate, already decided)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class ReviewRefusal(Refusal, AccessDeniedException):
    """A reviewer who may not review this candidate (e.g. the one who ran the search)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class RoleRequired(Refusal, AccessDeniedException):
    """The caller's key lacks the console role this needs (reviewer, auditor or admin)."""

    rule = "role_required"


class MalformedRequest(Refusal, InvalidParameterException):
    """A request the rules could not read (a decision that is none of the three, a reason that
    is missing or carries control characters): logged like a refusal, so an auditor sees the
    attempt; InvalidParameterException on the wire."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class FormRefused(Refusal, AccessDeniedException):
    """A console form whose CSRF token is missing or wrong, from a signed-in session (logged:
    someone may be forging requests in that reviewer's name)."""

    rule = "csrf"
