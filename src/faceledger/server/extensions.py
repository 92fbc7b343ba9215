"""faceledger's response members beyond Rekognition's model, repeated as response headers.

AWS SDKs parse a response with their copy of the service model and drop every member it does not
name: boto3, the AWS CLI and the JavaScript SDK never show a search's `FalseMatchRate`,
`FacesSearched`, `ExpectedFalseMatches`, `FalseNonMatchRate`, or that its matches were held for
review (`ReviewRequired`, `ReviewCandidates`). Headers survive every SDK: boto3 shows them in
`response["ResponseMetadata"]["HTTPHeaders"]`, the JavaScript SDK to a middleware, the AWS CLI
in `--debug`. So each top-level member that the operation's output shape lacks becomes one
`X-Faceledger-<Member-Name>` header (FalseMatchRate -> X-Faceledger-False-Match-Rate):

    numbers     as Python writes them (shortest text that reads back the same float)
    booleans    true / false
    text        as it is, if it is short printable ASCII (anything else is left out)
    lists       the ids, comma-separated (ReviewCandidates: their CandidateId), at most
                MAX_LISTED, and X-Faceledger-<Member-Name>-Count with the full count

The body keeps every member whole; `faceledger.sdk` puts them back into boto3's parsed response.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .protocol import service_model

HEADER_PREFIX = "x-faceledger-"
# Ids listed in one header: 100 candidate ids are ~3.7 KB, well within what HTTP clients take
# for one header line (Python's http.client: 64 KB); the count header says if there were more.
MAX_LISTED = 100
MAX_TEXT = 256
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z][a-z0-9]*|[a-z0-9]+")
# members of list items that identify them (the first one present is listed)
_ID_MEMBERS = ("CandidateId", "FaceId", "UserId")


def header_name(member: str) -> str:
    """`X-Faceledger-` + the member's words joined by '-' (lower-case, as HTTP/2 sends them)."""
    return HEADER_PREFIX + "-".join(w.lower() for w in _WORD.findall(member))


def extension_members(operation: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level members of `result` that Rekognition's output shape for `operation` lacks."""
    shape = service_model().operation_model(operation).output_shape
    known = set(shape.members) if shape is not None else set()
    return {k: v for k, v in result.items() if k not in known}


def extension_headers(operation: str, result: Any) -> list[tuple[bytes, bytes]]:
    """The `X-Faceledger-*` headers of a response (see the module doc)."""
    if not isinstance(result, Mapping):
        return []
    out: list[tuple[bytes, bytes]] = []
    for member, value in extension_members(operation, result).items():
        name = header_name(member)
        if isinstance(value, (list, tuple)):
            ids = [i for i in map(_item_id, value) if i is not None]
            out.append((f"{name}-count".encode(), str(len(value)).encode()))
            if ids:
                out.append((name.encode(), ",".join(ids[:MAX_LISTED]).encode()))
            continue
        text = _scalar(value)
        if text is not None:
            out.append((name.encode(), text.encode()))
    return out


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str) and _safe(value):
        return value
    return None


def _item_id(item: Any) -> str | None:
    if isinstance(item, str):
        return item if _safe(item) and "," not in item else None
    if isinstance(item, Mapping):
        for key in _ID_MEMBERS:
            found = item.get(key)
            if isinstance(found, str):
                return _item_id(found)
    return None


def _safe(text: str) -> bool:
    """Short printable ASCII: nothing a caller sent can break or forge a header line."""
    return 0 < len(text) <= MAX_TEXT and text.isascii() and text.isprintable()
