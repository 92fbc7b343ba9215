"""`faceledger ledger ...`, `policy ...`, `retention ...`, `report`, `export`: the audit ledger
and governance from the shell (the local operator is an admin). `review ...` is cli/review.py."""

from __future__ import annotations

import json
import zipfile
from datetime import date, timedelta
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..context import RequestContext
from ..errors import InvalidParameterException
from ..ledger.chain import Anchor
from ..ledger.export import write_bundle
from ..ledger.report import render_html
from ..ledger.segment import verify_segment
from ..service import FaceService
from ..settings import Settings
from .app import emit_json, main, reports_errors, request_context


def _service() -> FaceService:
    return FaceService(Settings())


def _ctx(**fields: Any) -> RequestContext:
    return request_context(**fields)


def _anchors(tokens: tuple[str, ...], files: tuple[str, ...]) -> list[Anchor]:
    found = [Anchor.parse(t) for t in tokens]
    for name in files:
        for line in Path(name).read_text(encoding="utf-8").splitlines():
            token = line.split("#", 1)[0].strip()  # `anchor --append-to` adds "# <time>"
            if token:
                found.append(Anchor.parse(token))
    return found


# -- ledger --------------------------------------------------------------------------------

@main.group()
def ledger() -> None:
    """The tamper-evident audit ledger: verify, anchor, inspect."""


@ledger.command()
@click.option("--anchor", "anchor_tokens", multiple=True,
              help="A chain head you hold (faceledger-anchor:SEQ:HASH); repeatable.")
@click.option("--anchors-file", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A file of anchors, one per line (what `ledger anchor --append-to` writes).")
@click.option("--json", "as_json", is_flag=True, help="Print the verification as JSON.")
@reports_errors
def verify(anchor_tokens: tuple[str, ...], anchors_file: tuple[str, ...], as_json: bool) -> None:
    """Check every event's hash and link; name the first event that is not as written.

    Exit status 0 when intact, 1 when tampering was found. Deleting the newest events is only
    visible against an anchor held outside the database: pass it with --anchor.
    """
    result = _service().verify_ledger(_anchors(anchor_tokens, anchors_file), ctx=_ctx())
    if as_json:
        emit_json(result)
    else:
        head = result["head"]
        if result["ok"]:
            click.echo(f"OK: {result['checked']} events intact; head #{head['seq']} "
                       f"{head['hash']}")
            if result["anchors_matched"]:
                click.echo("anchors matched: " + ", ".join(
                    f"#{s}" for s in result["anchors_matched"]))
        else:
            bad = result["first_bad"]
            click.echo(f"TAMPERED: first bad event #{bad['seq']} ({bad['kind']}): "
                       f"{bad['message']}")
            for p in result["problems"][1:]:
                click.echo(f"  also #{p['seq']} ({p['kind']}): {p['message']}")
    raise SystemExit(0 if result["ok"] else 1)


@ledger.command()
@click.option("--append-to", type=click.Path(dir_okay=False),
              help="Also append the anchor token to this file (run from cron for periodic "
                   "anchoring, and copy the file somewhere the database's owner cannot edit).")
@click.option("--json", "as_json", is_flag=True)
@reports_errors
def anchor(append_to: str | None, as_json: bool) -> None:
    """Record and print the chain head for an outside party to hold."""
    result = _service().anchor_ledger(ctx=_ctx())
    if append_to:
        with open(append_to, "a", encoding="utf-8") as f:
            f.write(f"{result['token']}  # {result['time']}\n")
    if as_json:
        emit_json(result)
    else:
        click.echo(result["token"])


@ledger.command()
@click.option("--case", "case", default=None, help="Only events of this case.")
@click.option("--last", type=click.IntRange(1, 100_000), default=20, show_default=True)
@reports_errors
def log(case: str | None, last: int) -> None:
    """Print the newest events (one JSON object per line)."""
    service = _service()
    head = service.ledger.head()
    shown = []
    for stored in service.ledger.scan(max(1, head.seq - (last if case is None else 10**9) + 1)):
        body = json.loads(stored.body)
        if case is None or body.get("case") == case:
            shown.append({"seq": stored.seq, "hash": stored.hash, **body})
    for item in shown[-last:]:
        click.echo(json.dumps(item, sort_keys=True))


@ledger.command("verify-bundle")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False))
@click.option("--anchor", "anchor_tokens", multiple=True, help="An anchor you hold; repeatable.")
@reports_errors
def verify_bundle(bundle: str, anchor_tokens: tuple[str, ...]) -> None:
    """Check a case export's chain segment (no database needed): the bundle's JSON, or the
    zip the console exports (its case-*.json is checked)."""
    data = _read_bundle(Path(bundle))
    anchors = [(a.seq, a.hash) for a in (Anchor.parse(t) for t in anchor_tokens)]
    result = verify_segment(data if isinstance(data, dict) else {}, anchors)
    for p in result["problems"]:
        click.echo(f"BAD: {p}")
    click.echo(f"{'OK' if result['ok'] else 'FAILED'}: {result['checked']} linked events, "
               f"{result['disclosed']} disclosed; anchors matched: {result['anchors_matched']}")
    raise SystemExit(0 if result["ok"] else 1)


def _read_bundle(path: Path) -> Any:
    """The bundle JSON from a .json file or from the console's zip (case-*.json inside)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist()
                     if n.startswith("case-") and n.endswith(".json") and "/" not in n]
            if len(names) != 1:
                raise InvalidParameterException(
                    f"{path} is a zip without exactly one case-*.json bundle in it.")
            raw = zf.read(names[0])
        where = f"{path}:{names[0]}"
    else:
        raw, where = path.read_bytes(), str(path)
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidParameterException(f"{where} is not a JSON bundle: {exc}") from exc


# -- policy --------------------------------------------------------------------------------

@main.group()
def policy() -> None:
    """Collection policies (admin): threshold floor, purpose, consent, review, retention."""


@policy.command("get")
@click.argument("collection")
@reports_errors
def policy_get(collection: str) -> None:
    """Print a collection's policy."""
    emit_json(_service().get_collection_policy(collection, ctx=_ctx()))


@policy.command("set")
@click.argument("collection")
@click.option("--min-threshold", type=float, default=None,
              help="Lowest FaceMatchThreshold a search may use (0-100).")
@click.option("--no-min-threshold", is_flag=True, help="Remove the threshold floor.")
@click.option("--require-purpose/--no-require-purpose", default=None)
@click.option("--require-consent/--no-require-consent", default=None)
@click.option("--identification/--no-identification", default=None,
              help="Hold search results for human review.")
@click.option("--reviewers", type=int, default=None, help="Reviewers needed to confirm (1-10).")
@click.option("--verifier-sees-earlier/--blind-verifier", "verifier_sees_earlier",
              default=None, help="Whether the reviewer giving the last confirmation sees the "
                                 "earlier conclusions (ACE-V verification); default blind.")
@click.option("--verify-every-conclusion/--first-answer-settles", "verify_every",
              default=None, help="Whether rejections and inconclusives need --reviewers "
                                 "agreeing reviewers too (ACE-V: every conclusion verified); "
                                 "default: the first answer that is not a confirmation settles.")
@click.option("--retention-days", type=int, default=None)
@click.option("--no-retention", is_flag=True, help="Keep faces until deleted.")
@click.option("--reset", is_flag=True, help="Start from the default policy.")
@reports_errors
def policy_set(collection: str, min_threshold: float | None, no_min_threshold: bool,
               require_purpose: bool | None, require_consent: bool | None,
               identification: bool | None, reviewers: int | None,
               verifier_sees_earlier: bool | None, verify_every: bool | None,
               retention_days: int | None, no_retention: bool, reset: bool) -> None:
    """Change the options given; keep the others (logged in the ledger)."""
    service = _service()
    ctx = _ctx()
    current = {} if reset else service.get_collection_policy(collection, ctx=ctx)["Policy"]
    changes: dict[str, Any] = {
        "MinSimilarityThreshold": min_threshold, "RequirePurpose": require_purpose,
        "RequireConsent": require_consent, "IdentificationMode": identification,
        "ReviewersRequired": reviewers, "RetentionDays": retention_days,
        "VerifierSeesEarlierDecisions": verifier_sees_earlier,
        "VerifyEveryConclusion": verify_every,
    }
    new = {**current, **{k: v for k, v in changes.items() if v is not None}}
    if no_min_threshold:
        new["MinSimilarityThreshold"] = None
    if no_retention:
        new["RetentionDays"] = None
    emit_json(service.put_collection_policy(collection, new, ctx=ctx))


# -- retention -----------------------------------------------------------------------------

@main.group()
def retention() -> None:
    """Retention of indexed faces: renew, sweep."""


@retention.command("sweep")
@reports_errors
def retention_sweep() -> None:
    """Delete every face past its collection's RetentionDays (each deletion logged)."""
    emit_json(_service().sweep_retention(ctx=_ctx()))


@retention.command("renew")
@click.argument("collection")
@click.argument("face_ids", nargs=-1, required=True)
@reports_errors
def retention_renew(collection: str, face_ids: tuple[str, ...]) -> None:
    """Restart the retention period of FACE_IDS."""
    emit_json(_service().renew_faces(collection, list(face_ids), ctx=_ctx()))


# -- report and export ---------------------------------------------------------------------

@main.command()
@click.option("--from", "time_from", required=True,
              help="Start (ISO 8601 date or time, UTC unless it says otherwise), included.")
@click.option("--to", "time_to", required=True,
              help="End: a date (2026-12-31) includes that whole day; a time "
                   "(2026-12-31T12:00) is the first instant left out.")
@click.option("-o", "--out", type=click.Path(file_okay=False), default="faceledger-report",
              show_default=True, help="Folder for report.html and report.json.")
@reports_errors
def report(time_from: str, time_to: str, out: str) -> None:
    """Write a transparency report (HTML with charts, and JSON) for a period."""
    result = _service().transparency_report(time_from, day_after(time_to), ctx=_ctx())
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (folder / "report.html").write_text(render_html(result), encoding="utf-8")
    click.echo(f"{result['totals']['events']} events from {result['period']['from']} up to "
               f"{result['period']['to']}: {folder / 'report.html'}, {folder / 'report.json'}")


def day_after(end: str) -> str:
    """A period's end as the report takes it (the first instant left out): a date alone means
    the whole of that day, as a person reading "to 2026-12-31" means it; a time is as given."""
    text = end.strip()
    try:
        day = date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        day = None  # not a date: the report's own check names the problem
    if day is None or day == date.max:
        return end
    return (day + timedelta(days=1)).isoformat()


@main.command()
@click.option("--case", "case", required=True, help="The case reference to disclose.")
@click.option("-o", "--out", type=click.Path(file_okay=False), default=None,
              help="Folder for the bundle [default: case-<CASE>].")
@reports_errors
def export(case: str, out: str | None) -> None:
    """Write a case's disclosure bundle: its events, their chain segment and a verifier."""
    bundle = _service().export_case(case, ctx=_ctx())
    folder = Path(out or "case-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in case))
    paths = write_bundle(bundle, folder)
    click.echo(f"{len(bundle['events'])} events of case {case!r}, chain #{bundle['start']['seq']}"
               f"..#{bundle['end']['seq']}: " + ", ".join(str(p) for p in paths))
