"""Comment and string detection at the cursor, per language, and the completion policy on it."""

from __future__ import annotations

import io
import random
import tokenize
import typing
from pathlib import Path

import pytest

from model_runtime.lexical import SYNTAX, CommentsAndStrings, completes_at, zone_at

# `|` marks the cursor.
CASES = [
    ("python", "x = 1|", "code"),
    ("python", "x = 1  # note|", "comment"),
    ("python", "x = 1  |# note", "code"),
    ("python", "# a\nx = |", "code"),
    ("python", 'x = "ab|', "string"),  # unclosed, still being typed
    ("python", 'x = "ab|"', "string"),
    ("python", 'x = "ab"|', "code"),
    ("python", 'x = |"ab"', "code"),
    ("python", 'x = ""|', "code"),
    ("python", 'x = "a\\"b|"', "string"),  # escaped quote
    ("python", 'x = "a\\\\"|', "code"),  # escaped backslash, then the closer
    ("python", 'x = "ab\ny = |', "code"),  # a one-line string ends at the line break
    ("python", "x = 'it''s|'", "string"),
    ("python", 'x = "# not a comment" + |', "code"),
    ("python", "# it's\nx = |", "code"),  # the quote is inside a comment
    ("python", 'def f():\n    """Doc|\n    more\n    """', "string"),
    ("python", 'def f():\n    """Doc\n    """\n    |', "code"),
    ("python", 'x = """a " b|', "string"),  # lone quotes inside a triple-quoted string
    ("python", 'x = ""|"doc"""', "string"),  # inside the opener of a triple quote
    ("python", "s = '''x|'''", "string"),
    ("python", "s = r'C:\\dir|'", "string"),
    ("javascript", "let a = 1; // todo|", "comment"),
    ("javascript", "/* a\n * b|\n */", "comment"),
    ("javascript", "/* a */ let b = |", "code"),
    ("javascript", "const s = `line\nnext|`", "string"),
    ("javascript", "const s = 'a' + |", "code"),
    ("typescript", "const u = 'http://x|'", "string"),  # `//` inside a string
    ("typescriptreact", "// c\nconst x = |", "code"),
    ("c", '#include "io.h"\nint x = |', "code"),
    ("c", "char c = '\\''; int |", "code"),
    ("cpp", 'auto s = "a /* b|"', "string"),
    ("java", 'String t = """\n  text|\n  """;', "string"),
    ("go", "s := `raw \\|`", "string"),  # raw strings have no escapes...
    ("go", "s := `raw \\` + |", "code"),  # ...so the backslash does not hide the closer
    ("rust", "let r: &'a str = |", "code"),  # a lifetime is not a char literal
    ("rust", 'let s = "two\nlines|";', "string"),
    ("shellscript", "echo $# |", "code"),  # `$#` is not a comment
    ("shellscript", "echo hi # note|", "comment"),
    ("shellscript", "echo 'a\\|'", "string"),
    ("ruby", "puts 'x' # say|", "comment"),
    ("lua", "local x = 1 -- c|", "comment"),
    ("lua", "--[[ a\nb| ]]", "comment"),
    ("lua", "--[[ a ]] local y = |", "code"),
    ("lua", "local s = [[long\nstr|]]", "string"),
    ("sql", "SELECT 'a|'", "string"),
    ("sql", "SELECT 1 -- why|", "comment"),
    ("haskell", "{- note| -}", "comment"),
    ("html", "<!-- hidden| -->", "comment"),
    ("html", "<p>it's |</p>", "code"),  # prose apostrophes are not strings
    ("yaml", "name: it's | # c", "code"),
    ("yaml", "name: x # c|", "comment"),
    ("css", "a { color: red; /* x| */ }", "comment"),
    ("scss", "$w: 1px; // wide|", "comment"),
    ("dart", "var s = '''a\nb|''';", "string"),
    ("php", "$x = 1; # old style|", "comment"),
    ("plaintext", "# nothing is known here|", "code"),
    ("", '"|"', "code"),
]


@pytest.mark.parametrize(("language", "marked", "zone"), CASES)
def test_zone_at_cursor(language: str, marked: str, zone: str) -> None:
    offset = marked.index("|")
    assert zone_at(marked.replace("|", "", 1), offset, language) == zone


def test_every_syntax_family_has_a_case() -> None:
    tested = {id(SYNTAX[language]) for language, _, _ in CASES if language in SYNTAX}
    assert tested == {id(family) for family in SYNTAX.values()}


@pytest.mark.parametrize("offset", [-3, 10_000])
def test_offset_is_clamped(offset: int) -> None:
    assert zone_at("x = 'open", offset, "python") == ("code" if offset < 0 else "string")


def _python_spans(source: str) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every comment and string, from Python's own tokenizer."""
    line_starts = [0]
    for line in source.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))

    def at(row_col: tuple[int, int]) -> int:
        return line_starts[row_col[0] - 1] + row_col[1]

    spans, open_fstrings = [], []
    fstring_start = getattr(tokenize, "FSTRING_START", None)  # Python 3.12+ splits f-strings
    fstring_end = getattr(tokenize, "FSTRING_END", None)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            spans.append((at(token.start), at(token.end), "comment"))
        elif token.type == tokenize.STRING:
            spans.append((at(token.start), at(token.end), "string"))
        elif token.type == fstring_start:
            open_fstrings.append(at(token.start))
        elif token.type == fstring_end:
            start = open_fstrings.pop()
            if not open_fstrings:
                spans.append((start, at(token.end), "string"))
    return spans


def test_agrees_with_pythons_tokenizer_on_real_code() -> None:
    source = Path(typing.__file__).read_text(encoding="utf-8")
    spans = _python_spans(source)
    starts = {start for start, _, _ in spans}
    rng = random.Random(0)
    checked = disagreements = 0
    for offset in rng.sample(range(len(source)), 4000):
        if offset - 1 in starts and source[offset - 1].isalpha():
            continue  # between a prefix and its quote (`f|"..."`): the tokens differ by design
        expected = "code"
        for start, end, kind in spans:
            if start < offset < end or (kind == "comment" and offset == end):
                expected = kind
        checked += 1
        disagreements += zone_at(source, offset, "python") != expected
    assert checked > 3900
    assert disagreements == 0


@pytest.mark.parametrize(
    ("policy", "invoked", "in_comment", "in_code"),
    [
        ("always", False, True, True),
        ("invoked", True, True, True),
        ("invoked", False, False, True),
        ("never", True, False, True),
        ("never", False, False, True),
    ],
)
def test_policy(policy: CommentsAndStrings, invoked: bool, in_comment: bool, in_code: bool) -> None:
    text = "x = 1  # c\n"
    comment_at, code_at = len("x = 1  # c"), len("x = 1")
    assert completes_at(text, comment_at, "python", policy, invoked) is in_comment
    assert completes_at(text, code_at, "python", policy, invoked) is in_code
