"""The `faceledger` command group and its one error boundary."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import click

from ..errors import FaceledgerError

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger("faceledger")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Log details (and tracebacks) to stderr.")
def main(verbose: bool) -> None:
    """faceledger: self-hosted face recognition with calibrated scores and an audit ledger."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)


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
