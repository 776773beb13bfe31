"""Property tests: the server keeps documents in sync under incremental edits, and `positions`
maps LSP positions to offsets and back the way the LSP spec says.

LSP line terminators are exactly `\\n`, `\\r\\n` and `\\r`; a position is (line, character in
code units of the negotiated encoding) and can never point between `\\r` and `\\n`. The expected
values here come from the small reference functions below, not from the code under test.

pygls 2.1.1 alone splits lines with `str.splitlines`, which also breaks on `\\v`, `\\f`,
`\\x1c`-`\\x1e`, `\\x85`, `\\u2028` and `\\u2029`, so an edit after one of those landed on
the wrong line; the server keeps `lsp_server.documents.LspWorkspace` documents instead, and those
characters are in the alphabet here.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from lsprotocol import types

from lsp_server.documents import LspWorkspace
from lsp_server.positions import offset_at, position_at

U8 = types.PositionEncodingKind.Utf8
U16 = types.PositionEncodingKind.Utf16
U32 = types.PositionEncodingKind.Utf32
ENCODINGS = [U8, U16, U32]
URI = "file:///project/example.py"
MAX_UINTEGER = 2**31 - 1  # lsprotocol rejects larger line/character values

# "\r\n" is one token so that CRLF pairs are common; lone "\r" and "\n" also meet by chance.
TOKENS = ["a", "b", "_", " ", "(", "\t", "\n", "\r", "\r\n", "\f", "\x85", "é", "中", "😀", "𝔘"]
TEXTS = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)
SMALL_TEXTS = st.lists(st.sampled_from(TOKENS), max_size=6).map("".join)

_LSP_BREAK = re.compile(r"\r\n|\r|\n")
FAST = settings(max_examples=800, deadline=None)


# Reference model of the spec --------------------------------------------------------------------


def ref_units(text: str, encoding: str) -> int:
    """Length of `text` in code units: UTF-8 bytes, UTF-16 units or code points."""
    if encoding == U8:
        return len(text.encode("utf-8"))
    if encoding == U16:
        return sum(2 if ord(char) > 0xFFFF else 1 for char in text)
    return len(text)


def ref_lines(text: str) -> list[tuple[int, int]]:
    """(start, end before the line break) of every LSP line; a text always has one line."""
    lines: list[tuple[int, int]] = []
    start = 0
    for match in _LSP_BREAK.finditer(text):
        lines.append((start, match.start()))
        start = match.end()
    lines.append((start, len(text)))
    return lines


def ref_boundaries(text: str) -> list[int]:
    """Every offset an LSP position can name: all of them except between `\\r` and `\\n`."""
    return [
        offset
        for offset in range(len(text) + 1)
        if not (0 < offset < len(text) and text[offset - 1 : offset + 1] == "\r\n")
    ]


def ref_position(text: str, offset: int, encoding: str) -> types.Position:
    """The position of a boundary `offset`."""
    for number, (start, end) in enumerate(ref_lines(text)):
        if start <= offset <= end:
            return types.Position(line=number, character=ref_units(text[start:offset], encoding))
    raise AssertionError(f"offset {offset} is inside a line break")


def ref_column_offsets(text: str, start: int, end: int, encoding: str) -> dict[int, int]:
    """Code unit column -> offset, for every character boundary on the line [start, end)."""
    columns = {0: start}
    column = 0
    for offset in range(start, end):
        column += ref_units(text[offset], encoding)
        columns[column] = offset + 1
    return columns


def ref_offset(text: str, position: types.Position, encoding: str) -> int:
    """The offset of a valid position at a character boundary."""
    start, end = ref_lines(text)[position.line]
    return ref_column_offsets(text, start, end, encoding)[position.character]


# 1. Incremental sync as the server applies it ----------------------------------------------------


class IncrementalSync(RuleBasedStateMachine):
    """The server's workspace against a reference string, under random LSP edits."""

    def __init__(self) -> None:
        super().__init__()
        self.reference = ""
        self.encoding: str = U16
        self.version = 0
        self.workspace = LspWorkspace(None)

    @initialize(encoding=st.sampled_from(ENCODINGS), text=TEXTS)
    def open_document(self, encoding: str, text: str) -> None:
        """didOpen, in a workspace that negotiated `encoding`."""
        self.encoding = encoding
        self.workspace = LspWorkspace(
            root_uri=None,
            sync_kind=types.TextDocumentSyncKind.Incremental,
            position_encoding=encoding,
        )
        self.workspace.put_text_document(
            types.TextDocumentItem(uri=URI, language_id="python", version=0, text=text)
        )
        self.reference = text

    def _draw_offset(self, data: st.DataObject, at_least: int = 0) -> int:
        """An offset a client position can name, at or after `at_least`."""
        return data.draw(
            st.sampled_from([o for o in ref_boundaries(self.reference) if o >= at_least])
        )

    def _apply(self, start: int, end: int, text: str) -> None:
        """Send the edit [start, end) -> text as the client would, and apply it to the reference."""
        change = types.TextDocumentContentChangePartial(
            range=types.Range(
                start=ref_position(self.reference, start, self.encoding),
                end=ref_position(self.reference, end, self.encoding),
            ),
            text=text,
        )
        self.version += 1
        self.workspace.update_text_document(
            types.VersionedTextDocumentIdentifier(uri=URI, version=self.version), change
        )
        self.reference = self.reference[:start] + text + self.reference[end:]

    @rule(data=st.data(), text=SMALL_TEXTS.filter(bool))
    def insert(self, data: st.DataObject, text: str) -> None:
        """Typing or pasting: an empty range."""
        offset = self._draw_offset(data)
        self._apply(offset, offset, text)

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        """Deleting a range, possibly empty, possibly across lines."""
        start = self._draw_offset(data)
        self._apply(start, self._draw_offset(data, start), "")

    @rule(data=st.data(), text=SMALL_TEXTS)
    def replace(self, data: st.DataObject, text: str) -> None:
        """Replacing a range with new text."""
        start = self._draw_offset(data)
        self._apply(start, self._draw_offset(data, start), text)

    @rule(text=TEXTS)
    def replace_whole_document(self, text: str) -> None:
        """A change without a range: the whole new text."""
        self.version += 1
        self.workspace.update_text_document(
            types.VersionedTextDocumentIdentifier(uri=URI, version=self.version),
            types.TextDocumentContentChangeWholeDocument(text=text),
        )
        self.reference = text

    @rule(data=st.data())
    def completion_cursor(self, data: st.DataObject) -> None:
        """The server's cursor mapping agrees with the client on the synced document."""
        offset = self._draw_offset(data)
        position = ref_position(self.reference, offset, self.encoding)
        source = self.workspace.get_text_document(URI).source
        located = offset_at(source, position, self.encoding)
        assert (located.offset, located.clamped) == (offset, False)
        assert position_at(source, located.offset, self.encoding) == position

    @invariant()
    def in_sync(self) -> None:
        """The server's copy is the client's."""
        assert self.workspace.get_text_document(URI).source == self.reference


TestIncrementalSync = IncrementalSync.TestCase
TestIncrementalSync.settings = settings(
    max_examples=300,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize(
    "separator", ["\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
)
def test_only_lsp_line_breaks_end_lines(separator: str) -> None:
    """Only \\n, \\r\\n and \\r end an LSP line; pygls alone also broke at these.

    `a<sep>b\\nc` has two LSP lines, so (1, 0) is before `c`; pygls put the edit before `b`.
    Form feeds are real in source files (page breaks), so this is not only theoretical.
    """
    workspace = LspWorkspace(root_uri=None, sync_kind=types.TextDocumentSyncKind.Incremental)
    text = f"a{separator}b\nc"
    workspace.put_text_document(
        types.TextDocumentItem(uri=URI, language_id="python", version=0, text=text)
    )
    at = types.Position(line=1, character=0)
    workspace.update_text_document(
        types.VersionedTextDocumentIdentifier(uri=URI, version=1),
        types.TextDocumentContentChangePartial(range=types.Range(start=at, end=at), text="X"),
    )
    assert workspace.get_text_document(URI).source == f"a{separator}b\nXc"


# 2. lsp_server.positions -------------------------------------------------------------------------


def _coordinates() -> st.SearchStrategy[int]:
    """Line or character numbers: mostly near a short text's range, sometimes huge."""
    return st.one_of(st.integers(0, 12), st.integers(0, MAX_UINTEGER), st.just(MAX_UINTEGER))


@FAST
@given(
    text=TEXTS,
    line=_coordinates(),
    character=_coordinates(),
    encoding=st.sampled_from(ENCODINGS),
)
def test_offset_at_any_position(text: str, line: int, character: int, encoding: str) -> None:
    """Any position maps into the text; clamped exactly when it is past its line or the end."""
    located = offset_at(text, types.Position(line=line, character=character), encoding)
    assert 0 <= located.offset <= len(text)
    lines = ref_lines(text)
    if line >= len(lines):
        assert (located.offset, located.clamped) == (len(text), True)
        return
    start, end = lines[line]
    if character > ref_units(text[start:end], encoding):
        assert (located.offset, located.clamped) == (end, True)
        return
    assert not located.clamped
    columns = ref_column_offsets(text, start, end, encoding)
    if character in columns:
        assert located.offset == columns[character]
    else:  # inside a surrogate pair or a multi-byte UTF-8 sequence: either neighbour will do
        below = max(column for column in columns if column < character)
        above = min(column for column in columns if column > character)
        assert columns[below] <= located.offset <= columns[above]


@FAST
@given(data=st.data(), text=TEXTS, encoding=st.sampled_from(ENCODINGS))
def test_positions_round_trip(data: st.DataObject, text: str, encoding: str) -> None:
    """A boundary's position maps back to it, and position_at(offset_at(p)) == p."""
    offset = data.draw(st.sampled_from(ref_boundaries(text)))
    position = ref_position(text, offset, encoding)
    assert ref_offset(text, position, encoding) == offset  # the reference agrees with itself
    located = offset_at(text, position, encoding)
    assert (located.offset, located.clamped) == (offset, False)
    assert position_at(text, offset, encoding) == position
    assert position_at(text, located.offset, encoding) == position


@FAST
@given(
    data=st.data(),
    text=TEXTS,
    encoding=st.sampled_from(ENCODINGS),
    line=st.integers(0, 12),
)
def test_inner_characters_round_trip(
    data: st.DataObject, text: str, encoding: str, line: int
) -> None:
    """Through a UTF-16 surrogate pair or UTF-8 sequence, offset_at then position_at is stable."""
    lines = ref_lines(text)
    start, end = lines[min(line, len(lines) - 1)]
    character = data.draw(st.integers(0, ref_units(text[start:end], encoding)))
    position = types.Position(line=min(line, len(lines) - 1), character=character)
    offset = offset_at(text, position, encoding).offset
    snapped = position_at(text, offset, encoding)
    assert snapped.line == position.line
    assert offset_at(text, snapped, encoding).offset == offset


@FAST
@given(
    text=TEXTS,
    offset=st.one_of(st.integers(-5, 60), st.integers(-(2**40), 2**40)),
    encoding=st.sampled_from(ENCODINGS),
)
def test_position_at_any_offset(text: str, offset: int, encoding: str) -> None:
    """Any offset, even negative, huge or between \\r and \\n, gives a valid client position."""
    position = position_at(text, offset, encoding)
    lines = ref_lines(text)
    assert 0 <= position.line < len(lines)
    start, end = lines[position.line]
    assert 0 <= position.character <= ref_units(text[start:end], encoding)
    clamped = max(0, min(offset, len(text)))
    if clamped in ref_boundaries(text):
        assert position == ref_position(text, clamped, encoding)
