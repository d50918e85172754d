"""Errors that point at the source: `file:line:col: message`, the line, a caret."""

from __future__ import annotations

from dataclasses import dataclass, field


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
        if self.loc is None:
            return self.message
        text = f"{self.loc}: {self.message}"
        if self.loc.source_line:
            line = self.loc.source_line.expandtabs(4)
            # The caret must land under the same character after tab expansion.
            prefix = self.loc.source_line[: self.loc.column - 1].expandtabs(4)
            text += f"\n    {line}\n    {' ' * len(prefix)}^"
        return text


def closest(name: str, choices) -> str:
    """A ' did you mean ...?' suffix naming the closest choice, or ''."""
    import difflib

    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""
