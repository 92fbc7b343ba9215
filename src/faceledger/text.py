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

import json
import logging
import unicodedata
from typing import Any

from .errors import InvalidParameterException

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


# -- text people write into the record: one check at input, one neutraliser at display ----------

# Unicode categories refused in reasons, purposes, case ids and key names, and shown escaped
# wherever stored text is displayed: controls (NUL, BEL, ESC, DEL, C1), format characters
# (bidirectional embeddings, overrides, isolates and marks - U+202E shows "eht era yeht" as
# "they are the" - and invisible ones: zero-width space, soft hyphen, BOM, tags), line and
# paragraph separators, surrogates, and unassigned code points (non-characters included).
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"})
# Zero-width non-joiner and joiner: needed to write Persian, Indic scripts and emoji correctly,
# and they reorder nothing, so prose (reasons, purposes) may hold them; identifiers (case ids,
# key names) may not (two names that look alike must not be two different names).
JOINERS = frozenset({"\u200c", "\u200d"})
LINE_BREAKS = frozenset({"\n", "\t"})  # kept in multi-line prose (a reason's paragraphs)


def refused_char(ch: str, *, prose: bool = False, lines: bool = False) -> bool:
    """Whether `ch` is refused in text people write (see UNSAFE_CATEGORIES)."""
    if lines and ch in LINE_BREAKS or prose and ch in JOINERS:
        return False
    return unicodedata.category(ch) in UNSAFE_CATEGORIES


def check_text(value: Any, field: str, *, max_chars: int, prose: bool = False,
               lines: bool = False, required: bool = True) -> str:
    """`value` as stored: stripped (CR LF as LF where `lines`), or InvalidParameterException
    naming the first refused character and where it is. `prose` allows the joiners (reasons,
    purposes), `lines` line breaks and tabs (reasons). The one check for text that people read
    back from the record: reasons, purposes, case ids, key names."""
    if not isinstance(value, str):
        raise InvalidParameterException(f"{field} must be text.")
    text = value.replace("\r\n", "\n") if lines else value
    text = text.strip()
    if not text and required:
        raise InvalidParameterException(f"{field} is required.")
    if len(text) > max_chars:
        raise InvalidParameterException(f"{field} must be at most {max_chars} characters.")
    for i, ch in enumerate(text):
        if refused_char(ch, prose=prose, lines=lines):
            name = unicodedata.name(ch, "a control character" if unicodedata.category(ch) == "Cc"
                                    else "an unassigned or invisible character")
            raise InvalidParameterException(
                f"{field} contains U+{ord(ch):04X} ({name}) at character {i + 1}: control, "
                "bidirectional and invisible formatting characters are refused (they can hide "
                "or reorder what a reader sees).")
    return text


def visible(text: str) -> str:
    """`text` for display: every character `check_text` refuses (line breaks and tabs aside)
    shown as its escape (`\\u202e`), so text stored before the check reads as it was typed,
    never reordered, hidden or cut; everything else unchanged."""
    if text.isprintable():
        return text  # the common case, fast (nothing printable is refused)
    out: list[str] = []
    for ch in text:
        if ch in LINE_BREAKS or not refused_char(ch):
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON writes astral characters as a UTF-16 surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def safe_json(value: Any, **options: Any) -> str:
    """JSON for a reader (exports, downloads, event pages): UTF-8 text kept readable, every
    character `visible` would escape written as its JSON escape (the same string once parsed)."""
    raw = json.dumps(value, ensure_ascii=False, **options)
    if raw.isprintable() or raw.isascii():  # json.dumps escapes ASCII controls itself
        return raw
    return "".join(_json_escape(ch) if ch not in LINE_BREAKS and refused_char(ch) else ch
                   for ch in raw)


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
