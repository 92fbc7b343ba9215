"""The `faceledger` command group and its one error boundary."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import click

from ..context import LOCAL, RequestContext, stated
from ..errors import FaceledgerError, InvalidParameterException
from ..text import logger

P = ParamSpec("P")
R = TypeVar("R")
log = logger("faceledger")


def checked(field: str) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    """A click callback: the option's value through `context.stated` (the same check as the
    HTTP headers' and the console's), a usage error naming the option otherwise."""

    def check(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        try:
            return stated(value, field)
        except InvalidParameterException as exc:
            raise click.BadParameter(exc.message) from exc

    return check


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Log details (and tracebacks) to stderr.")
@click.option("--purpose", default=None, callback=checked("Purpose"),
              help="Purpose recorded in the ledger for this command.")
@click.option("--case", "case", default=None, callback=checked("Case reference"),
              help="Case reference recorded in the ledger.")
@click.option("--consent", default=None, callback=checked("Consent reference"),
              help="Consent reference (IndexFaces under a policy).")
@click.pass_context
def main(ctx: click.Context, verbose: bool, purpose: str | None, case: str | None,
         consent: str | None) -> None:
    """faceledger: self-hosted face recognition with calibrated scores and an audit ledger."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)
    ctx.obj = {"purpose": purpose, "case": case, "consent": consent}


def request_context(**overrides: Any) -> RequestContext:
    """The local operator's context, with the global --purpose/--case/--consent and `overrides`
    (per-command options; None means "not given")."""
    click_ctx = click.get_current_context(silent=True)
    given = dict(click_ctx.find_root().obj or {}) if click_ctx is not None else {}
    given.update({k: v for k, v in overrides.items() if v is not None})
    fields = {k: v for k, v in given.items() if v is not None}
    # a policy's refusal names the option, where it goes: before the command
    command = "" if click_ctx is None else click_ctx.command_path.partition(" ")[2]
    rest = f"{command} ..." if command else "COMMAND ..."
    fields.setdefault("purpose_via", f"`faceledger --purpose TEXT {rest}`")
    fields.setdefault("consent_via", f"`faceledger --consent REF {rest}`")
    return dataclasses.replace(LOCAL, request_id=str(uuid.uuid4()), **fields)


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn faceledger errors into one readable line and exit status 2 (the log keeps details)."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except FaceledgerError as exc:
            log.debug("operation failed", exc_info=True)
            click.echo(f"error: {exc.code}: {exc.message}", err=True)
            sys.exit(2)

    return wrapper


def emit_json(value: Any) -> None:
    """Print a response as indented JSON."""
    click.echo(json.dumps(value, indent=2, default=str))
