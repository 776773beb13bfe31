"""Cursor context and the single-line / multi-line decision."""

from __future__ import annotations

import pytest

from model_runtime.context import (
    CursorContext,
    cursor_context,
    language_for_path,
    next_code_line,
    wants_multiline,
)


def test_split_and_line_parts() -> None:
    ctx = cursor_context("a = 1\nprint(x)\r\nz", 12, "src/m.py")
    assert (ctx.prefix, ctx.suffix) == ("a = 1\nprint(", "x)\r\nz")
    assert (ctx.line_prefix, ctx.line_suffix) == ("print(", "x)")
    assert ctx.language == "python"


@pytest.mark.parametrize("offset", [-5, 10_000])
def test_offset_is_clamped(offset: int) -> None:
    ctx = cursor_context("abc", offset)
    assert ctx.prefix + ctx.suffix == "abc"


@pytest.mark.parametrize(
    ("before", "after", "mode", "multiline"),
    [
        ("x = foo(", ")\n", "auto", False),  # mid-line before real text
        ("def f():\n    ", "\n", "auto", True),  # empty line
        ("def f():", "\n", "auto", True),  # after a block opener
        ("if (x) {", "\n}", "auto", True),
        ("x = 1 + ", "\n", "auto", False),  # typing on a line
        ("x = 1 + ", "\n", "always", True),
        ("def f():\n    ", "\n", "never", False),
        ("foo(", "   \n", "auto", True),  # only spaces after the cursor
    ],
)
def test_wants_multiline(before: str, after: str, mode: str, multiline: bool) -> None:
    ctx = cursor_context(before + after, len(before))
    assert wants_multiline(ctx, mode) is multiline  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "language"), [("a/b.py", "python"), ("X.TS", "typescript"), ("Makefile", ""), ("", "")]
)
def test_language_for_path(path: str, language: str) -> None:
    assert language_for_path(path) == language


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [
        ("\n    return total\n", "    return total"),
        (")\n\n  }\n    y = 2\r\n", "    y = 2"),  # the cursor's own line and lone brackets skipped
        ("\n\n", ""),
        ("", ""),
    ],
)
def test_next_code_line(suffix: str, expected: str) -> None:
    assert next_code_line(CursorContext("x = f(", suffix)) == expected
