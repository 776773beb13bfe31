"""The syntax check: a suggestion must not add parse errors to the code around the cursor."""

from __future__ import annotations

import pytest

from model_runtime import syntax
from model_runtime.context import CursorContext


def check_at(doc: str, language: str) -> syntax.SyntaxCheck:
    before, after = doc.split("|")
    check = syntax.syntax_check(CursorContext(before, after, "f", language))
    assert check is not None, f"no grammar for {language}"
    return check


@pytest.mark.parametrize(
    ("language", "doc", "text", "adds"),
    [
        ("python", "def f(x):\n    y = |\n    return y\n", "x + 1", False),
        ("python", "def f(x):\n|\n    return x\n", "    y = x + 1", False),
        ("python", "def f(x):\n|\n    return x\n", "    y = x +", True),
        ("python", "def f(x):\n|\n    return x\n", "    y = (x + 1", True),
        ("python", "print(|)\n", '"hi"', False),
        ("javascript", "function f(a) {\n  return |\n}\n", "a * 2;", False),
        ("javascript", "function f(a) {\n  return |\n}\n", "a * ;", True),
        ("javascriptreact", "const x = |;\n", "<div>{a}</div>", False),
        ("typescript", "function f(a: number) {\n  return |\n}\n", "a as number;", False),
        ("typescript", "function f(a: number) {\n  return |\n}\n", "a as ;", True),
        ("typescriptreact", "const x = |;\n", "<div>{a}</div>", False),
        ("java", "class A {\n  int f() {\n    return |\n  }\n}\n", "1;", False),
        ("java", "class A {\n  int f() {\n    |\n    return 1;\n  }\n}\n", "int x = ;", True),
        ("go", "package m\n\nfunc f() int {\n\treturn |\n}\n", "1", False),
        ("go", "package m\n\nfunc f() int {\n\treturn |\n}\n", "1 +", True),
        ("rust", "fn f() -> i32 {\n    |\n}\n", "1 + 2", False),
        ("rust", "fn f() -> i32 {\n    |\n}\n", "1 + + {", True),
        ("c", "int f(void) {\n    return |\n}\n", "1;", False),
        ("c", "int f(void) {\n    |\n    return 0;\n}\n", "int x = (1;", True),
        ("cpp", "int f() {\n    return |\n}\n", "std::max(1, 2);", False),
        ("cpp", "int f() {\n    |\n    return 0;\n}\n", "auto x = std::max(1, 2;", True),
    ],
)
def test_adds_errors(language: str, doc: str, text: str, adds: bool) -> None:
    assert check_at(doc, language).adds_errors(text) is adds


def test_fixing_the_code_being_typed_is_not_an_error() -> None:
    check = check_at("def f(x):\n    if x|\n        return 1\n", "python")
    assert check.baseline > 0
    assert not check.adds_errors(":")


def test_a_hole_that_is_already_broken_only_rejects_more_errors() -> None:
    check = check_at("def f(x):\n    y = |\n    return y\n", "python")
    assert check.baseline > 0  # `y = ` alone is an error
    assert not check.adds_errors("x +")  # still one error: not an added one
    assert check.adds_errors("x + (1 +")


def test_replacing_the_auto_closed_bracket() -> None:
    check = check_at("print(|)\n", "python")
    assert not check.adds_errors('"hi")', replace=1)
    assert check.adds_errors('"hi")')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("    y = 1\n    z = 2", "    y = 1\n    z = 2"),
        ("    y = 1\n    z = (2", "    y = 1"),  # the broken last line goes
        ("    y = (\n    z = 2", None),  # no clean prefix of whole lines
    ],
)
def test_longest_clean(text: str, expected: str | None) -> None:
    check = check_at("def f():\n|\n    return 0\n", "python")
    assert check.longest_clean(text) == expected


def test_languages_without_a_grammar_skip_the_check() -> None:
    assert syntax.syntax_check(CursorContext("x", "", "notes.txt", "plaintext")) is None
    assert syntax.syntax_check(CursorContext("x", "", "", "")) is None


def test_window_starts_at_a_top_level_line() -> None:
    lines = ["def g():", *[f"    a{i} = {i}" for i in range(syntax.LINES_BEFORE + 5)]]
    lines += ["def h():", "    b = 1", "    "]
    before, after = syntax.window(CursorContext("\n".join(lines), "\nrest\n"))
    assert before.startswith("def h():")
    assert before.endswith("    b = 1\n    ")
    assert after == "\nrest\n"


@pytest.mark.parametrize("language", sorted(syntax.GRAMMARS))
def test_every_mapped_language_has_a_grammar(language: str) -> None:
    assert syntax.parser_for(language) is not None
