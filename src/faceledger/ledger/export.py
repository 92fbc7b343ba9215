"""Per-case disclosure bundles: a case's events, what a defence needs to weigh them, and the
stretch of chain that proves all of it.

Disclosed in full (each body as hashed, and the same event parsed for reading):

    events      the case's events (every event whose hashed body names the case)
    enrolments  the IndexFaces event that added each face the case's events show (a candidate
                held, viewed or decided), so the enrolled photo's SHA-256 is checkable
    policies    the collection policy events in force during the case (the last one before
                its first event, and every later one): ReviewersRequired and the rest
    keys        the CreateAccessKey event of each key that acted in the case (its name, roles)

The segment runs from the last anchor recorded before the first disclosed event (or from the
genesis of the chain) to the chain head at export time. Every other event appears only as
(seq, prev, digest, hash), so the verifier can recompute each link without learning anything
about other cases. `segment.py`, copied into the bundle as `verify.py`, checks the links, each
disclosed body against its digest, and each readable event against its body.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select

from ..permissions import private_dir, write_private
from ..shapes import Shape
from ..text import safe_json, visible
from . import schema
from .chain import Ledger
from .events import SEARCH_OPERATIONS, format_time, utc_now
from .lookup import index_event, key_event, policy_events
from .policy import CollectionPolicy
from .segment import BUNDLE_FORMAT, GENESIS, READABLE, body_digest

# the events that show a candidate's face to someone (held, viewed, decided)
SHOWING_FACES = SEARCH_OPERATIONS | {"ReviewCandidate", "ViewCandidate"}


def count_case_events(conn: Connection, case: str) -> int:
    """How many events carry this case reference."""
    e = schema.events
    return int(conn.execute(
        select(func.count()).select_from(e).where(e.c.case_ref == case)
    ).scalar_one())


def _context(conn: Connection, case_bodies: dict[int, dict[str, Any]]
             ) -> tuple[dict[str, dict[int, str]], list[Shape]]:
    """The events a defence needs beside the case's own (by readable list: seq -> why) and
    the faces the case shows with the seq of their enrolment (None where none was found)."""
    wanted: dict[str, dict[int, str]] = {"enrolments": {}, "policies": {}, "keys": {}}
    faces: list[Shape] = []
    seen: set[tuple[str, str]] = set()
    first = min(case_bodies) if case_bodies else 0
    collections: set[str] = set()
    principals: set[str] = set()
    for body in case_bodies.values():
        coll = body.get("collection")
        if isinstance(coll, str):
            collections.add(coll)
        if isinstance(body.get("principal"), str):
            principals.add(body["principal"])
        if body.get("operation") not in SHOWING_FACES or not isinstance(coll, str):
            continue
        for face_id in (body.get("result") or {}).get("face_ids") or []:
            if not isinstance(face_id, str) or (coll, face_id) in seen:
                continue
            seen.add((coll, face_id))
            found = index_event(conn, coll, face_id)
            seq = None if found is None else int(found["seq"])
            faces.append({"collection": coll, "face_id": face_id, "enrolment_seq": seq})
            if seq is not None:
                wanted["enrolments"][seq] = f"enrolment of face {face_id}"
    for coll in sorted(collections):
        for seq in policy_events(conn, coll, first):
            wanted["policies"][seq] = f"policy of collection {coll}"
    for principal in sorted(principals):
        key_seq = key_event(conn, principal)
        if key_seq is not None:
            wanted["keys"][key_seq] = f"key {principal}"
    for listed in wanted.values():  # an event of the case is disclosed as such, once
        for seq in case_bodies:
            listed.pop(seq, None)
    return wanted, faces


def build_bundle(ledger: Ledger, case: str, *, exported_by: str) -> Shape:
    """The bundle for `case` (as a JSON-ready dict)."""
    e = schema.events
    with ledger.engine.connect() as conn:
        head = ledger.head(conn)
        # The hashed body decides membership, not the query column (which could be edited):
        # the column only narrows the search, and `verify` checks columns against bodies.
        case_bodies: dict[int, dict[str, Any]] = {}
        for seq, text in conn.execute(select(e.c.seq, e.c.body).where(
                e.c.case_ref == case, e.c.seq <= head.seq).order_by(e.c.seq)):
            body = json.loads(text)
            if isinstance(body, dict) and body.get("case") == case:
                case_bodies[int(seq)] = body
        context, faces = _context(conn, case_bodies)
    disclosed = {seq: "events" for seq in case_bodies}
    for name, seqs in context.items():
        for seq in seqs:
            disclosed.setdefault(seq, name)
    first = min(disclosed) if disclosed else None
    start_seq, start_hash = 0, GENESIS
    held = [a for a in ledger.anchors() if first is not None and a.seq < first]
    if held:
        best = max(held, key=lambda a: a.seq)
        start_seq, start_hash = best.seq, best.hash
    segment: list[dict[str, Any]] = []
    readable: dict[str, list[dict[str, Any]]] = {name: [] for name in READABLE}
    for stored in ledger.scan(start_seq + 1, head.seq):
        entry: dict[str, Any] = {"seq": stored.seq, "prev": stored.prev,
                                 "digest": body_digest(stored.body), "hash": stored.hash}
        where = disclosed.get(stored.seq)
        if where is not None:
            body = json.loads(stored.body)
            if where != "events" or (isinstance(body, dict) and body.get("case") == case):
                entry["body"] = stored.body
                readable[where].append({"seq": stored.seq, **body})
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
        **readable,
        "faces": faces,
        # what a collection without a policy event enforces (this version's defaults)
        "default_policy": CollectionPolicy().to_wire(),
        "segment": segment,
    }


README = """Disclosure bundle for case {case}

WHAT IS VERIFIED. `python3 verify.py {name}` (or `faceledger ledger verify-bundle`)
checks, with nothing but Python 3:
  - every link of the chain segment #{s}..#{e} ("segment": seq, prev, digest, hash);
  - every disclosed body ("segment"[].body) against its digest;
  - every readable event against the hashed body of the same seq: "events" (this
    case's {n} events), "enrolments" ({ne}: the IndexFaces event that added each face
    shown), "policies" ({np}: the collection policy events in force during the case) and
    "keys" ({nk}: the CreateAccessKey event of each key that acted: its name and roles).
    Any difference, in any field, fails; so does a disclosed body that no list shows,
    an event in "events" of another case, and a list holding the wrong kind of event;
  - "faces": each face's enrolment_seq names an enrolment event that added that face;
  - with --anchor, that the chain heads you hold match the segment.
Read the readable lists or the bodies: they are checked to be the same.

WHAT IS NOT VERIFIED. The labels "case", "exported_at", "exported_by", "start.is",
"anchors" and "default_policy" are not hashed. The ExportCase event in "events" is the
verified record of who exported the case and when. "default_policy" is what this
faceledger version enforces for a collection without a policy event: where "policies"
holds no event before the case's first, that default was in force. A face whose
enrolment_seq is null has no IndexFaces event in the ledger (indexed before it kept
image hashes). The bundle proves that the disclosed events are in the chain unaltered;
it cannot prove that no other event of the case was withheld (hidden entries are
opaque by design), and it proves the chain only as far as the anchors you hold.

    python3 verify.py {name} --anchor faceledger-anchor:<seq>:<hash>

Give it the anchors (published chain heads) you hold: the segment must start at
#{s} with hash {sh}
and end at the chain head #{e} with hash {eh}.
An anchor you hold that falls inside the segment must match it.
"""


def write_bundle(bundle: Shape, folder: Path) -> list[Path]:
    """Write the bundle JSON, the standalone verifier and a README into `folder`."""
    private_dir(folder)  # the case's events: owner-only whatever the umask
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(bundle["case"]))
    name = f"case-{safe}.json"
    paths = [folder / name, folder / "verify.py", folder / "README.txt"]
    # control and bidirectional characters as JSON escapes: the same strings once parsed (the
    # hashed bodies verify), but a reader opening the file sees them, not their effect
    write_private(paths[0], safe_json(bundle, indent=1))
    source = resources.files("faceledger.ledger").joinpath("segment.py").read_text("utf-8")
    paths[1].write_text(source, encoding="utf-8")
    write_private(paths[2], README.format(  # it names the case
        case=visible(str(bundle["case"])), name=name, n=len(bundle["events"]),
        ne=len(bundle.get("enrolments") or []), np=len(bundle.get("policies") or []),
        nk=len(bundle.get("keys") or []), s=bundle["start"]["seq"],
        e=bundle["end"]["seq"], sh=bundle["start"]["hash"], eh=bundle["end"]["hash"],
    ))
    return paths
