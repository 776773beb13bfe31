"""Stop criteria return reasons; stop strings and line breaks cut text."""

from __future__ import annotations

import threading

import pytest

from model_runtime import trimming
from model_runtime.context import cursor_context
from model_runtime.postprocess import Policy, block_cut
from model_runtime.stopping import (
    DecodeState,
    cancelled,
    cut_at_stops,
    cut_settled,
    eos,
    fim_end,
    first_reason,
    looping_line,
    max_tokens,
    single_line,
    stop_strings,
    suffix_line,
)


@pytest.mark.parametrize(
    ("criterion", "state", "reason"),
    [
        (eos({0}), DecodeState([5, 0], "ab"), "eos"),
        (eos({0}), DecodeState([0, 5], "ab"), None),
        (eos({0}), DecodeState([], ""), None),
        (fim_end({7, 8}), DecodeState([8], ""), "fim_end"),
        (stop_strings(["\ndef "]), DecodeState([1], "x\ndef g"), "stop_string"),
        (stop_strings(["\ndef ", ""]), DecodeState([1], "x\nde"), None),
        (single_line(), DecodeState([1], "abc"), None),
        (single_line(), DecodeState([1], "abc\n"), "newline"),
        (looping_line(), DecodeState([1], "x" + ".types" * 6), "loop"),
        (looping_line(), DecodeState([1], "x" + ".types" * 5), None),  # 30 characters
        (looping_line(), DecodeState([1], "import getmemberspec(*" + "spec(*" * 5), "loop"),
        (looping_line(), DecodeState([1], "a\n" + "f(" * 20), "loop"),
        (looping_line(), DecodeState([1], "f(" * 20 + "\nx = 1"), None),  # a line that ended
        (looping_line(), DecodeState([1], "ab" * 16 + "c"), None),  # broke out of it
        (looping_line(), DecodeState([1], "=" + "ab" * 16), "loop"),
        (looping_line(), DecodeState([1], "=" + "ab" * 15), None),  # 30 characters
        (looping_line(), DecodeState([1], "ab\n" * 12), None),  # repeated lines: not a loop
        (looping_line(), DecodeState([1], "x" + "getmemberspec(*" * 3 + "getmem"), None),
        (looping_line(), DecodeState([1], "x = " + "None, " * 4 + "None"), None),  # 3.7 copies
        (looping_line(), DecodeState([1], "grid = [" + "0, " * 30), None),  # no letter
        (looping_line(), DecodeState([1], "s = '" + "a" * 40), None),  # one character
        (max_tokens(2), DecodeState([1], "a"), None),
        (max_tokens(2), DecodeState([1, 2], "ab"), "max_tokens"),
    ],
)
def test_criterion(criterion, state: DecodeState, reason: str | None) -> None:
    assert criterion(state) == reason


def test_cancelled_fires_once_set() -> None:
    event = threading.Event()
    criterion = cancelled(event)
    assert criterion(DecodeState()) is None
    event.set()
    assert criterion(DecodeState()) == "cancelled"


def test_first_reason_keeps_order() -> None:
    state = DecodeState([0, 1], "a\n")
    assert first_reason([single_line(), max_tokens(2)], state) == "newline"
    assert first_reason([max_tokens(2), single_line()], state) == "max_tokens"
    assert first_reason([max_tokens(9)], state) is None


@pytest.mark.parametrize(
    ("text", "stops", "one_line", "expected"),
    [
        ("return x\nfoo", (), True, "return x"),
        ("return x\nfoo", (), False, "return x\nfoo"),
        ("a<|endoftext|>b", ("<|endoftext|>",), False, "a"),
        ("a\nb<eot>", ("<eot>",), True, "a"),
        ("a<x>b<y>", ("<y>", "<x>"), False, "a"),
        ("\nnext", (), True, ""),
        ("", (), True, ""),
    ],
)
def test_cut_at_stops(text: str, stops: tuple[str, ...], one_line: bool, expected: str) -> None:
    assert cut_at_stops(text, stops, one_line) == expected


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("x = 1\n    return total\n", "    return total", "suffix_line"),
        ("x = 1\nreturn total\n", "    return total", "suffix_line"),  # up to indentation
        ("x = 1\n    return total", "    return total", None),  # not finished yet
        ("x = 1\n    return totals\n", "    return total", None),
        ("x = 1\n\n", "", None),  # nothing follows the cursor
    ],
)
def test_suffix_line(text: str, line: str, reason: str | None) -> None:
    assert suffix_line(line)(DecodeState(text=text)) == reason


@pytest.mark.parametrize(
    "line",
    ["x" + ".types" * 7, "from x import getmemberspec(*getmemberspec(*" + "getmemberspec(*" * 3],
)
def test_a_loop_stops_where_trimming_would_keep_the_same_text(line: str) -> None:
    """Decoding stops at the first length where the criterion fires; trimming that shorter
    text keeps what it keeps of the whole line."""
    criterion = looping_line()
    stop = next(n for n in range(1, len(line) + 1) if criterion(DecodeState([1], line[:n])))
    assert stop < len(line)
    assert trimming.cut_looping_line(line[:stop]) == trimming.cut_looping_line(line)


BODY = "def f(x):\n    y = 1\n    \n    return y\n"
ON_EMPTY_LINE = cursor_context(BODY, BODY.index("    \n") + 4, "a.py")  # one statement welcome


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("z = 2", None),
        ("z = 2\n", None),  # the line after it not begun
        ("z = 2\n    w", None),  # nor finished
        ("z = 2\n    w = 3\n", "cut"),  # a finished line dropped: nothing to come changes it
        ("z = f(\n        1)\n    w = 3\n", "cut"),  # the statement took two lines
        ("if z:\n        w = 1\n    ", None),  # its block may go on
        ("if z:\n        w = 1\n    el", None),  # `elif` would continue it
        ("if z:\n        w = 1\n    q = 2\n", "cut"),
        ("\n\n", None),  # nothing kept
    ],
)
def test_decoding_stops_once_trimmings_block_cuts_are_settled(
    text: str, reason: str | None
) -> None:
    criterion = cut_settled(block_cut(ON_EMPTY_LINE, Policy()))
    assert criterion(DecodeState([1], text)) == reason
    assert cut_settled(None)(DecodeState([1], text)) is None
