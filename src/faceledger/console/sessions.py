"""Console sessions: sign-in with an API key's id and secret, then a server-side session.

The secret is checked once, at sign-in, by deriving today's SigV4 signing key from it and
comparing with the one the key store derives from the sealed secret (constant time): the console
never stores or re-reads the secret. The browser then holds only a random session id in an
HttpOnly, SameSite=Strict cookie; the database holds its SHA-256, the key it belongs to, its CSRF
token and its expiry. Every request looks the key up again, so revoking a key ends its sessions
at once (and a session also ends at sign-out or expiry).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, DateTime, Engine, MetaData, String, Table, delete, insert, select

from ..db import create_tables
from ..server.keys import KeyInfo, KeyStore

metadata = MetaData()

sessions = Table(
    "fl_console_sessions",
    metadata,
    Column("id_sha256", String(64), primary_key=True),  # never the session id itself
    Column("access_key_id", String(32), nullable=False, index=True),
    Column("csrf", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)



@dataclass(frozen=True)
class Session:
    """A live session: whose key, its CSRF token, when it ends."""

    key: KeyInfo
    csrf: str
    expires_at: datetime


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class SessionStore:
    """Sign-in, lookup and sign-out of console sessions, in the service's database."""

    def __init__(self, engine: Engine, keys: KeyStore, lifetime: timedelta) -> None:
        self.engine = engine
        self.keys = keys
        self.lifetime = lifetime
        create_tables(engine, metadata)  # servers starting together may race to create them

    def check_secret(self, access_key_id: str, secret: str, now: datetime) -> KeyInfo | None:
        """The key's record if `secret` is its secret and the key is active, else None."""
        return self.keys.verify_secret(access_key_id, secret, now)

    def open(self, key: KeyInfo, now: datetime) -> tuple[str, Session]:
        """A new session for `key`: its id (for the cookie only) and record."""
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        expires = now + self.lifetime
        with self.engine.begin() as conn:
            conn.execute(delete(sessions).where(sessions.c.expires_at < now))
            conn.execute(insert(sessions).values(
                id_sha256=_digest(session_id), access_key_id=key.access_key_id, csrf=csrf,
                created_at=now, expires_at=expires))
        return session_id, Session(key, csrf, expires)

    def get(self, session_id: str | None, now: datetime) -> Session | None:
        """The live session for this cookie value, or None (unknown, expired, key revoked)."""
        if not session_id or len(session_id) > 128:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(sessions).where(sessions.c.id_sha256 == _digest(session_id))
            ).mappings().first()
        if row is None or _utc(row["expires_at"]) <= now:
            return None
        key = self.keys.get(row["access_key_id"])
        if key is None or not key.active:
            self.close(session_id)
            return None
        return Session(key, str(row["csrf"]), _utc(row["expires_at"]))

    def close(self, session_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(sessions).where(sessions.c.id_sha256 == _digest(session_id)))
