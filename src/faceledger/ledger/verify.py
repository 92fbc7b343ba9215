"""`verify`: walk the whole chain in the database and name the first event that is not as written.

What each kind of tampering looks like to the walk:

    edited      the row's hash no longer matches its seq, prev and body          -> that event
    edited and  the row is self-consistent, but the next event links to a hash   -> that event
    re-hashed   that no longer exists anywhere in the ledger
    deleted     a gap in seq, or an event whose hash says it was written one     -> the missing seq
                place later (the rows after it were renumbered)
    inserted    an event whose hash says it was written one place earlier: the   -> the inserted one
                event before it is an intruder; or a row outside the chain head
    reordered   an event whose hash says it was written at another seq           -> that position
    column      a query column (time, principal, ...) differs from the hashed body -> that event

Truncating the tail (deleting the last events and the head row with them) leaves a chain that is
consistent in itself: only an anchor held outside the database shows it, hence `--anchor`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from . import schema
from .chain import Anchor, Ledger
from .segment import GENESIS, body_digest, link_hash

# Query columns and the body field each one copies.
_COLUMNS = (
    ("time", "time"),
    ("operation", "operation"),
    ("principal", "principal"),
    ("collection", "collection"),
    ("case_ref", "case"),
    ("purpose", "purpose"),
    ("outcome", "outcome"),
)


@dataclass(frozen=True)
class Problem:
    """One place where the ledger is not as written."""

    seq: int
    kind: str  # edited | deleted | inserted | reordered | truncated | rewritten
    message: str


@dataclass
class Verification:
    """The outcome of `verify`: how far the chain checks out and what is wrong first."""

    checked: int = 0
    head: Anchor | None = None
    last_seq: int = 0
    problems: list[Problem] = field(default_factory=list)
    anchors_matched: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> Problem | None:
        return min(self.problems, key=lambda p: p.seq) if self.problems else None

    def to_dict(self) -> dict[str, Any]:
        first = self.first_bad
        return {
            "ok": self.ok,
            "checked": self.checked,
            "last_seq": self.last_seq,
            "head": None if self.head is None else self.head.to_dict(),
            "first_bad": None if first is None else {
                "seq": first.seq, "kind": first.kind, "message": first.message
            },
            "problems": [p.__dict__ for p in self.problems],
            "anchors_matched": self.anchors_matched,
        }


def _seq_of_hash(conn: Connection, digest: str) -> int | None:
    if digest == GENESIS:
        return 0
    row = conn.execute(
        select(schema.events.c.seq).where(schema.events.c.hash == digest).limit(1)
    ).first()
    return None if row is None else int(row[0])


def _column_problem(row: Any, body: dict[str, Any]) -> str | None:
    for column, key in _COLUMNS:
        stored, hashed = getattr(row, column), body.get(key)
        if stored != hashed:
            return f"column {column} reads {stored!r} but the hashed event says {hashed!r}"
    return None


def _moved_to(conn: Connection, row: Any, digest: str) -> int | None:
    """The seq this intact row was written at, if its hash says it belongs elsewhere."""
    seq = int(row.seq)
    linked = _seq_of_hash(conn, row.prev)
    for written in ([] if linked is None else [linked + 1]) + [seq - 1, seq + 1]:
        if written >= 1 and link_hash(written, row.prev, digest) == row.hash:
            return written
    return None


def _check_row(conn: Connection, row: Any, expected_seq: int, expected_prev: str,
               prev_seq: int, offset: int) -> tuple[Problem | None, int]:
    """The problem with one row, given the row before it, and the offset of the rows from here.

    `offset` is (seq the row was written at) - (seq it sits at now): it becomes non-zero once
    rows were renumbered, so that one insertion or deletion is reported once, not per row.
    """
    seq = int(row.seq)
    if seq < expected_seq:
        return Problem(seq, "inserted", f"event #{seq} lies before the start of the chain (#1)"), 0
    if seq > expected_seq:
        span = f"#{expected_seq}" if seq == expected_seq + 1 else f"#{expected_seq}-#{seq - 1}"
        return Problem(expected_seq, "deleted", f"event {span} is missing (deleted)"), offset
    digest = body_digest(row.body)
    if link_hash(seq + offset, row.prev, digest) != row.hash:
        written = _moved_to(conn, row, digest)
        if written is None:
            return Problem(seq, "edited", f"event #{seq} does not match its hash (edited)"), offset
        new_offset = written - seq
        if new_offset == offset - 1:
            return Problem(seq - 1, "inserted",
                           f"event #{seq} was written as #{written}: the event now at "
                           f"#{seq - 1} was inserted before it"), new_offset
        if new_offset == offset + 1:
            return Problem(seq, "deleted",
                           f"the event now at #{seq} was written as #{written}: an event was "
                           "deleted here and the later ones renumbered (or two were swapped)"
                           ), new_offset
        return Problem(seq, "reordered",
                       f"event #{seq} was written as #{written} (events reordered)"), new_offset
    if row.prev != expected_prev:
        linked = _seq_of_hash(conn, row.prev)
        if linked is None:
            return Problem(prev_seq, "rewritten",
                           f"event #{prev_seq} was rewritten and its hash recomputed: event "
                           f"#{seq} links to a hash that is no longer in the ledger"), offset
        return Problem(seq, "inserted",
                       f"event #{seq} links to event #{linked}, not to #{seq - 1} "
                       "(inserted or copied)"), offset
    try:
        body = json.loads(row.body)
    except ValueError:
        return Problem(seq, "edited", f"event #{seq} is not valid JSON"), offset
    column = _column_problem(row, body) if isinstance(body, dict) else "body is not an object"
    if column is not None:
        return Problem(seq, "edited", f"event #{seq}: {column}"), offset
    return None, offset


def verify(ledger: Ledger, anchors: Iterable[Anchor] = (), *, use_stored_anchors: bool = True,
           chunk: int = 2000) -> Verification:
    """Check every event, the head row and each anchor; collect every problem found."""
    e = schema.events
    result = Verification()
    expected_seq, expected_prev, prev_seq, offset = 1, GENESIS, 0, 0
    hashes: dict[int, str] = {}
    wanted = list(anchors) + (ledger.anchors() if use_stored_anchors else [])
    wanted_seqs = {a.seq for a in wanted}
    after: int | None = None
    with ledger.engine.connect() as conn:
        while True:
            q = select(e).order_by(e.c.seq).limit(chunk)
            if after is not None:
                q = q.where(e.c.seq > after)
            rows = conn.execute(q).all()
            for row in rows:
                problem, offset = _check_row(
                    conn, row, expected_seq, expected_prev, prev_seq, offset
                )
                if problem is not None:
                    result.problems.append(problem)
                result.checked += 1
                # Resynchronise on this row so that one problem is reported once.
                expected_seq, expected_prev, prev_seq = int(row.seq) + 1, row.hash, int(row.seq)
                if int(row.seq) in wanted_seqs:
                    hashes[int(row.seq)] = row.hash
            if len(rows) < chunk:
                break
            after = int(rows[-1].seq)
        result.last_seq = prev_seq
        result.head = ledger.head(conn)
    last = prev_seq
    head = result.head
    if head.seq > last:
        result.problems.append(Problem(last + 1, "truncated",
                                       f"the chain head records #{head.seq} but the last event is "
                                       f"#{last}: events #{last + 1}-#{head.seq} were deleted"))
    elif head.seq < last:
        result.problems.append(Problem(head.seq + 1, "inserted",
                                       f"events after #{head.seq} are not in the chain head "
                                       "(written outside the ledger)"))
    elif head.hash != expected_prev:
        result.problems.append(Problem(last, "rewritten",
                                       f"the chain head's hash differs from event #{last}'s"))
    for anchor in sorted(wanted, key=lambda a: a.seq):
        if anchor.seq == 0:
            ok = anchor.hash == GENESIS
        elif anchor.seq > last:
            result.problems.append(Problem(last + 1, "truncated",
                                           f"an anchor holds event #{anchor.seq} but the ledger "
                                           f"ends at #{last}: events #{last + 1}-#{anchor.seq} "
                                           "were deleted"))
            continue
        else:
            ok = hashes.get(anchor.seq) == anchor.hash
        if ok:
            result.anchors_matched.append(anchor.seq)
        else:
            earlier = [s for s in result.anchors_matched if s < anchor.seq]
            since = max(earlier, default=0) + 1
            result.problems.append(Problem(anchor.seq, "rewritten",
                                           f"event #{anchor.seq} differs from the anchor: the "
                                           f"chain was rewritten somewhere in #{since}-"
                                           f"#{anchor.seq}"))
    result.anchors_matched = sorted(set(result.anchors_matched))
    return result
