"""Replay protection: a signed request that changes state is served once per signature.

SigV4 lets a captured request be sent again, unchanged, until its signing time is more than
the allowed clock skew (5 minutes) away; AWS serves such replays, so a replayed IndexFaces adds
the same face twice. faceledger remembers the signature of every state-changing request it
served, in the database - so every server process and every server on that database shares
the memory - until the signing time leaves the window (after which the signature check refuses
the request anyway). The table is therefore bounded by the rate of such requests times the
window. Read-only operations (Detect*, Compare*, Search*, List*, Describe*, Get*) are not
remembered: repeating one changes nothing; nor are requests carrying a ClientRequestToken,
whose repeat is answered like the first (AWS's idempotency, which clients rely on).

An SDK retry is signed again, but SigV4's time has one-second resolution: a retry within the
same second is byte-identical. So a request that fails is forgotten again (`forget`): it
changed nothing, and its retry is served. Two identical successful requests signed by one key
within one second are indistinguishable from a replay and the second is refused.
"""

from __future__ import annotations

import time

from sqlalchemy import Column, Engine, Float, MetaData, String, Table, delete, insert
from sqlalchemy.exc import IntegrityError

from ..db import create_tables
from ..errors import ReplayedRequestException

READ_ONLY_PREFIXES = ("Detect", "Compare", "Search", "List", "Describe", "Get")
PURGE_EVERY = 64  # inserts between deletions of expired rows

metadata = MetaData()

seen_signatures = Table(
    "fl_seen_signatures",
    metadata,
    Column("signature", String(64), primary_key=True),
    Column("expires_at", Float, nullable=False, index=True),  # Unix time
)


def changes_state(operation: str) -> bool:
    """Whether a repeat of `operation` could change something (so it is served once)."""
    return not operation.startswith(READ_ONLY_PREFIXES)


class ReplayCache:
    """Signatures of served state-changing requests, until they expire."""

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
                "This signed request was already received: a request that changes state is "
                "served once per signature. Sign it again to repeat it.") from None

    def forget(self, signature: str) -> None:
        """Drop `signature`: its request failed and changed nothing (the service's writes are
        transactional), so the same bytes sent again - an SDK retry signed within the same
        second is byte-identical - must be served, not refused as a replay."""
        with self.engine.begin() as conn:
            conn.execute(delete(seen_signatures).where(seen_signatures.c.signature == signature))
