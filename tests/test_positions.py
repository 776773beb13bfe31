"""LSP positions in UTF-16/UTF-8/UTF-32, astral characters, and clamping."""

from __future__ import annotations

import pytest
from lsprotocol.types import Position, PositionEncodingKind

from lsp_server.positions import offset_at, position_at, units

U8, U16, U32 = PositionEncodingKind.Utf8, PositionEncodingKind.Utf16, PositionEncodingKind.Utf32
TEXT = 'a = "😀é" + b\nsecond\r\nthird'  # the emoji is code point 5 of line 0


@pytest.mark.parametrize(
    ("line", "character", "encoding", "offset", "clamped"),
    [
        (0, 0, U16, 0, False),
        (0, 5, U16, 5, False),  # before the emoji
        (0, 7, U16, 6, False),  # after the emoji: 2 UTF-16 units
        (0, 8, U16, 7, False),  # after é
        (0, 6, U32, 6, False),
        (0, 9, U8, 6, False),  # the emoji is 4 UTF-8 bytes
        (0, 11, U8, 7, False),  # é is 2 bytes
        (0, 13, U16, 12, False),  # end of line 0: 12 code points, 13 UTF-16 units
        (0, 99, U16, 12, True),  # past the end of the line: clamp before the newline
        (1, 6, U16, 19, False),
        (1, 50, U16, 19, True),  # CRLF line: clamp before "\r"
        (2, 5, U16, 26, False),
        (9, 0, U16, len(TEXT), True),  # past the last line
    ],
)
def test_offset_at(line: int, character: int, encoding: str, offset: int, clamped: bool) -> None:
    located = offset_at(TEXT, Position(line=line, character=character), encoding)
    assert (located.offset, located.clamped) == (offset, clamped)


@pytest.mark.parametrize(("encoding", "character"), [(U16, 7), (U8, 9), (U32, 6)])
def test_position_round_trip_after_emoji(encoding: str, character: int) -> None:
    assert position_at(TEXT, 6, encoding) == Position(line=0, character=character)
    assert offset_at(TEXT, Position(line=0, character=character), encoding).offset == 6


def test_position_at_clamps() -> None:
    assert position_at(TEXT, 10_000, U16) == Position(line=2, character=5)
    assert position_at("", 3, U16) == Position(line=0, character=0)


def test_empty_document() -> None:
    assert offset_at("", Position(line=0, character=4), U16).offset == 0


@pytest.mark.parametrize(
    ("text", "encoding", "n"), [("😀", U16, 2), ("😀", U8, 4), ("😀", U32, 1), ("é", U8, 2)]
)
def test_units(text: str, encoding: str, n: int) -> None:
    assert units(text, encoding) == n
