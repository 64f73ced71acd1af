"""Log lines that user-supplied values cannot forge.

A display name or command text carrying a newline could otherwise start a fake log line
("...\n2026-11-26 INFO change approved by admin"), and terminal escapes could rewrite what an
operator sees. The formatter escapes every control and format character (Unicode category C*,
which includes newlines, carriage returns, ESC and bidirectional overrides) and the line and
paragraph separators U+2028 and U+2029 in the message as \\n, \\x1b, \\u202e, \\u2028...;
tracebacks that the logging module appends are left as they are.
"""

from __future__ import annotations

import logging
import unicodedata

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR (categories Zl, Zp, not C) end a line in
# many log viewers and in anything that splits with str.splitlines().
LINE_BREAKS = ("\u2028", "\u2029")


def escape_controls(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(_escape(ch) if unicodedata.category(ch)[0] == "C" or ch in LINE_BREAKS else ch for ch in text)


def _escape(ch: str) -> str:
    escaped = repr(ch)[1:-1]
    if escaped != ch:
        return escaped                         # \n, \r, \t, \x1b, \u202e ...
    return f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"


class EscapingFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


def configure_logging(level: str) -> None:
    """Log to stderr through the escaping formatter (used by `mlops-bot serve` and `chat`)."""
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
