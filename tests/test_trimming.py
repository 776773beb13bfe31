"""Each trimming filter on a table of cases: the text before and after the cursor, the input, the
expected output. `|` marks the cursor in `doc`."""

from __future__ import annotations

import pytest

from model_runtime import trimming
from model_runtime.context import CursorContext


def at(doc: str, language: str = "python") -> CursorContext:
    before, after = doc.split("|")
    return CursorContext(before, after, "file", language)


@pytest.mark.parametrize(
    ("doc", "language", "text", "expected"),
    [
        ("print(|)\n", "python", '"hi")', ('"hi")', 1)),  # re-types the auto-closed bracket
        ("print(|)\n", "python", '"hi"', ('"hi"', 0)),  # leaves it: plain insert
        ("print(|)\n", "python", "f(a)", ("f(a)", 0)),  # its `)` is its own
        ("print(|)\n", "python", "g(1), h(2)", ("g(1), h(2)", 0)),
        ("print(|)\n", "python", '"hi"))', ('"hi")', 1)),  # one `)` too many: cut
        ('print("|")\n', "python", 'hello")', ('hello")', 2)),  # closes the string too
        ('x = "|"\n', "python", 'a" + "b"', ('a" + "b"', 1)),
        ("foo(|, b)\n", "python", "a)", ("a", 0)),  # closes what the line still needs
        ("x = foo(|a, b)\n", "python", "x, a, b)", ("x, a, b)", 5)),  # re-types the rest
        ("if (a|) {\n", "javascript", " && b) {", (" && b) {", 3)),
        ("x = [1, 2|]\n", "python", ", 3]", (", 3]", 1)),
        ("foo(|)\n", "python", "a):", ("a):", 1)),  # re-types `)`, then goes on
        ("foo(|)  \n", "python", "x)", ("x)", 3)),  # trailing blanks after it go too
        ("foo(|)\n", "python", "x", ("x", 0)),
        ("x = |\n", "python", "1", ("1", 0)),  # nothing after the cursor
        ("fn f(x: &|)\n", "rust", "'a str)", ("'a str)", 1)),  # `'a` is a lifetime
        ("f(|) // note\n", "javascript", "a) // note", ("a) // note", 9)),
        ("s = f'{|}'\n", "python", "x}'", ("x}'", 2)),
    ],
)
def test_fit_line_suffix(doc: str, language: str, text: str, expected: tuple[str, int]) -> None:
    assert trimming.fit_line_suffix(text, at(doc, language)) == expected


@pytest.mark.parametrize(
    ("doc", "text", "replace", "no_op"),
    [
        ("foo(|)\n", ")", 1, True),
        ("foo(|)\n", "a)", 1, False),
        ("x = |\n", "", 0, True),
    ],
)
def test_is_no_op(doc: str, text: str, replace: int, no_op: bool) -> None:
    assert trimming.is_no_op(text, replace, at(doc)) is no_op


@pytest.mark.parametrize(
    ("doc", "text", "expected"),
    [
        ("def f(x):\n|\n    return x\n", "    return x", ""),  # the line below, again
        ("def f(x):\n|\n    return x\n", "    y = x\n    return x", "    y = x"),
        ("def f(x):\n|\n\n    return x\n", "    return x", ""),  # blank lines in between
        ("def f(x):\n    |\n    return x\n", "return x", ""),  # composed with the indentation
        ("int f() {\n|\n    return x;\n}\n", "    x++;\n    return x;\n}", "    x++;"),
        ("a = 1\n|\nb = 2\nc = 3\n", "b = 2\nc = 3\nd = 4", ""),  # two lines copied
        ("a = 1\n|\nb = 2\nc = 3\n", "x = 0\nb = 2\nd = 4", "x = 0\nb = 2\nd = 4"),  # one, mid-way
        ("if x:\n    |\n}\n", "y()\n    }", "y()\n    }"),  # `}` at another depth
        ("x = |\n", "1", "1"),  # nothing follows
    ],
)
def test_cut_suffix_copy(doc: str, text: str, expected: str) -> None:
    assert trimming.cut_suffix_copy(text, at(doc)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x = 1\nx = 1\nx = 1", "x = 1"),
        ("a = 1\nb = 2\na = 1\nb = 2\na = 1", "a = 1\nb = 2"),
        ("a\n\nb\n\nb", "a\n\nb"),  # blank lines do not count as repeats, content does
        ("    }\n}", "    }\n}"),  # different depth: not a repeat
        ("a()\nb()\nc()", "a()\nb()\nc()"),
    ],
)
def test_cut_repeated_lines(text: str, expected: str) -> None:
    assert trimming.cut_repeated_lines(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("self.check(self.get(self.get(self.get(self.get(self.ge", "self.check(self.get"),
        ("x = 1\ny = f(a, a, a, a, a, a", "x = 1\ny = f(a, "),  # one `a, ` stays
        ("# the same of the same of the same of the", "# the same of"),
        ("grid = [0, 0, 0, 0, 0, 0", "grid = [0, 0, 0, 0, 0, 0"),  # digits only: not a loop
        ("x = [a, a, a]", "x = [a, a, a]"),  # closed: complete, not looping
        ("xxxx", "xxxx"),  # two copies of `xx` are not a loop
        ("x = 'aaaaaaaaaaaa", "x = 'aaaaaaaaaaaa"),  # nor is a run of one character
        ("abababababab", "ab"),
        ("print('=' * 40)", "print('=' * 40)"),
    ],
)
def test_cut_looping_line(text: str, expected: str) -> None:
    assert trimming.cut_looping_line(text) == expected


@pytest.mark.parametrize(
    ("doc", "language", "text", "expected"),
    [
        (  # a closing brace below the cursor's block
            "function f() {\n  |\n}\n",
            "javascript",
            "return 1;\n}\nfunction g() {",
            "return 1;",
        ),
        (  # after an opener, the block's own `}` goes when the code after has it
            "function f() {|\n}\n",
            "javascript",
            "\n  return 1;\n}",
            "\n  return 1;",
        ),
        (  # ... and stays when it does not; nothing after it
            "function f() {|\n\nfunction g() {}\n",
            "javascript",
            "\n  return 1;\n}\nfunction h() {",
            "\n  return 1;\n}",
        ),
        (  # dedent below the cursor's line
            "def f():\n    x = 1\n|\n    return x\n",
            "python",
            "    y = 2\n    z = 3\ndef g():\n    pass",
            "    y = 2\n    z = 3",
        ),
        (  # after `def f():` the next `def` at the same depth is out of the body
            "def f():|\n",
            "python",
            "\n    return 1\n\ndef g():\n    pass",
            "\n    return 1\n",
        ),
        (  # `else:` at the opener's depth continues it
            "    if x:|\n",
            "python",
            "\n        a()\n    else:\n        b()\n    c()",
            "\n        a()\n    else:\n        b()",
        ),
        (  # the bracket the code after the cursor closes
            "foo(\n    |\n)\n",
            "python",
            "a,\n    b,\n)",
            "a,\n    b,",
        ),
        (  # no closer after the cursor: the text may close it
            "foo(|\n",
            "python",
            "\n    a,\n)",
            "\n    a,\n)",
        ),
        ("x = |\n", "python", "1", "1"),
    ],
)
def test_cut_at_scope(doc: str, language: str, text: str, expected: str) -> None:
    assert trimming.cut_at_scope(text, at(doc, language)) == expected


@pytest.mark.parametrize(
    ("doc", "text", "expected"),
    [
        ("x = 1\n|\nprint(x)\n", "y = 2\nz = 3", "y = 2"),
        (  # a statement that opens a block keeps its block
            "x = 1\n|\n",
            "for i in range(3):\n    print(i)\n    y += i\nz = 3",
            "for i in range(3):\n    print(i)\n    y += i",
        ),
        ("x = 1\n|\n", "foo(a,\n    b)\nz = 3", "foo(a,\n    b)"),  # brackets span lines
        ("def f():\n|\n", "    y = 2\n    z = 3", "    y = 2\n    z = 3"),  # a body is welcome
        ("x = |\n", "1\ny = 2", "1\ny = 2"),  # not an empty line: not this filter's call
        (
            "x = 1\n|\n",
            "if x:\n    a()\nelse:\n    b()\nc()",
            "if x:\n    a()\nelse:\n    b()",
        ),
    ],
)
def test_cut_to_statement(doc: str, text: str, expected: str) -> None:
    assert trimming.cut_to_statement(text, at(doc)) == expected


@pytest.mark.parametrize(
    ("doc", "language", "text", "expected"),
    [
        (
            "int f() {\n|\n",
            "c",
            "    if (x) {\n        y();\n    }\n    z();",
            "    if (x) {\n        y();\n    }",
        ),
    ],
)
def test_cut_to_statement_braces(doc: str, language: str, text: str, expected: str) -> None:
    ctx = at(doc, language)
    ctx = CursorContext("x = 1;\n" + ctx.prefix.split("\n", 1)[1], ctx.suffix, "f", language)
    assert trimming.cut_to_statement(text, ctx) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("foo()   ", "foo()"),
        ("foo()\n    bar()  \n\n\n", "foo()\n    bar()"),
        ("\n    return 1", "\n    return 1"),  # a leading line break is the text's own
        ("   ", ""),
    ],
)
def test_strip_trailing_whitespace(text: str, expected: str) -> None:
    assert trimming.strip_trailing_whitespace(text) == expected


@pytest.mark.parametrize(
    ("doc", "text", "expected"),
    [
        ("return |\n", " x", "x"),
        ("return|\n", " x", " x"),
        ("    |\n", "  x", "  x"),  # indentation is not spacing
        ("x = |\n", " 1\n  y", "1\n  y"),
    ],
)
def test_join_spacing(doc: str, text: str, expected: str) -> None:
    assert trimming.join_spacing(text, at(doc)) == expected


@pytest.mark.parametrize(
    ("doc", "text", "expected"),
    [
        # the editor indented the body; the model indented it again (Neovim, SmolLM2)
        ("def f(a, b):\n    |", "    if a:\n        return b", "if a:\n    return b"),
        ("def f(a, b):\n    |", "    x = 1\n    y = 2", "x = 1\ny = 2"),
        ("class A:\n    def f(self):\n        |", "    pass", "pass"),
        ("if (a) {\n    |", "    b();\n}", "b();\n}"),  # a line shallower than it: as is
        ("def f():\n    |", "return 1", "return 1"),  # nothing doubled
        ("def f():\n|", "    return 1", "    return 1"),  # no indentation typed yet
        ("    def f():\n    |", "    return 1", "    return 1"),  # not deeper than it: as is
        ("x = 1\n    |", "    y = 2", "    y = 2"),  # no block opener before it
        ("def f():\n    x|", "  + 1", "  + 1"),  # text before the cursor on its line
        ("def f():\n    |", "    \n    return 1", "    \n    return 1"),  # a blank first line
    ],
)
def test_drop_doubled_indent(doc: str, text: str, expected: str) -> None:
    assert trimming.drop_doubled_indent(text, at(doc)) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("def f():\n    x = 1\n    if x:\n        y = 2\n", trimming.IndentStyle(False, 4)),
        ("def f():\n  x = 1\n  if x:\n    y = 2\n", trimming.IndentStyle(False, 2)),
        ("func f() {\n\tx := 1\n\tif x {\n\t\ty()\n\t}\n}\n", trimming.IndentStyle(True, 4)),
        ("x = 1\ny = 2\n", None),
    ],
)
def test_indent_style(code: str, expected: trimming.IndentStyle | None) -> None:
    assert trimming.indent_style(code) == expected


@pytest.mark.parametrize(
    ("doc", "text", "expected"),
    [
        (  # spaces in a tab-indented document
            "def f():\n\tx = 1\n\tif x:\n\t\ty = 2\n|\n",
            "\tfor i in x:\n        print(i)\n    z",
            "\tfor i in x:\n\t\tprint(i)\n\tz",
        ),
        (  # four-space steps in a two-space document, relative to the cursor's line
            "def f():\n  x = 1\n  if x:\n    y = 2\n  |\n",
            "for i in x:\n      print(i)\n          q\n  z",
            "for i in x:\n    print(i)\n      q\n  z",
        ),
        (  # tabs in a space-indented document
            "def f():\n    x = 1\n    if x:\n        y = 2\n|\n",
            "\tif y:\n\t\tz()",
            "    if y:\n        z()",
        ),
        (  # alignment under a bracket is not a level: left alone
            "def f():\n    x = 1\n    if x:\n        y = 2\n    |\n",
            "foo(a,\n        b,\n          c)",
            "foo(a,\n        b,\n          c)",
        ),
        (  # already consistent
            "def f():\n    x = 1\n    if x:\n        y = 2\n    |\n",
            "if y:\n        z()",
            "if y:\n        z()",
        ),
        ("x = |\n", "1", "1"),  # no indentation to go by
    ],
)
def test_match_indentation(doc: str, text: str, expected: str) -> None:
    assert trimming.match_indentation(text, at(doc)) == expected


@pytest.mark.parametrize(
    ("text", "language", "nesting", "closes"),
    [
        ("a(b[c]", "python", trimming.Nesting("(", ""), []),
        ("x) + y]", "python", trimming.Nesting("", ""), [(1, ")"), (6, "]")]),
        ("'(' )", "python", trimming.Nesting("", ""), [(4, ")")]),  # brackets in strings
        ("a # )", "python", trimming.Nesting("", ""), []),  # and in comments
        ("a // )", "javascript", trimming.Nesting("", ""), []),
        ('"""doc )', "python", trimming.Nesting("", '"""'), []),
        ("/* ) */ )", "c", trimming.Nesting("", ""), [(8, ")")]),
        ('"a\\") ', "python", trimming.Nesting("", '"'), []),  # escaped quote: still inside
        ("&'a str)", "rust", trimming.Nesting("", ""), [(7, ")")]),  # a lifetime, no quote
    ],
)
def test_scan(
    text: str, language: str, nesting: trimming.Nesting, closes: list[tuple[int, str]]
) -> None:
    assert trimming.scan(text, language) == (nesting, closes)


def test_scan_reports_closing_the_outer_string_and_brackets() -> None:
    start = trimming.Nesting("(", '"')
    assert trimming.scan('hi") + 1', "python", start) == (
        trimming.Nesting("", ""),
        [
            (2, '"'),
            (3, ")"),
        ],
    )


def test_cuts_return_prefixes_of_their_input() -> None:
    ctx = at("def f():\n    x = 1\n|\n    return x\n")
    text = "    y = 2\n    y = 2\n    return x\nz = f(f(f(f(f(f(f("
    for cut in (
        trimming.cut_repeated_lines,
        trimming.cut_looping_line,
        lambda t: trimming.cut_suffix_copy(t, ctx),
        lambda t: trimming.cut_at_scope(t, ctx),
        lambda t: trimming.cut_to_statement(t, ctx),
        lambda t: trimming.fit_line_suffix(t, ctx)[0],
    ):
        assert text.startswith(cut(text))


def test_normalised_ignores_blank_space_only() -> None:
    assert trimming.normalised("a  =\n  b ") == trimming.normalised("a = b")
    assert trimming.normalised("a = b") != trimming.normalised("a = c")
