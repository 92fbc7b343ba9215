"""The hash chain: appending events, reading them back, and chain heads (anchors).

Each stored event links to the one before it:

    digest = SHA-256(body text, UTF-8)
    hash   = SHA-256("faceledger-v1\\n{seq}\\n{prev}\\n{digest}")      (hex, lower case)

`seq` counts from 1 without gaps, `prev` is the previous event's hash (64 zeros for the first).
Because the sequence number and the previous hash are inside what is hashed, an event cannot be
edited, removed, inserted or moved without breaking a link that `verify` checks. Hashing the
body's digest rather than the body lets a per-case export show other events as
(seq, prev, digest, hash) without disclosing them, and still be checked link by link.

Appends are serialized: an appender first updates the single `ledger_head` row, which holds the
database's write lock on SQLite and the row's lock on PostgreSQL until its transaction ends, so
two writers can never link to the same head (the chain cannot fork).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from ..db import add_missing_columns
from ..errors import InvalidParameterException
from . import schema
from .events import ChainedEvent, Event, format_time, utc_now
from .segment import GENESIS, body_digest, link_hash

ANCHOR_PREFIX = "faceledger-anchor"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Anchor:
    """A chain head someone outside can hold: event `seq` has hash `hash`."""

    seq: int
    hash: str
    time: str | None = None

    def token(self) -> str:
        """`faceledger-anchor:<seq>:<hash>`, the one-line form to print, mail or publish."""
        return f"{ANCHOR_PREFIX}:{self.seq}:{self.hash}"

    def to_dict(self) -> dict[str, object]:
        return {"seq": self.seq, "hash": self.hash, "time": self.time, "token": self.token()}

    @classmethod
    def parse(cls, text: str) -> Anchor:
        """An anchor from its token, `<seq>:<hash>`, or the JSON `anchor` prints."""
        value = text.strip()
        if value.startswith("{"):
            try:
                raw = json.loads(value)
                return cls._checked(int(raw["seq"]), str(raw["hash"]), raw.get("time"))
            except (ValueError, KeyError, TypeError) as exc:
                raise InvalidParameterException(f"Not an anchor: {value[:80]!r}.") from exc
        parts = value.split(":")
        if parts and parts[0] == ANCHOR_PREFIX:
            parts = parts[1:]
        if len(parts) != 2 or not parts[0].isdigit():
            raise InvalidParameterException(
                f"Not an anchor: {value[:80]!r} (expected {ANCHOR_PREFIX}:<seq>:<hash>)."
            )
        return cls._checked(int(parts[0]), parts[1], None)

    @classmethod
    def _checked(cls, seq: int, digest: str, time: object) -> Anchor:
        if seq < 0 or not _HEX64.match(digest):
            raise InvalidParameterException(
                f"Not an anchor: seq must be >= 0 and hash 64 hex digits (got {seq}, {digest!r})."
            )
        return cls(seq, digest, str(time) if time else None)


class Ledger:
    """The chain of events in the service's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._ensure_tables()

    def _ensure_tables(self) -> None:
        try:
            schema.metadata.create_all(self.engine)
        except (OperationalError, ProgrammingError):
            # Another process created them between our check and our CREATE.
            schema.metadata.create_all(self.engine)
        add_missing_columns(self.engine, schema.metadata)  # probe_face on older databases
        with self.engine.begin() as conn:
            exists = conn.execute(select(schema.head.c.id).where(schema.head.c.id == 1)).first()
        if exists is None:
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(schema.head).values(id=1, seq=0, hash=GENESIS))
            except IntegrityError:
                pass  # another process started the chain first

    def append(self, conn: Connection, event: Event) -> ChainedEvent:
        """Chain `event` inside the caller's open transaction: it commits or rolls back with it.

        Call it last in the transaction: it takes the chain lock, which is held until commit.
        """
        h = schema.head
        # Lock first, read second: the UPDATE waits for any other appender to commit, so the
        # head read below is the latest one and nobody else can link to it meanwhile.
        conn.execute(update(h).where(h.c.id == 1).values(seq=h.c.seq + 1))
        seq, prev = conn.execute(select(h.c.seq, h.c.hash).where(h.c.id == 1)).one()
        body = event.to_json()
        link = link_hash(int(seq), str(prev), body_digest(body))
        conn.execute(
            insert(schema.events).values(
                seq=seq,
                prev=prev,
                hash=link,
                body=body,
                time=format_time(event.time),
                operation=event.operation,
                principal=event.principal,
                collection=event.collection,
                case_ref=event.case,
                purpose=event.purpose,
                outcome=event.outcome,
            )
        )
        conn.execute(update(h).where(h.c.id == 1).values(hash=link))
        return ChainedEvent(int(seq), str(prev), link, body)

    def record(self, event: Event) -> ChainedEvent:
        """Chain `event` in a transaction of its own (operations that change nothing)."""
        with self.engine.begin() as conn:
            return self.append(conn, event)

    def head(self, conn: Connection | None = None) -> Anchor:
        """The last event's seq and hash, as the head row records them."""
        if conn is None:
            with self.engine.connect() as own:
                return self.head(own)
        seq, digest = conn.execute(
            select(schema.head.c.seq, schema.head.c.hash).where(schema.head.c.id == 1)
        ).one()
        return Anchor(int(seq), str(digest))

    def last_event(self, conn: Connection) -> ChainedEvent | None:
        """The stored event with the highest seq."""
        e = schema.events
        row = conn.execute(
            select(e.c.seq, e.c.prev, e.c.hash, e.c.body).order_by(e.c.seq.desc()).limit(1)
        ).first()
        return None if row is None else ChainedEvent(int(row[0]), row[1], row[2], row[3])

    def get(self, seq: int) -> ChainedEvent | None:
        """The stored event at `seq`."""
        e = schema.events
        with self.engine.connect() as conn:
            row = conn.execute(
                select(e.c.seq, e.c.prev, e.c.hash, e.c.body).where(e.c.seq == seq)
            ).first()
        return None if row is None else ChainedEvent(int(row[0]), row[1], row[2], row[3])

    def scan(
        self, start: int = 1, end: int | None = None, *, chunk: int = 2000
    ) -> Iterator[ChainedEvent]:
        """Stored events with start <= seq (<= end), in seq order, read in chunks."""
        e = schema.events
        after = start - 1
        while True:
            q = select(e.c.seq, e.c.prev, e.c.hash, e.c.body).where(e.c.seq > after)
            if end is not None:
                q = q.where(e.c.seq <= end)
            with self.engine.connect() as conn:
                rows = conn.execute(q.order_by(e.c.seq).limit(chunk)).all()
            for row in rows:
                yield ChainedEvent(int(row[0]), row[1], row[2], row[3])
            if len(rows) < chunk:
                return
            after = int(rows[-1][0])

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(schema.events)).scalar_one())

    def anchor(self, principal: str) -> Anchor:
        """Record the current head as an anchor and return it (print it, hand it to an auditor)."""
        with self.engine.begin() as conn:
            current = self.head(conn)
            stamped = Anchor(current.seq, current.hash, format_time(utc_now()))
            conn.execute(
                insert(schema.anchors).values(
                    seq=stamped.seq, hash=stamped.hash, time=stamped.time, principal=principal
                )
            )
        return stamped

    def anchors(self) -> list[Anchor]:
        """Anchors recorded in this database, oldest first (an outside copy is the real proof)."""
        a = schema.anchors
        with self.engine.connect() as conn:
            rows = conn.execute(select(a.c.seq, a.c.hash, a.c.time).order_by(a.c.id)).all()
        return [Anchor(int(r[0]), r[1], r[2]) for r in rows]
