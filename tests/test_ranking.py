"""Scores, and scoring a trimmed candidate on the tokens it kept."""

from __future__ import annotations

import math

import pytest

from model_runtime import ranking
from model_runtime.backend import Candidate
from model_runtime.context import CursorContext


def decode(ids: list[int]) -> str:
    return "".join(chr(i) for i in ids)


@pytest.mark.parametrize(
    ("logprobs", "flags", "rejected", "expected"),
    [
        ([-0.2, -0.4], (), False, -0.3),
        ([-0.2, -0.4], ("repetition",), False, -0.8),
        ([-0.2, -0.4], ("repetition", "unfinished"), False, -1.1),
        ([-0.2, -0.4], (), True, -math.inf),
        ([], (), False, -math.inf),
    ],
)
def test_score(
    logprobs: list[float], flags: tuple[str, ...], rejected: bool, expected: float
) -> None:
    assert ranking.score(logprobs, flags, rejected) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "kept", "expected"),
    [
        ("abcd", 4, [-1.0, -2.0, -3.0, -4.0]),
        ("abcd", 2, [-1.0, -2.0]),
        ("abcd", 1, [-1.0]),
        ("abcd", 0, [-1.0]),  # at least the first token
    ],
)
def test_kept_logprobs(text: str, kept: int, expected: list[float]) -> None:
    candidate = Candidate(text, [ord(c) for c in text], [-1.0, -2.0, -3.0, -4.0])
    assert ranking.kept_logprobs(candidate, kept, decode) == expected


def test_kept_logprobs_with_multi_character_tokens() -> None:
    pieces = ["def", " f", "():", "\n", "    x"]
    candidate = Candidate("".join(pieces), [0, 1, 2, 3, 4], [-0.1, -0.2, -0.3, -0.4, -5.0])
    kept = ranking.kept_logprobs(
        candidate, len("def f():"), lambda ids: "".join(pieces[i] for i in ids)
    )
    assert kept == [-0.1, -0.2, -0.3]


def test_kept_logprobs_without_decode_is_every_token() -> None:
    candidate = Candidate("abcd", [1, 2, 3, 4], [-1.0, -2.0, -3.0, -4.0])
    assert ranking.kept_logprobs(candidate, 2, None) == candidate.logprobs


@pytest.mark.parametrize(
    ("before", "text", "copies"),
    [
        ("    x = f()\n    ", "x = f()", True),
        ("    x = f()\n\n", "    x = f()", True),
        ("    x = f()\n", "    y = f()", False),
        ("    }\n", "    }", False),  # no letter or digit: closers repeat legitimately
        ("x = ", "x = ", False),  # mid-line
    ],
)
def test_copies_previous_line(before: str, text: str, copies: bool) -> None:
    assert ranking.copies_previous_line(text, CursorContext(before, "\n")) is copies
