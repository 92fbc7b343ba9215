"""Replay protection: a signed request is served once per signature, whatever it asks for.

SigV4 lets a captured request be sent again, unchanged, until its signing time is more than
the allowed clock skew (5 minutes) away; AWS serves such replays. Every faceledger operation
writes a ledger event (searches, comparisons and detections too: a replayed identification
search is a second search under the victim's key, purpose and case, with its own review
candidates), and a request that failed can succeed when sent again later (a DeleteUser answered
404 deletes the user created since). So the signature of every signed request is remembered
before it is served - whether it is then served, refused or fails - in the database, so that
every server process and every server on that database shares the memory, until the signing
time leaves the window (after which the signature check refuses the request anyway). The table
is bounded by the request rate times the window.

A repeat is never served. It is answered ThrottlingException ("already received"), a second
after it arrived: SDKs retry that code, and their retry is then signed in a later second, so it
is a new signature and is served. That is what makes botocore work: it signs neither
`amz-sdk-invocation-id` nor `amz-sdk-request: attempt=N` (they are added after signing), so a
retry it signs within the same second as the attempt before is byte-identical. (The JS SDK v3
signs both, so its retries never repeat a signature.) A retried request with a
ClientRequestToken gets the first answer from the service (idempotency), as in AWS.
"""

from __future__ import annotations

import time

from sqlalchemy import Column, Engine, Float, MetaData, String, Table, delete, insert
from sqlalchemy.exc import IntegrityError

from ..db import create_tables
from ..errors import ReplayedRequestException

PURGE_EVERY = 64  # inserts between deletions of expired rows

metadata = MetaData()

seen_signatures = Table(
    "fl_seen_signatures",
    metadata,
    Column("signature", String(64), primary_key=True),
    Column("expires_at", Float, nullable=False, index=True),  # Unix time
)


class ReplayCache:
    """Signatures of received signed requests, until they expire."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._inserts = 0
        create_tables(engine, metadata)

    def first_use(self, signature: str, expires_at: float) -> None:
        """Record `signature`; ReplayedRequestException if it was recorded before."""
        now = time.time()
        self._inserts += 1
        try:
            with self.engine.begin() as conn:
                if self._inserts % PURGE_EVERY == 1:
                    conn.execute(delete(seen_signatures).where(
                        seen_signatures.c.expires_at < now))
                conn.execute(insert(seen_signatures).values(signature=signature,
                                                            expires_at=expires_at))
        except IntegrityError:
            raise ReplayedRequestException(
                "This signed request was already received: a signed request is served once "
                "per signature. Sign it again to repeat it (an SDK's retry is signed anew: a "
                "later X-Amz-Date, or a signed amz-sdk-request: attempt=N header).") from None
