"""boto3 helpers for a faceledger server: see faceledger's own answers, state why you ask.

    import boto3
    from faceledger.sdk import show_extensions, sign_each_call, state_context

    rek = boto3.client("rekognition", endpoint_url="http://127.0.0.1:8080", ...)
    show_extensions(rek)                                   # FalseMatchRate, FacesSearched, ...
    state_context(rek, purpose="door access", case="INC-17")
    sign_each_call(rek)                                    # the same call twice a second: both served
    r = rek.search_faces_by_image(CollectionId="staff", Image={"Bytes": photo})
    r["FacesSearched"], r["ExpectedFalseMatches"], r.get("ReviewRequired")

botocore parses a response with Rekognition's model and drops every member the model does not
name, so faceledger's own (a search's FalseMatchRate, FacesSearched, ExpectedFalseMatches,
FalseNonMatchRate, ReviewRequired and ReviewCandidates; CompareFaces' SimilarityThreshold and
the Similarity of unmatched faces; DetectFaces' AttributesNotReturned) never reach the caller.
`show_extensions` registers a handler for botocore's `after-call` event, which sees the raw
HTTP response next to the parsed one, and adds back each member the parser left out, at any
depth, as the JSON body has it. It changes nothing botocore parsed.

This module needs only botocore and the standard library: copy it into a project that does not
install faceledger. (The same figures arrive as X-Faceledger-* response headers, in
`r["ResponseMetadata"]["HTTPHeaders"]`, without any helper: docs/sdk.md.)
"""

from __future__ import annotations

import json
import uuid
from typing import Any

SERVICE = "rekognition"
CONTEXT_HEADERS = {"purpose": "X-Faceledger-Purpose", "case": "X-Faceledger-Case",
                   "consent": "X-Faceledger-Consent"}


def show_extensions(client: Any) -> Any:
    """Make `client` (a boto3 Rekognition client) return faceledger's extension members in
    its parsed responses. Returns the client."""
    client.meta.events.register(f"after-call.{SERVICE}", _restore,
                                unique_id="faceledger-show-extensions")
    return client


def state_context(client: Any, *, purpose: str | None = None, case: str | None = None,
                  consent: str | None = None) -> Any:
    """Send a purpose, case reference and consent reference with every request of `client`
    (the ledger records them; a collection's policy may require them). The headers are added
    before signing, so they are signed. Returns the client."""
    values = {CONTEXT_HEADERS[k]: v for k, v in
              (("purpose", purpose), ("case", case), ("consent", consent)) if v is not None}

    def add(request: Any, **_: Any) -> None:
        for name, value in values.items():
            request.headers[name] = value

    client.meta.events.register(f"before-sign.{SERVICE}", add,
                                unique_id="faceledger-state-context")
    return client


NONCE_HEADER = "X-Faceledger-Nonce"


def sign_each_call(client: Any) -> Any:
    """Give every request of `client` a signature of its own: a fresh random header, added
    before signing. A faceledger server serves each signature once (SECURITY.md, "Replayed
    requests"), and two byte-identical calls signed by one key within the same second share one;
    without this, boto3 retries the second a second later. Returns the client."""

    def add(request: Any, **_: Any) -> None:
        request.headers[NONCE_HEADER] = uuid.uuid4().hex

    client.meta.events.register(f"before-sign.{SERVICE}", add,
                                unique_id="faceledger-sign-each-call")
    return client


def _restore(http_response: Any = None, parsed: Any = None, **_: Any) -> None:
    """after-call handler: the members of the JSON body that `parsed` lacks, added to it."""
    if http_response is None or not isinstance(parsed, dict):
        return
    if getattr(http_response, "status_code", 500) >= 300:
        return  # an error: botocore raises it, with its own parse of the body
    try:
        raw = json.loads(http_response.content)
    except (TypeError, ValueError):
        return
    if isinstance(raw, dict):
        merge_missing(parsed, raw)


def merge_missing(parsed: dict[str, Any], raw: dict[str, Any]) -> None:
    """Add to `parsed` what `raw` has and it lacks: members absent at any depth; lists of the
    same length are merged item by item (the parser keeps their order)."""
    for key, value in raw.items():
        have = parsed.get(key)
        if key not in parsed:
            parsed[key] = value
        elif isinstance(have, dict) and isinstance(value, dict):
            merge_missing(have, value)
        elif isinstance(have, list) and isinstance(value, list) and len(have) == len(value):
            for mine, theirs in zip(have, value):
                if isinstance(mine, dict) and isinstance(theirs, dict):
                    merge_missing(mine, theirs)
