"""Stop criteria return reasons; stop strings and line breaks cut text."""

from __future__ import annotations

import threading

import pytest

from model_runtime.stopping import (
    DecodeState,
    cancelled,
    cut_at_stops,
    eos,
    fim_end,
    first_reason,
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
