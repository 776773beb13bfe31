"""LSP positions <-> offsets into a Python string, in the negotiated position encoding.

Positions past the end of a line clamp to the line's end (before its line break); lines past the
end of the document clamp to the document's end. Offsets count code points.
"""

from __future__ import annotations

from dataclasses import dataclass

from lsprotocol import types


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
    start = 0
    for _ in range(line):
        newline = text.find("\n", start)
        if newline < 0:
            return None
        start = newline + 1
    end = text.find("\n", start)
    end = len(text) if end < 0 else end
    if end > start and text[end - 1] == "\r":
        end -= 1
    return start, end


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
    return types.Position(line=line, character=units(text[line_start:offset], encoding))
