"""Cleaning candidates and placing them against the text right of the cursor."""

from __future__ import annotations

import pytest

from model_runtime.backend import Candidate
from model_runtime.context import cursor_context
from model_runtime.postprocess import clean_text, overlap_with_line_suffix, to_suggestions


@pytest.mark.parametrize(
    ("raw", "one_line", "expected"),
    [
        ("foo()   \nbar", True, "foo()"),
        ("foo()\n    bar()  \n\n\n", False, "foo()\n    bar()"),
        ("  x = 1", True, "  x = 1"),
        ("a<|endoftext|>junk", False, "a"),
        ("\n\n", False, ""),
    ],
)
def test_clean_text(raw: str, one_line: bool, expected: str) -> None:
    assert clean_text(raw, ("<|endoftext|>",), one_line) == expected


@pytest.mark.parametrize(
    ("text", "line_suffix", "replace"),
    [
        ('"hi")', ")", 1),  # re-types the auto-closed bracket
        ('"hi"', ")", 0),  # leaves it: plain insert
        ("a, b):", "):", 2),
        ("x", "", 0),
        ("x)", ")  ", 3),  # trailing spaces after the bracket go too
        ("foo(\n    a,\n)", ")", 1),  # block that ends with the bracket
    ],
)
def test_overlap_with_line_suffix(text: str, line_suffix: str, replace: int) -> None:
    assert overlap_with_line_suffix(text, line_suffix) == replace


def test_to_suggestions_ranks_cleans_and_dedupes() -> None:
    ctx = cursor_context("print()\n", 6)
    candidates = [
        Candidate("'a')\nmore", [1, 2], [-2.0, -2.0]),
        Candidate("'b')", [1, 2], [-0.1, -0.3]),
        Candidate("'b')  ", [1, 2, 3], [-0.5, -0.5, -0.5]),
        Candidate("   ", [1], [-0.01]),
        Candidate("", [], []),
    ]
    out = to_suggestions(candidates, ctx, (), one_line=True)
    assert [(s.text, s.replace) for s in out] == [("'b')", 1), ("'a')", 1)]
    assert out[0].score == pytest.approx(-0.2)
