"""Transparency reports: what the service did over a period, computed from the hashed events.

`build` returns the report as a JSON-ready dict; `render_html` turns it into one self-contained
HTML page whose charts are inline SVG (no scripts, no external files).
"""

from __future__ import annotations

import html
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select

from ..calibration import load_calibration
from ..calibration.coverage import coverage_lines
from ..model_versions import canonical, describe
from ..shapes import Shape
from ..text import visible
from . import schema
from .chain import Ledger
from .events import (
    INDEX_OPERATIONS,
    PAGE_VIEWS,
    REFUSED,
    SEARCH_OPERATIONS,
    format_time,
    utc_now,
)

REPORT_FORMAT = "faceledger-transparency-report/1"
NONE_LABEL = "(none stated)"


def _bodies(ledger: Ledger, start: datetime, end: datetime) -> Iterable[dict[str, Any]]:
    e = schema.events
    after = 0
    while True:
        with ledger.engine.connect() as conn:
            rows = conn.execute(
                select(e.c.seq, e.c.body)
                .where(e.c.time >= format_time(start), e.c.time < format_time(end),
                       e.c.seq > after)
                .order_by(e.c.seq).limit(2000)
            ).all()
        for seq, body in rows:
            parsed = json.loads(body)
            if isinstance(parsed, dict):
                yield parsed
        if len(rows) < 2000:
            return
        after = int(rows[-1][0])


def model_card(model_version: str) -> dict[str, Any]:
    """The published provenance and error rates of a model's shipped calibration table."""
    try:
        table = load_calibration(model_version)
    except (LookupError, ValueError, KeyError) as exc:
        return {"available": False, "reason": str(exc)}
    return {"available": True, "populations": coverage_lines(table),
            "provenance": table.provenance}  # fmt: skip


def _threshold_label(thresholds: Mapping[str, Any]) -> str:
    named = [v for k, v in thresholds.items() if k != "FalseMatchRate"]
    if not named or not isinstance(named[0], (int, float)):
        return "(not recorded)"
    return f"{float(named[0]):g}"


def build(ledger: Ledger, start: datetime, end: datetime, *, generated_by: str,
          chain: Mapping[str, Any] | None = None,
          include: Callable[[Mapping[str, Any]], bool] | None = None) -> Shape:
    """The report over [start, end), of the events `include` accepts (all by default)."""
    operations: dict[str, Counter[str]] = defaultdict(Counter)
    by_purpose: Counter[str] = Counter()
    by_principal: Counter[str] = Counter()
    by_collection: Counter[str] = Counter()
    refusals_rule: Counter[str] = Counter()
    refusals_op: Counter[str] = Counter()
    view_refusals_rule: Counter[str] = Counter()
    op_refusals_rule: Counter[str] = Counter()
    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    models: Counter[str] = Counter()
    # events keep the model name they were written with ("dlib-resnet-v1" before versions were
    # numbers): counted under the number, with every name seen listed
    recorded_as: dict[str, set[str]] = defaultdict(set)
    by_threshold: dict[str, Counter[str]] = defaultdict(Counter)
    expected_by_threshold: dict[str, float] = defaultdict(float)
    decisions_by_kind: Counter[str] = Counter()
    settled: dict[str, str] = {}
    conflicts = 0  # probe faces confirmed as different people (each time one arose)
    held_ids: list[str] = []
    n = returned = held = 0
    expected_fm = 0.0
    deleted_faces = delete_requests = expired_faces = sweeps = collections_deleted = 0
    indexed = 0
    for body in _bodies(ledger, start, end):
        if include is not None and not include(body):
            continue
        n += 1
        op, outcome = str(body.get("operation")), str(body.get("outcome"))
        result = body.get("result") or {}
        operations[op][outcome] += 1
        per_day[str(body.get("time", ""))[:10]][outcome] += 1
        if body.get("model_version"):
            version = canonical(str(body["model_version"]))
            models[version] += 1
            recorded_as[version].add(str(body["model_version"]))
        if outcome == REFUSED:
            rule = str(body.get("rule") or "unspecified")
            refusals_rule[rule] += 1
            refusals_op[op] += 1
            (view_refusals_rule if op in PAGE_VIEWS else op_refusals_rule)[rule] += 1
            continue
        if op in SEARCH_OPERATIONS:
            by_purpose[str(body.get("purpose") or NONE_LABEL)] += 1
            by_principal[str(body.get("principal"))] += 1
            by_collection[str(body.get("collection"))] += 1
            ids = list(result.get("held_for_review") or [])
            found = len(result.get("similarities") or [])
            label = _threshold_label(body.get("thresholds") or {})
            t = by_threshold[label]
            t["searches"] += 1
            t["faces_searched"] += int(result.get("compared") or 0)
            if ids:  # identification mode: the searcher saw no match, candidates were held
                held += len(ids)
                held_ids.extend(ids)
                t["candidates_held"] += len(ids)
            else:
                returned += found
                t["matches_returned"] += found
            efm = float(result.get("expected_false_matches") or 0.0)
            expected_fm += efm
            expected_by_threshold[label] += efm
        elif op in INDEX_OPERATIONS:
            indexed += len(result.get("face_ids") or [])
        elif op == "ReviewCandidate":
            params = body.get("params") or {}
            decisions_by_kind[str(params.get("decision") or "unrecorded")] += 1
            status = result.get("status")
            cid = result.get("candidate_id")
            if isinstance(cid, str) and status in SETTLED:
                settled[cid] = str(status)
            rivals = [r for r in result.get("conflicts_with") or [] if isinstance(r, str)]
            if rivals:
                conflicts += 1
                settled.update({r: "CONFLICT" for r in rivals})
        elif op == "ResolveConflict":
            statuses = result.get("statuses") or {}
            settled.update({str(c): str(st) for c, st in statuses.items() if st in SETTLED})
        elif op == "DeleteFaces":
            delete_requests += 1
            deleted_faces += len(result.get("face_ids") or [])
        elif op == "ExpireFaces":
            sweeps += 1
            expired_faces += int(result.get("expired") or 0)
        elif op == "DeleteCollection":
            collections_deleted += 1
    searches = sum(operations[o]["done"] for o in SEARCH_OPERATIONS if o in operations)
    outcomes = Counter(settled.values())
    thresholds = []
    for label in sorted(by_threshold, key=lambda x: (x == "(not recorded)", _num(x))):
        c = by_threshold[label]
        thresholds.append({"threshold": label, "searches": c["searches"],
                           "faces_searched": c["faces_searched"],
                           "matches_returned": c["matches_returned"],
                           "candidates_held": c["candidates_held"],
                           "expected_false_matches": expected_by_threshold[label]})
    view_refused = sum(view_refusals_rule.values())
    return {
        "format": REPORT_FORMAT,
        "period": {"from": format_time(start), "to": format_time(end)},
        "generated_at": format_time(utc_now()),
        "generated_by": generated_by,
        "chain": dict(chain or {}),
        "scoped": include is not None,
        "totals": {"events": n, "done": sum(c["done"] for c in operations.values()),
                   "refused": sum(c[REFUSED] for c in operations.values()),
                   # the headline: operations on faces, settings and the record, apart from
                   # the console's page views (opening a queue or a case file is logged, but
                   # it is not something the service did to anyone's face)
                   **{kind: {"total": sum(c["done"] + c[REFUSED] for _, c in ops),
                             "done": sum(c["done"] for _, c in ops),
                             "refused": sum(c[REFUSED] for _, c in ops)}
                      for kind, ops in (
                          ("operations", [(o, c) for o, c in operations.items()
                                          if o not in PAGE_VIEWS]),
                          ("page_views", [(o, c) for o, c in operations.items()
                                          if o in PAGE_VIEWS]))}},
        "operations": {o: {"done": c["done"], "refused": c[REFUSED]}
                       for o, c in sorted(operations.items())},
        "searches": {
            "total": searches,
            "by_purpose": dict(by_purpose.most_common()),
            "by_principal": dict(by_principal.most_common()),
            "by_collection": dict(by_collection.most_common()),
            # what searchers were shown, and what was held back for review instead
            "matches_returned": returned,
            "candidates_held": held,
            "matches_found": returned + held,
            "expected_false_matches": expected_fm,
            "by_threshold": thresholds,
        },
        "identification": {
            "candidates_held": held,
            "candidates_returned": held,  # (older name of candidates_held)
            # of the candidates held in this period, still undecided at its end
            "pending": sum(1 for i in held_ids if i not in settled),
            # candidates settled in this period (held in it or before)
            "confirmed": outcomes["CONFIRMED"],
            "rejected": outcomes["REJECTED"],
            "inconclusive": outcomes["INCONCLUSIVE"],
            # candidates still in CONFLICT at the period's end, and conflicts that arose
            "in_conflict": outcomes["CONFLICT"],
            "conflicts": conflicts,
            "review_decisions": sum(decisions_by_kind.values()),
            "decisions": {"same person (CONFIRM)": decisions_by_kind["CONFIRM"],
                          "not the same person (REJECT)": decisions_by_kind["REJECT"],
                          "inconclusive": decisions_by_kind["INCONCLUSIVE"]},
        },
        "refusals": {"by_rule": dict(refusals_rule.most_common()),
                     "by_operation": dict(refusals_op.most_common()),
                     "of_operations": {"total": sum(op_refusals_rule.values()),
                                       "by_rule": dict(op_refusals_rule.most_common())},
                     "of_page_views": {"total": view_refused,
                                       "by_rule": dict(view_refusals_rule.most_common())}},
        "deletions": {"faces_deleted": deleted_faces, "delete_requests": delete_requests,
                      "faces_expired": expired_faces, "expiry_sweeps": sweeps,
                      "collections_deleted": collections_deleted},
        "indexing": {"faces_indexed": indexed},
        "per_day": {d: {"done": c["done"], "refused": c[REFUSED]}
                    for d, c in sorted(per_day.items())},
        "models": [{"model_version": m, "name": describe(m), "events": k,
                    "recorded_as": sorted(recorded_as[m]), **model_card(m)}
                   for m, k in sorted(models.items())],
    }


def _num(label: str) -> float:
    try:
        return float(label)
    except ValueError:
        return float("inf")


SETTLED = ("CONFIRMED", "REJECTED", "INCONCLUSIVE", "CONFLICT")


def review_funnel(ident: Mapping[str, Any]) -> dict[str, float]:
    """The review chart's bars: held, still pending, and each outcome."""
    return {"candidates held for review": ident["candidates_held"],
            "still pending": ident["pending"],
            "confirmed: same person": ident["confirmed"],
            "rejected: not the same person": ident["rejected"],
            "inconclusive": ident["inconclusive"],
            "in conflict: one face confirmed as different people": ident.get("in_conflict", 0)}


def headline(totals: Mapping[str, Any]) -> str:
    """The report's first count: operations, with console page views apart (reports built
    before the split say only events)."""
    ops, views = totals.get("operations"), totals.get("page_views")
    if not isinstance(ops, Mapping) or not isinstance(views, Mapping):
        return f"{totals['events']} events: {totals['done']} done, {totals['refused']} refused."
    return (f"{ops['total']} operations: {ops['done']} done, {ops['refused']} refused. "
            f"Besides them, {views['total']} console page views (people opening the review "
            f"queue, case files, the ledger or reports; {views['refused']} refused), logged "
            "but not operations on faces.")


def search_sentence(s: Mapping[str, Any]) -> str:
    """What the searchers saw, in one sentence (returned vs held for review)."""
    return (f"{s['matches_returned']} matches returned to searchers; {s['candidates_held']} "
            f"candidates held for human review instead (their searchers were shown no match). "
            f"Expected false matches at the thresholds used: {s['expected_false_matches']:.3g}.")


# -- HTML ----------------------------------------------------------------------------------

BAR = "#3b6ea5"
REFUSED_COLOR = "#b5473a"
CSS = """body{font:15px/1.45 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}p,li{overflow-wrap:anywhere}
table{border-collapse:collapse;display:block;max-width:100%;overflow-x:auto}svg{max-width:100%;height:auto}
td,th{padding:.2em .8em;border-bottom:1px solid #eee;text-align:left}td.n{text-align:right}
.ok{color:#2d7a3a}.bad{color:#b5473a}small{color:#666}svg text{font:12px system-ui,sans-serif}"""


def _e(value: Any) -> str:
    """Escaped for HTML, control and bidirectional characters shown as escapes (text.visible):
    purposes and names stored before input was checked cannot reorder the report."""
    return html.escape(visible(str(value)), quote=True)


def bar_chart(items: Mapping[str, float], *, color: str = BAR, width: int = 640) -> str:
    """Horizontal bars, one per item, labelled with the value; inline SVG."""
    if not items:
        return "<p><small>none in this period</small></p>"
    row, label_w = 22, 200
    top = max(items.values()) or 1
    h = row * len(items) + 4
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
              f'role="img" viewBox="0 0 {width} {h}">')]
    for i, (label, value) in enumerate(items.items()):
        y = i * row + 2
        w = max(1.0, (width - label_w - 60) * value / top) if value else 0.0
        text = label if len(label) <= 30 else label[:29] + "…"
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{_e(text)}'
                     f"<title>{_e(label)}</title></text>")
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" '
                     f'fill="{color}"/>')
        parts.append(f'<text x="{label_w + w + 5:.1f}" y="{y + 15}">{value:g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def day_chart(per_day: Mapping[str, Mapping[str, int]], width: int = 640) -> str:
    """Events per day, refused stacked on done, with a legend row; inline SVG."""
    if not per_day:
        return "<p><small>no events in this period</small></p>"
    h, base = 184, 140
    days = list(per_day.items())
    top = max(d["done"] + d[REFUSED] for _, d in days) or 1
    step = min(width / len(days), 48.0)
    bw = max(1.0, step * 0.8)
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
              f'role="img" viewBox="0 0 {width} {h}">')]
    for i, (day, c) in enumerate(days):
        x = i * step
        hd = 130 * c["done"] / top
        hr = 130 * c[REFUSED] / top
        tip = f"{day}: {c['done']} done, {c[REFUSED]} refused"
        parts.append(f'<g><title>{_e(tip)}</title>'
                     f'<rect x="{x:.1f}" y="{base - hd:.1f}" width="{bw:.1f}" height="{hd:.1f}" '
                     f'fill="{BAR}"/><rect x="{x:.1f}" y="{base - hd - hr:.1f}" '
                     f'width="{bw:.1f}" height="{hr:.1f}" fill="{REFUSED_COLOR}"/></g>')
    parts.append(f'<text x="0" y="{base + 16}">{_e(days[0][0])}</text>')
    if len(days) > 1:
        parts.append(f'<text x="{(len(days) - 1) * step + bw:.1f}" y="{base + 16}" '
                     f'text-anchor="end">{_e(days[-1][0])}</text>')
    parts.append(f'<rect x="0" y="{h - 14}" width="10" height="10" fill="{BAR}"/>'
                 f'<text x="14" y="{h - 5}">done</text>'
                 f'<rect x="60" y="{h - 14}" width="10" height="10" fill="{REFUSED_COLOR}"/>'
                 f'<text x="74" y="{h - 5}">refused</text>'
                 f'<text x="140" y="{h - 5}">(busiest day: {top} events)</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(rows: Iterable[tuple[Any, ...]], head: tuple[str, ...]) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(
            f'<td class="n">{_e(v)}</td>' if isinstance(v, (int, float)) else f"<td>{_e(v)}</td>"
            for v in r) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _flat(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, Mapping):
        rows: list[tuple[str, str]] = []
        for k, v in value.items():
            rows.extend(_flat(v, f"{prefix}{k}."))
        return rows
    text = json.dumps(value) if isinstance(value, list) else str(value)
    return [(prefix.rstrip("."), text if len(text) <= 200 else text[:199] + "…")]


def render_html(report: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page."""
    p, s, ident = report["period"], report["searches"], report["identification"]
    chain = report.get("chain") or {}
    first_bad = chain.get("first_bad")
    if not chain:
        chain_line = "<p>Chain not verified for this report.</p>"
    elif chain.get("ok"):
        head = chain.get("head") or {}
        chain_line = (f'<p class="ok">Ledger verified: {chain.get("checked")} events intact; '
                      f'head #{_e(head.get("seq"))} <code>{_e(head.get("hash"))}</code>.</p>')
    else:
        chain_line = (f'<p class="bad">Ledger verification FAILED: first bad event '
                      f'#{_e(first_bad and first_bad["seq"])}: '
                      f'{_e(first_bad and first_bad["message"])}</p>')
    funnel = review_funnel(ident)
    thresholds = [(t["threshold"], t["searches"], t["faces_searched"], t["matches_returned"],
                   t["candidates_held"], round(t["expected_false_matches"], 3))
                  for t in s.get("by_threshold", [])]
    refusals = report["refusals"]
    d = report["deletions"]
    deletions = {"faces deleted on request": d["faces_deleted"],
                 "faces expired (retention)": d["faces_expired"],
                 "collections deleted": d["collections_deleted"]}
    models = []
    for m in report["models"]:
        names = [n for n in m.get("recorded_as", []) if n != m["model_version"]]
        aka = f"; recorded as {', '.join(names)}" if names else ""
        models.append(f"<h3>{_e(m.get('name') or m['model_version'])} "
                      f"<small>({m['events']} events{_e(aka)})</small></h3>")
        if m.get("available"):
            models.append("<h4>Whom the scores were measured for</h4><ul>"
                          + "".join(f"<li>{_e(line)}</li>" for line in m.get("populations", []))
                          + "</ul>")  # fmt: skip
            models.append(_table(_flat(m.get("provenance") or {}), ("measured", "value")))
        else:
            models.append(f"<p class=bad>No published calibration: {_e(m.get('reason'))}</p>")
    ops = [(o, c["done"], c["refused"]) for o, c in report["operations"].items()]
    body = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>faceledger transparency report {_e(p['from'])} – {_e(p['to'])}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Transparency report</h1>",
        (f"<p>Period <b>{_e(p['from'])}</b> to <b>{_e(p['to'])}</b> (end excluded). "
         f"Generated {_e(report['generated_at'])} by {_e(report['generated_by'])}.</p>"),
        chain_line,
        f"<p>{_e(headline(report['totals']))}</p>",
        "<h3>Events per day</h3>", day_chart(report["per_day"]),
        "<h2>Operations</h2>", _table(ops, ("operation", "done", "refused")),
        f"<h2>Searches ({s['total']})</h2>",
        f"<p>{_e(search_sentence(s))}</p>",
        "<h3>By threshold</h3>",
        _table(thresholds, ("threshold (Similarity)", "searches", "faces searched",
                            "matches returned", "candidates held", "expected false matches")),
        "<h3>By purpose</h3>", bar_chart(s["by_purpose"]),
        "<h3>By principal</h3>", bar_chart(s["by_principal"]),
        "<h3>By collection</h3>", bar_chart(s["by_collection"]),
        "<h2>Identification mode: human review</h2>",
        bar_chart(funnel),
        (f"<p>{ident['review_decisions']} review decisions recorded: "
         + ", ".join(f"{v} {_e(k)}" for k, v in ident.get("decisions", {}).items())
         + ".</p>"),
        (f"<h2>Refusals of operations ({refusals['of_operations']['total']})</h2>"
         if "of_operations" in refusals else "<h2>Refusals by policy rule</h2>"),
        bar_chart((refusals.get("of_operations") or refusals)["by_rule"], color=REFUSED_COLOR),
        *([f"<h2>Refused console page views ({refusals['of_page_views']['total']})</h2>",
           bar_chart(refusals["of_page_views"]["by_rule"], color=REFUSED_COLOR)]
          if "of_page_views" in refusals else []),
        "<h2>Deletions and expiries</h2>", bar_chart(deletions),
        f"<p>{report['indexing']['faces_indexed']} faces indexed.</p>",
        "<h2>Models and their published error rates</h2>",
        *(models or ["<p><small>no model was used in this period</small></p>"]),
        "</body></html>",
    ]
    return "\n".join(body)
