"""Errors that point at the source: `file:line:col: message`, the line, a caret."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_INT = 2**62  # the largest integer a program, a hyperparameter, a literal or a size may hold


@dataclass(frozen=True)
class Loc:
    """A position in a source file (1-based line and column)."""

    file: str
    line: int
    column: int
    source_line: str = field(default="", repr=False, compare=False)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class CnncError(Exception):
    """Every user-facing failure of cnnc: a message, optionally located in a source file.

    `str(err)` gives `file:line:col: message`, then the source line and a caret
    under the column, so that a terminal shows exactly where the mistake is.
    """

    def __init__(self, message: str, loc: Loc | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc

    @property
    def file(self) -> str | None:
        return self.loc.file if self.loc else None

    @property
    def line(self) -> int | None:
        return self.loc.line if self.loc else None

    @property
    def column(self) -> int | None:
        return self.loc.column if self.loc else None

    def __str__(self) -> str:
        message = shorten(self.message)
        if self.loc is None:
            return escape(message)
        text = escape(f"{self.loc}: {message}")
        if self.loc.source_line:
            line, caret = quote_line(self.loc.source_line, self.loc.column)
            text += f"\n    {line}\n    {' ' * caret}^"
        return text


QUOTE_WIDTH = 100  # characters of a long source line shown around the column
MESSAGE_WIDTH = 1000  # a message quoting a huge name or value is cut to about this


def shorten(message: str) -> str:
    """The message, its middle cut out when it is absurdly long (the end often holds a suggestion)."""
    if len(message) <= MESSAGE_WIDTH:
        return message
    tail = MESSAGE_WIDTH // 5
    return f"{message[: MESSAGE_WIDTH - tail]} ... {message[-tail:]}"


def escape(text: str) -> str:
    """The text with characters a terminal would act on (escape codes, bells) written as escapes, e.g. \\x1b.

    Programs and file names reach messages, so they could otherwise drive the
    terminal; the line breaks of a multi-line message are kept.
    """
    if text.isprintable():  # the usual case, checked at C speed
        return text
    return "".join(c if c.isprintable() or c == "\n" else c.encode("unicode_escape").decode("ascii") for c in text)


def quote_line(source_line: str, column: int) -> tuple[str, int]:
    """The source line as printed under a message, and the caret's offset in it.

    Tabs are expanded; characters a terminal would not show as one visible
    character become '?'; a long line is cut to a window around the column,
    with '...' marking the cuts, so an error never re-prints a huge line.
    """
    index = max(0, min(column - 1, len(source_line)))
    start = max(0, index - QUOTE_WIDTH // 2)
    end = min(len(source_line), start + QUOTE_WIDTH)
    start = max(0, min(start, end - QUOTE_WIDTH))
    window = _printable(source_line[start:end])
    # The caret must land under the same character after tab expansion.
    caret = len(window[: index - start].expandtabs(4))
    head = "..." if start > 0 else ""
    tail = "..." if end < len(source_line) else ""
    return head + window.expandtabs(4) + tail, len(head) + caret


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() or c == "\t" else "?" for c in text)


def closest(name: str, choices) -> str:
    """A ' did you mean ...?' suffix naming the closest choice, or ''."""
    import difflib

    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""
