"""`faceledger review ...`: the human review queue from the shell.

Who decides: a review is a person's decision, so `--key` names a reviewer key and its secret
proves it (FACELEDGER_REVIEWER_SECRET, or typed at a hidden prompt); the decision is recorded
under that key's id, with its roles, exactly as if made in the console. Without `--key` the
decision is the local operator's ("local"): one person however often it is run. The local
operator holds the database and so can read every decision: the service lets it give only the
first decision on a search and its probe photo (or the policy's open verification). Typed names (the old
`--reviewer NAME`) are refused: one person typing two names was two reviewers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ..context import RequestContext
from ..errors import AccessDeniedException
from ..imaging import file_sha256
from ..ledger import comparison
from ..server.keys import context_for
from ..service import FaceService
from ..settings import Settings
from ..shapes import Shape
from ..text import escape, shown
from .app import emit_json, main, reports_errors, request_context
from .server import _store

SECRET_ENV = "FACELEDGER_REVIEWER_SECRET"
WORDS = {"CONFIRM": "same person", "REJECT": "not the same person",
         "INCONCLUSIVE": "inconclusive"}


def _service() -> FaceService:
    return FaceService(Settings())


def _who(service: FaceService, key_id: str | None) -> RequestContext:
    """The reviewer: the key `key_id` once its secret is given, else the local operator."""
    base = request_context()
    if key_id is None:
        return base
    secret = os.environ.get(SECRET_ENV) or click.prompt(
        f"Secret access key of {key_id}", hide_input=True, err=True)
    store = _store(service=service, need_kek=True)
    key = store.verify_secret(key_id.strip(), secret, datetime.now(UTC))
    if key is None:
        raise AccessDeniedException(f"Unknown or revoked key {key_id}, or wrong secret.")
    return context_for(key, request_id=base.request_id, purpose=base.purpose, case=base.case,
                       consent=base.consent)


def _refuse_typed_name(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        raise click.UsageError(
            "--reviewer NAME is gone: a typed name proved nothing (one person could confirm as "
            "two). Decide as a reviewer key with --key KEY_ID (its secret from "
            f"{SECRET_ENV} or a prompt), or without --key as the local operator.")


_KEY = click.option("--key", "key_id", default=None, metavar="KEY_ID",
                    help=f"Decide as this reviewer key (its secret from {SECRET_ENV} or a hidden "
                         "prompt); default: the local operator, one person.")
_TYPED = click.option("--reviewer", hidden=True, expose_value=False, callback=_refuse_typed_name)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print the candidate as JSON.")


def _features(_ctx: click.Context, _param: click.Parameter,
              given: tuple[str, ...]) -> dict[str, str]:
    """`--feature KEY=FINDING` options as {key: finding}; which keys and findings exist is
    the service's check (ledger.comparison), so a wrong one is refused and logged there."""
    out: dict[str, str] = {}
    for item in given:
        key, finding = (part.strip() for part in item.partition("=")[::2])
        if "=" not in item or "=" in finding or not key or not finding:
            raise click.BadParameter(f"{shown(item)}: give KEY=FINDING, e.g. ears=similar.")
        if key in out:
            raise click.BadParameter(f"{shown(key)} is given twice.")
        out[key] = finding
    return out


_FEATURE = click.option(
    "--feature", "features", multiple=True, metavar="KEY=FINDING", callback=_features,
    help="A facial feature you compared and what you found, recorded with the decision "
         f"(repeatable). KEY: {', '.join(comparison.FEATURE_KEYS)}; FINDING: "
         f"{', '.join(comparison.FINDINGS)} (quote one with a space: \"eyes=not visible\").")


@main.group()
def review() -> None:
    """The human review queue for identification-mode search results."""


@review.command("list")
@click.option("--collection", default=None)
@click.option("--status", type=click.Choice(["PENDING", "CONFIRMED", "REJECTED",
                                            "INCONCLUSIVE", "CONFLICT", "ALL"]),
              default="PENDING", show_default=True)
@click.option("--case", "case", default=None)
@click.option("--request-id", default=None, help="Candidates of one search request.")
@click.option("--json", "as_json", is_flag=True, help="Print the candidates as JSON.")
@reports_errors
def review_list(collection: str | None, status: str, case: str | None,
                request_id: str | None, as_json: bool) -> None:
    """List candidates: each search's probe once, its candidates under it, and for each the
    enrolled photo to bring (its SHA-256 and ExternalImageId)."""
    service = _service()
    found = service.list_review_candidates(
        collection, None if status == "ALL" else status, request_id=request_id, case=case,
        max_results=4096, ctx=request_context())
    if as_json:
        emit_json(found)
        return
    for line in table(found["Candidates"]):
        click.echo(line)
    if status == "PENDING":  # conflicts wait for a resolution, not in the pending list
        conflicts = service.list_review_candidates(
            collection, "CONFLICT", request_id=request_id, case=case, max_results=4096,
            ctx=request_context())["Candidates"]
        if conflicts:
            click.echo(f"{len(conflicts)} candidate(s) in CONFLICT (one probe face confirmed as "
                       "different people) wait for `review resolve`: see `review list "
                       "--status CONFLICT`.")


def table(candidates: Sequence[Shape]) -> list[str]:
    """The candidates as text: one block per search (its probe), candidates ranked under it."""
    if not candidates:
        return ["no candidates"]
    searches: dict[str, list[Shape]] = {}
    for c in candidates:
        searches.setdefault(c["RequestId"] or c["CandidateId"], []).append(c)
    lines: list[str] = []
    for group in searches.values():
        first = group[0]
        lines += [
            f"search {first['RequestId'] or '-'}  {first['Operation']} in "
            f"{first['CollectionId']}  case {escape(first['CaseReference'] or '-')}  purpose "
            f"{escape(first['Purpose'] or '-')}",
            f"  searched by {first['RequestedBy']} at {first['CreatedAt'][:19]}Z",
            f"  probe photo: SHA-256 {first['ProbeImageSha256'] or 'not recorded'}",
            f"  {'rank':>4}  {'candidate':<36}  {'status':<12}  {'similarity':>10}  "
            f"{'confirmed':>9}  ExternalImageId",
        ]
        ranked = sorted(group, key=lambda c: (-float(c["Similarity"]), c["CandidateId"]))
        for rank, c in enumerate(ranked, 1):
            confirmed = f"{c['Confirmations']} of {c['ReviewersRequired']}"
            lines += [
                f"  {rank:>4}  {c['CandidateId']:<36}  {c['Status']:<12}  "
                f"{float(c['Similarity']):>10.4f}  {confirmed:>9}  "
                f"{escape(c['ExternalImageId'] or '-')}",
                f"        bring: the enrolled photo with SHA-256 "
                f"{c.get('EnrolledImageSha256') or '(not recorded: inconclusive only)'}"]
            for r in c["Reviews"]:  # by key id: two people may share a name, not a key id
                lines.append(f"        {r['Decision']:<12}  by {r['Reviewer']}  "
                             f"({r['Stage']}, {r['Time'][:16]}): {escape(r['Reason'])}")
            if c.get("ConflictsWith"):
                lines.append(f"        CONFLICT with {', '.join(c['ConflictsWith'])}: one probe "
                             "face confirmed as different people; resolve with `review "
                             "resolve`")
        lines.append("")
    lines.append("The ledger keeps photos' SHA-256, not their file names: bring the files whose "
                 "SHA-256 these are (`collection index --report` lists each file's).")
    return lines


def _decide(candidate: str, decision: str, reason: str, key_id: str | None,
            probe: str | None, enrolled: str | None, features: dict[str, str],
            as_json: bool) -> None:
    service = _service()
    ctx = _who(service, key_id)
    decided = service.review_candidate(
        candidate, decision, reason, ctx=ctx,
        probe_sha256=None if probe is None else file_sha256(Path(probe)),
        enrolled_sha256=None if enrolled is None else file_sha256(Path(enrolled)),
        features=features or None)
    if as_json:
        emit_json(decided)
        return
    click.echo(f"recorded {WORDS[decision]} by {ctx.principal}: candidate "
               f"{decided['CandidateId']} is now {decided['Status']} "
               f"({decided['Confirmations']} of {decided['ReviewersRequired']} confirmations)")
    if features:  # as recorded: in the feature list's order
        recorded = comparison.check_features(features)
        click.echo("features compared: " + ", ".join(f"{k} {v}" for k, v in recorded.items()))
    if decided["ConflictsWith"]:
        click.echo(f"CONFLICT: this probe face is also confirmed as "
                   f"{', '.join(decided['ConflictsWith'])}; no identification stands until "
                   "`faceledger review resolve` settles it")


def _photos(required: bool) -> Callable[[Callable[..., None]], Callable[..., None]]:
    need = "required" if required else "required unless the ledger never hashed that photo"
    probe = click.option("--probe", type=click.Path(exists=True, dir_okay=False),
                         required=required,
                         help=f"The probe photo you compared (its SHA-256 must be the "
                              f"recorded one; {need}).")
    enrolled = click.option("--enrolled", type=click.Path(exists=True, dir_okay=False),
                            required=required,
                            help=f"The enrolled photo you compared ({need}).")
    return lambda fn: probe(enrolled(fn))


def _decision_command(name: str, decision: str, reason_help: str,
                      doc: str) -> Callable[..., None]:
    @review.command(name, help=doc)
    @click.argument("candidate")
    @click.option("--reason", required=True, help=reason_help)
    @_photos(decision != "INCONCLUSIVE")
    @_FEATURE
    @_KEY
    @_TYPED
    @_JSON
    @reports_errors
    def command(candidate: str, reason: str, probe: str | None, enrolled: str | None,
                features: dict[str, str], key_id: str | None, as_json: bool) -> None:
        _decide(candidate, decision, reason, key_id, probe, enrolled, features, as_json)

    return command


_decision_command("confirm", "CONFIRM", "Why the identification is right.",
                  "Confirm a candidate: the same person (names the two photos compared).")
_decision_command("reject", "REJECT", "Why the identification is wrong.",
                  "Reject a candidate: not the same person (names the two photos compared).")
_decision_command("inconclusive", "INCONCLUSIVE", "Why the photos allow no conclusion.",
                  "The pair allows no conclusion (names the two photos compared).")


@review.command("resolve")
@click.argument("candidate")
@click.option("--keep", multiple=True, metavar="CANDIDATE",
              help="A candidate of the conflict that shows the person (repeatable: one person "
                   "enrolled under two ids); the conflict's others are rejected.")
@click.option("--keep-none", is_flag=True,
              help="None stands: every candidate of the conflict becomes INCONCLUSIVE.")
@click.option("--reason", required=True, help="Why this resolution.")
@_KEY
@_JSON
@reports_errors
def review_resolve(candidate: str, keep: tuple[str, ...], keep_none: bool, reason: str,
                   key_id: str | None, as_json: bool) -> None:
    """Resolve a CONFLICT: one probe face confirmed as different people."""
    if bool(keep) == keep_none:
        raise click.UsageError("give --keep CANDIDATE (one or more) or --keep-none")
    service = _service()
    out: Any = service.resolve_review_conflict(candidate, list(keep), reason,
                                               ctx=_who(service, key_id))
    if as_json:
        emit_json(out)
        return
    for cid, status in sorted(out["Statuses"].items()):
        click.echo(f"{cid}  {status}")
