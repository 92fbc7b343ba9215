"""The one place caller-supplied values are rendered into messages and log lines.

A value a caller chose (a collection id that failed validation, a header, an object name) must
never reach a log as a line break, a terminal escape or a bidi override: `shown` escapes every
character Python does not call printable - controls, format characters (bidi overrides,
zero-width), line and paragraph separators, spaces other than ' ' (NBSP), unassigned and
surrogate code points - the way string literals do (`\\n`, `\\x1b`, `\\u2028`), and clips
long values, so one request is always one log line and a message shows what was sent without
acting on the reader. `EscapingFilter` applies the same rendering to
every record of a logger, for the values a message forgot to pass through `shown`; every
faceledger module gets its logger from `logger()`, which installs it, so there is one escaping
path for every logger (a logger's filters do not see its children's records, hence one per
logger, and tests/test_probe_two.py checks no module calls logging.getLogger itself).
"""

from __future__ import annotations

import logging
from typing import Any

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def escape(text: str) -> str:
    """`text` with every unsafe character escaped (and backslashes doubled), nothing clipped."""
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text  # the common case, fast
    out: list[str] = []
    for ch in text:
        named = _NAMED.get(ch)
        if named is not None:
            out.append(named)
        elif not ch.isprintable():
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def shown(value: Any, limit: int = 80) -> str:
    """A caller-supplied value as it may appear in a message or log: escaped, at most `limit`
    characters of the value (then "...")."""
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value[: limit + 1]).decode("utf-8", "backslashreplace")
    else:
        text = value if isinstance(value, str) else repr(value)
    clipped = len(text) > limit
    return escape(text[:limit]) + ("..." if clipped else "")


class EscapingFilter(logging.Filter):
    """Renders each record's message once, escaped, so no argument can forge a log line.

    Tracebacks (exc_info) are formatted by the handler after this and keep their line breaks:
    they are ours, not the caller's.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the record
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = escape(message)
        record.args = None
        return True


def logger(name: str) -> logging.Logger:
    """The logger `name`, with every record escaped (use this, not logging.getLogger)."""
    install_log_escaping(name)
    return logging.getLogger(name)


def install_log_escaping(logger_name: str) -> None:
    """Escape every record logged through the logger `logger_name` (idempotent; a logger's
    filters see only its own records, not its children's)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, EscapingFilter) for f in logger.filters):
        logger.addFilter(EscapingFilter())
