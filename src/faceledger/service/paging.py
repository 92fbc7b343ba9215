"""NextToken: the one encoder and the one decoder of pagination tokens.

A token names where the next page starts and nothing else:

    base64url( "<kind>:<collection pk>:<row pk>:<sort-key prefix>" )      (no padding)

    kind        c (ListCollections), f (ListFaces), u (ListUsers)
    collection  the catalog key of the collection paged (0 for ListCollections)
    row pk      the catalog key of the last row returned (> 0)
    prefix      ListCollections only: the first PREFIX_CHARS characters of the last collection
                id (ids sort the pages; the pk finds the exact id again)

Results that never change once written (a video job's Faces and Persons) are paged by offset:

    base64url( "o:<offset>:<scope>" )            (no padding)

    offset      how many results earlier pages returned (> 0, at most MAX_PK)
    scope       what was paged, e.g. "GetFaceSearch/INDEX/<job id>" (a token of one job, order
                or operation is refused by another)

Both shapes go through the same packing and the same checks: a number outside 0..MAX_PK (2^63,
10^30, a sign, a leading zero) is InvalidPaginationTokenException, never a database error.

Why not signed: a token carries no authority. Every position it can name is one the caller
could reach by paging from the start, and every page is filtered by what the caller may see
(the key's collections) after the token is read. So the decoder's job is validation - type,
range, that it belongs to this operation and collection - not secrecy; a forged token gets
InvalidPaginationTokenException, never a database error.

Why a prefix and a pk rather than the id: collection ids reach 255 characters, and a token
quoting one would pass Rekognition's 255-character limit for NextToken (a 255-character id gave
a 384-character token that the server then refused). With the prefix clipped the token is at
most MAX_TOKEN_CHARS whatever the ids. Resuming: the pk finds the last id exactly; if that
collection was deleted meanwhile - or the caller may not see it, which must look the same -
paging resumes after the prefix, which can repeat ids sharing the prefix but never skips one.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Literal

from ..errors import InvalidPaginationTokenException

Kind = Literal["c", "f", "u"]
KINDS: tuple[Kind, ...] = ("c", "f", "u")
PREFIX_CHARS = 120
MAX_PK = (1 << 63) - 1  # SQL BIGINT, SQLite INTEGER
# Rekognition's PaginationToken: at most 255 characters.
MAX_TOKEN_CHARS = 255
_PK = re.compile(r"0|[1-9][0-9]{0,18}")
_PREFIX = re.compile(r"[a-zA-Z0-9_.\-]{0,%d}" % PREFIX_CHARS)


@dataclass(frozen=True)
class Position:
    """Where a page starts: after the row with key `row_pk` (and, for collections, after the
    id the row had, of which `prefix` is the start)."""

    row_pk: int
    prefix: str = ""


def _pack(raw: str) -> str:
    token = base64.urlsafe_b64encode(raw.encode("ascii")).decode("ascii").rstrip("=")
    assert len(token) <= MAX_TOKEN_CHARS
    return token


def _unpack(token: object, bad: InvalidPaginationTokenException) -> str:
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise bad
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        raise bad from None


def _number(text: str, bad: InvalidPaginationTokenException) -> int:
    """A non-negative integer a SQL BIGINT holds, written the one way make_* writes it."""
    if not _PK.fullmatch(text):
        raise bad
    value = int(text)
    if value > MAX_PK:
        raise bad
    return value


def make_token(kind: Kind, coll_pk: int, row_pk: int, sort_key: str = "") -> str:
    """The NextToken of a page whose last row is `row_pk` (`sort_key`: its collection id)."""
    if not (0 <= coll_pk <= MAX_PK and 0 < row_pk <= MAX_PK):
        raise ValueError(f"page position out of range: {coll_pk}, {row_pk}")
    return _pack(f"{kind}:{coll_pk}:{row_pk}:{sort_key[:PREFIX_CHARS]}")


def read_token(token: object, kind: Kind, coll_pk: int) -> Position:
    """The position a NextToken stands for, or InvalidPaginationTokenException."""
    bad = InvalidPaginationTokenException(
        "NextToken is not a token this operation returned for this collection.")
    parts = _unpack(token, bad).split(":", 3)
    if len(parts) != 4:
        raise bad
    got_kind, got_coll, got_row, prefix = parts
    if got_kind != kind:
        raise bad
    coll, row = _number(got_coll, bad), _number(got_row, bad)
    if coll != coll_pk or row == 0:
        raise bad
    if (prefix and kind != "c") or not _PREFIX.fullmatch(prefix):
        raise bad
    return Position(row, prefix)


_SCOPE = re.compile(r"[a-zA-Z0-9_.\-/]{1,160}")


def make_offset_token(scope: str, offset: int) -> str:
    """The NextToken of a page of immutable results that starts after `offset` of them."""
    if not (0 < offset <= MAX_PK) or not _SCOPE.fullmatch(scope):
        raise ValueError(f"page position out of range: {scope!r}, {offset}")
    return _pack(f"o:{offset}:{scope}")


def read_offset_token(token: object, scope: str) -> int:
    """The offset a NextToken of `scope` stands for, or InvalidPaginationTokenException."""
    bad = InvalidPaginationTokenException("NextToken is not a token this job returned.")
    parts = _unpack(token, bad).split(":", 2)
    if len(parts) != 3 or parts[0] != "o" or parts[2] != scope:
        raise bad
    offset = _number(parts[1], bad)
    if offset == 0:
        raise bad
    return offset
