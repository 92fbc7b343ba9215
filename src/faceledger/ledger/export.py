"""Per-case disclosure bundles: a case's events plus the stretch of chain that proves them.

The segment runs from the last anchor recorded before the case's first event (or from the
genesis of the chain) to the chain head at export time. Events of the case are disclosed in
full; every other event appears only as (seq, prev, digest, hash), so the verifier can recompute
each link without learning anything about other cases. `segment.py`, copied into the bundle as
`verify.py`, checks it with the anchors the verifier holds.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select

from ..shapes import Shape
from ..text import safe_json, visible
from . import schema
from .chain import Ledger
from .events import format_time, utc_now
from .segment import BUNDLE_FORMAT, GENESIS, body_digest


def count_case_events(conn: Connection, case: str) -> int:
    """How many events carry this case reference."""
    e = schema.events
    return int(conn.execute(
        select(func.count()).select_from(e).where(e.c.case_ref == case)
    ).scalar_one())


def build_bundle(ledger: Ledger, case: str, *, exported_by: str) -> Shape:
    """The bundle for `case` (as a JSON-ready dict)."""
    e = schema.events
    with ledger.engine.connect() as conn:
        first = conn.execute(select(func.min(e.c.seq)).where(e.c.case_ref == case)).scalar()
        head = ledger.head(conn)
    start_seq, start_hash = 0, GENESIS
    held = [a for a in ledger.anchors() if first is not None and a.seq < int(first)]
    if held:
        best = max(held, key=lambda a: a.seq)
        start_seq, start_hash = best.seq, best.hash
    segment: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for stored in ledger.scan(start_seq + 1, head.seq):
        entry: dict[str, Any] = {"seq": stored.seq, "prev": stored.prev,
                                 "digest": body_digest(stored.body), "hash": stored.hash}
        body = json.loads(stored.body)
        # The hashed body decides membership, not the query column (which could be edited).
        if isinstance(body, dict) and body.get("case") == case:
            entry["body"] = stored.body
            events.append({"seq": stored.seq, **body})
        segment.append(entry)
    anchors = [a.to_dict() for a in ledger.anchors() if start_seq <= a.seq <= head.seq]
    return {
        "format": BUNDLE_FORMAT,
        "case": case,
        "exported_at": format_time(utc_now()),
        "exported_by": exported_by,
        "start": {"seq": start_seq, "hash": start_hash,
                  "is": "genesis" if start_seq == 0 else "anchor"},
        "end": {"seq": head.seq, "hash": head.hash},
        "anchors": anchors,
        "events": events,
        "segment": segment,
    }


README = """Disclosure bundle for case {case}

{name}     the case's {n} ledger events (field "events") and the chain segment
                 #{s}..#{e} that proves them (field "segment"); other events in the
                 segment show only their hashes.
verify.py        checks every link of the segment with nothing but Python 3:

    python3 verify.py {name} --anchor faceledger-anchor:<seq>:<hash>

Give it the anchors (published chain heads) you hold: the segment must start at
#{s} with hash {sh}
and end at the chain head #{e} with hash {eh}.
An anchor you hold that falls inside the segment must match it.
"""


def write_bundle(bundle: Shape, folder: Path) -> list[Path]:
    """Write the bundle JSON, the standalone verifier and a README into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(bundle["case"]))
    name = f"case-{safe}.json"
    paths = [folder / name, folder / "verify.py", folder / "README.txt"]
    # control and bidirectional characters as JSON escapes: the same strings once parsed (the
    # hashed bodies verify), but a reader opening the file sees them, not their effect
    paths[0].write_text(safe_json(bundle, indent=1), encoding="utf-8")
    source = resources.files("faceledger.ledger").joinpath("segment.py").read_text("utf-8")
    paths[1].write_text(source, encoding="utf-8")
    paths[2].write_text(README.format(
        case=visible(str(bundle["case"])), name=name, n=len(bundle["events"]), s=bundle["start"]["seq"],
        e=bundle["end"]["seq"], sh=bundle["start"]["hash"], eh=bundle["end"]["hash"],
    ), encoding="utf-8")
    return paths
