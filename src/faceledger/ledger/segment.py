"""Checking a stretch of the chain without the database (standard library only).

This module is copied verbatim into every case export as `verify.py`, so that whoever receives
the bundle can check it with a bare Python 3 and the anchors they hold:

    python3 verify.py case-bundle.json [--anchor faceledger-anchor:<seq>:<hash> ...]

Link rule (the same as the database chain):
    digest = SHA-256(body text, UTF-8)
    hash   = SHA-256("faceledger-v1\\n{seq}\\n{prev}\\n{digest}")
Entries of other cases carry only seq, prev, digest and hash: their content stays private, yet
every link can still be recomputed.

What a reader reads is checked too: each event in the readable lists ("events", "enrolments",
"policies", "keys") must equal the hashed body of the same seq, parsed (any difference in any
field fails), every disclosed body must be shown in one of them, "events" must all carry the
bundle's case, and each list must hold its kind of event.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

GENESIS = "0" * 64
LINK_PREFIX = "faceledger-v1"
BUNDLE_FORMAT = "faceledger-case-export/1"
# readable lists of disclosed events, and the operation each must hold (None: any)
READABLE = ("events", "enrolments", "policies", "keys")
KIND = {"events": None, "enrolments": "IndexFaces", "policies": "PutCollectionPolicy",
        "keys": "CreateAccessKey"}


def body_digest(body: str) -> str:
    """SHA-256 of an event body's exact text."""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def link_hash(seq: int, prev: str, digest: str) -> str:
    """The hash of event `seq`: commits to its place, its predecessor and its body."""
    return hashlib.sha256(f"{LINK_PREFIX}\n{seq}\n{prev}\n{digest}".encode("ascii")).hexdigest()


def parse_anchor(text: str) -> tuple[int, str]:
    """`faceledger-anchor:<seq>:<hash>` or `<seq>:<hash>` -> (seq, hash)."""
    parts = text.strip().split(":")
    if parts and parts[0] == "faceledger-anchor":
        parts = parts[1:]
    if len(parts) != 2 or not parts[0].isdigit() or len(parts[1]) != 64:
        raise ValueError(f"not an anchor: {text!r}")
    return int(parts[0]), parts[1].lower()


def verify_segment(
    bundle: dict[str, Any], anchors: list[tuple[int, str]] | None = None
) -> dict[str, Any]:
    """Check every link of a bundle's segment, its ends, disclosed bodies and given anchors."""
    problems: list[str] = []
    matched: list[int] = []
    if not isinstance(bundle, dict):
        bundle = {}
    start, end = bundle.get("start") or {}, bundle.get("end") or {}
    segment = bundle.get("segment") or []
    if bundle.get("format") != BUNDLE_FORMAT:
        problems.append(f"unknown bundle format {bundle.get('format')!r}")
    try:
        seq, prev = int(start["seq"]), str(start["hash"])
        end_seq, end_hash = int(end["seq"]), str(end["hash"])
    except (KeyError, TypeError, ValueError):
        return {"ok": False, "problems": ["bundle has no valid start/end"], "checked": 0,
                "disclosed": 0, "anchors_matched": []}
    if seq == 0 and prev != GENESIS:
        problems.append("a segment starting at the beginning must start from the genesis hash")
    known = {seq: prev}
    disclosed = 0
    if not isinstance(segment, list):
        segment = []
        problems.append("bundle has no segment list")
    for i, entry in enumerate(segment):
        seq += 1
        if not isinstance(entry, dict):
            problems.append(f"entry {i} is not an object")
            break
        label = f"entry {i} (event #{entry.get('seq')})"
        if entry.get("seq") != seq:
            problems.append(f"{label}: expected event #{seq} (events missing or out of order)")
            break
        body = entry.get("body")
        digest = str(entry.get("digest"))
        if body is not None:
            disclosed += 1
            if body_digest(str(body)) != digest:
                problems.append(f"{label}: disclosed content does not match its digest (edited)")
        if entry.get("prev") != prev:
            problems.append(f"{label}: does not link to the hash of event #{seq - 1}")
        if link_hash(seq, str(entry.get("prev")), digest) != entry.get("hash"):
            problems.append(f"{label}: its hash does not match its seq, prev and digest")
        prev = str(entry.get("hash"))
        known[seq] = prev
    problems.extend(check_readable(bundle, segment))
    if not problems and (seq, prev) != (end_seq, end_hash):
        problems.append(f"segment ends at #{seq} {prev[:12]}..., bundle says #{end_seq} "
                        f"{end_hash[:12]}...")
    for a_seq, a_hash in anchors or []:
        if a_seq in known:
            if known[a_seq] == a_hash:
                matched.append(a_seq)
            else:
                problems.append(f"event #{a_seq} has hash {known[a_seq][:12]}..., "
                                f"the anchor you hold says {a_hash[:12]}...")
    return {"ok": not problems, "problems": problems, "checked": len(segment),
            "disclosed": disclosed, "anchors_matched": matched,
            "start": {"seq": int(start["seq"]), "hash": str(start["hash"])},
            "end": {"seq": end_seq, "hash": end_hash}}


def _differs(shown: Any, hashed: Any, where: str = "") -> str | None:
    """The first field where a readable event differs from its hashed body, or None."""
    if isinstance(shown, dict) and isinstance(hashed, dict):
        for key in sorted(set(shown) | set(hashed)):
            if key not in shown or key not in hashed:
                return f"{where}{key}"
            found = _differs(shown[key], hashed[key], f"{where}{key}.")
            if found is not None:
                return found
        return None
    if isinstance(shown, list) and isinstance(hashed, list) and len(shown) == len(hashed):
        for i, (a, b) in enumerate(zip(shown, hashed)):
            found = _differs(a, b, f"{where}{i}.")
            if found is not None:
                return found
        return None
    same = type(shown) is type(hashed) and shown == hashed
    return None if same else (where.rstrip(".") or "(the event)")


def check_readable(bundle: dict[str, Any], segment: Any) -> list[str]:
    """Problems with what a reader reads: each readable event against its hashed body."""
    problems: list[str] = []
    bodies: dict[int, Any] = {}
    for entry in segment if isinstance(segment, list) else []:
        if isinstance(entry, dict) and entry.get("body") is not None:
            try:
                bodies[int(entry["seq"])] = json.loads(str(entry["body"]))
            except (KeyError, TypeError, ValueError):
                problems.append(f"disclosed body of event #{entry.get('seq')} is not JSON")
    shown: set[int] = set()
    for name in READABLE:
        items = bundle.get(name, [] if name != "events" else None)
        if not isinstance(items, list):
            problems.append(f'"{name}" is not a list of events')
            continue
        for item in items:
            seq = item.get("seq") if isinstance(item, dict) else None
            if not isinstance(seq, int) or seq not in bodies:
                problems.append(f'"{name}": event #{seq} has no disclosed body in the segment '
                                "(it is not verified)")
                continue
            shown.add(seq)
            hashed = dict(bodies[seq], seq=seq) if isinstance(bodies[seq], dict) else None
            field = _differs(item, hashed)
            if field is not None:
                problems.append(f'"{name}": event #{seq} differs from its hashed body '
                                f"(field {field}): edited")
                continue
            kind = KIND[name]
            if kind is not None and item.get("operation") != kind:
                problems.append(f'"{name}": event #{seq} is {item.get("operation")}, '
                                f"not {kind}")
            if name == "events" and item.get("case") != bundle.get("case"):
                problems.append(f'"events": event #{seq} belongs to case {item.get("case")!r}, '
                                f"not {bundle.get('case')!r}")
    for seq in sorted(set(bodies) - shown):
        problems.append(f"disclosed body of event #{seq} is in no readable list")
    enrolled = {item["seq"]: item for item in bundle.get("enrolments") or []
                if isinstance(item, dict) and isinstance(item.get("seq"), int)}
    for face in bundle.get("faces") or []:
        seq = face.get("enrolment_seq") if isinstance(face, dict) else None
        if seq is None:
            continue
        added = ((enrolled.get(seq) or {}).get("result") or {}).get("face_ids") or []
        if face.get("face_id") not in added:
            problems.append(f'"faces": event #{seq} is not the enrolment of face '
                            f"{face.get('face_id')!r}")
    return problems


def main(argv: list[str]) -> int:
    """Command line: verify a bundle file against anchors given with --anchor."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python3 verify.py BUNDLE.json [--anchor faceledger-anchor:SEQ:HASH ...]")
        return 2
    anchors: list[tuple[int, str]] = []
    rest = argv[1:]
    while rest:
        if rest[0] != "--anchor" or len(rest) < 2:
            print(f"unexpected argument {rest[0]!r}")
            return 2
        anchors.append(parse_anchor(rest[1]))
        rest = rest[2:]
    with open(argv[0], encoding="utf-8") as f:
        bundle = json.load(f)
    result = verify_segment(bundle, anchors)
    s, e = result["start"] if result.get("start") else {}, result.get("end") or {}
    lists = ", ".join(f"{len(bundle.get(n) or [])} {n}" for n in READABLE)
    print(f"case {bundle.get('case')!r}: {result['checked']} linked events checked, "
          f"{result['disclosed']} disclosed ({lists}), each readable event checked against "
          "its hashed body")
    if s:
        print(f"segment starts after event #{s['seq']} ({s['hash']}) "
              f"and ends at #{e['seq']} ({e['hash']})")
    for a in result["anchors_matched"]:
        print(f"anchor #{a}: matches")
    for p in result["problems"]:
        print(f"BAD: {p}")
    print("OK" if result["ok"] else "FAILED")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
