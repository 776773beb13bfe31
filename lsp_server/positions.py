"""LSP positions <-> offsets into a Python string, in the negotiated position encoding.

Lines end at "\n", "\r\n" or a lone "\r", as LSP says (and as pygls splits the documents it
keeps). Positions past the end of a line clamp to the line's end (before its line break); lines
past the end of the document clamp to the document's end. Offsets count code points.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lsprotocol import types

_LINE_BREAK = re.compile(r"\r\n?|\n")


def units(text: str, encoding: str) -> int:
    """Length of `text` in the encoding's code units."""
    if encoding == types.PositionEncodingKind.Utf8:
        return len(text.encode("utf-8"))
    if encoding == types.PositionEncodingKind.Utf32:
        return len(text)
    return len(text.encode("utf-16-le")) // 2


def _column_to_index(line: str, character: int, encoding: str) -> int:
    """Code-point index on `line` of a column given in code units (clamped to the line)."""
    if encoding == types.PositionEncodingKind.Utf32:
        return min(character, len(line))
    seen = 0
    for index, char in enumerate(line):
        if seen >= character:
            return index
        seen += units(char, encoding)
    return len(line)


def _line_bounds(text: str, line: int) -> tuple[int, int] | None:
    """Start offset and content end (before the line break) of `line`, or None past the end."""
    breaks = _LINE_BREAK.finditer(text)
    start = 0
    for _ in range(line):
        found = next(breaks, None)
        if found is None:
            return None
        start = found.end()
    found = next(breaks, None)
    return start, len(text) if found is None else found.start()


@dataclass(frozen=True)
class Located:
    """An offset for a client position, and whether the position had to be clamped."""

    offset: int
    clamped: bool


def offset_at(text: str, position: types.Position, encoding: str) -> Located:
    """The code-point offset in `text` for `position`."""
    bounds = _line_bounds(text, position.line)
    if bounds is None:
        return Located(len(text), True)
    start, end = bounds
    line = text[start:end]
    index = _column_to_index(line, position.character, encoding)
    return Located(start + index, position.character > units(line, encoding))


def position_at(text: str, offset: int, encoding: str) -> types.Position:
    """The client position of a code-point `offset` in `text`."""
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset)
    line_start = text.rfind("\n", 0, offset) + 1
    if text.find("\r", 0, offset) >= 0:
        # A lone "\r" ends a line too; an offset between "\r" and "\n" counts as after both.
        line += text.count("\r", 0, offset) - text.count("\r\n", 0, offset)
        line_start = max(line_start, text.rfind("\r", line_start, offset) + 1)
    return types.Position(line=line, character=units(text[line_start:offset], encoding))
