"""Is the cursor in code, a comment or a string? A small lexical scan, per language family.

The scan jumps with one compiled regex from one comment or string opener to the next and skips
each token's body with `str.find` or a body regex, so it costs a few C-level passes over the
text before the cursor. It knows delimiters, not grammars: nested block comments, string
interpolation (`${...}`, f-string braces), heredocs and raw-string hash fences are not tracked.
Unknown languages are always "code".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Literal

Zone = Literal["code", "comment", "string"]
CommentsAndStrings = Literal["never", "invoked", "always"]  # when to complete inside them


@dataclass(frozen=True)
class Delimiter:
    """One kind of comment or string: how it opens and closes."""

    open: str
    close: str = ""  # "" for a comment that runs to the end of the line
    kind: Zone = "string"
    escape: bool = True  # a backslash escapes the next character
    multiline: bool = False  # may span lines (else it ends, unclosed, at the line break)
    word_start: bool = False  # opens only at the start of a word (`#` in shell, not `$#`)


def _line(marker: str, word_start: bool = False) -> Delimiter:
    return Delimiter(marker, kind="comment", escape=False, word_start=word_start)


def _block(opener: str, closer: str) -> Delimiter:
    return Delimiter(opener, closer, kind="comment", escape=False, multiline=True)


def _quote(mark: str, multiline: bool = False, escape: bool = True) -> Delimiter:
    return Delimiter(mark, mark, escape=escape, multiline=multiline)


_C_COMMENTS = (_line("//"), _block("/*", "*/"))
_C_STRINGS = (_quote('"'), _quote("'"))
_C_LIKE = (*_C_COMMENTS, *_C_STRINGS)
_TEXT_BLOCK = _quote('"""', multiline=True)
_TRIPLE = (_TEXT_BLOCK, _quote("'''", multiline=True))

SYNTAX: dict[str, tuple[Delimiter, ...]] = {
    "python": (_line("#"), *_TRIPLE, *_C_STRINGS),
    **dict.fromkeys(("c", "cpp", "cuda-cpp", "objective-c", "objective-cpp", "csharp"), _C_LIKE),
    **dict.fromkeys(
        ("javascript", "javascriptreact", "typescript", "typescriptreact", "vue", "svelte"),
        (*_C_LIKE, _quote("`", multiline=True)),
    ),
    **dict.fromkeys(
        ("java", "kotlin", "scala", "swift", "groovy"), (*_C_COMMENTS, _TEXT_BLOCK, *_C_STRINGS)
    ),
    "dart": (*_C_COMMENTS, *_TRIPLE, *_C_STRINGS),
    "go": (*_C_LIKE, _quote("`", multiline=True, escape=False)),
    # In Rust `'` also starts lifetimes (`'a`), so char literals are left alone.
    "rust": (*_C_COMMENTS, _quote('"', multiline=True)),
    "php": (_line("#"), *_C_LIKE),
    **dict.fromkeys(
        ("ruby", "r", "perl", "elixir", "toml", "dockerfile", "makefile"),
        (_line("#"), *_C_STRINGS),
    ),
    # Plain YAML scalars hold apostrophes (`it's`): only comments are told apart.
    "yaml": (_line("#", word_start=True),),
    "shellscript": (
        _line("#", word_start=True),
        _quote('"', multiline=True),
        _quote("'", multiline=True, escape=False),
    ),
    "lua": (
        _block("--[[", "]]"),
        _line("--"),
        Delimiter("[[", "]]", escape=False, multiline=True),
        *_C_STRINGS,
    ),
    "sql": (_line("--"), _block("/*", "*/"), _quote("'")),  # "..." names a column
    "haskell": (_line("--"), _block("{-", "-}"), _quote('"')),
    **dict.fromkeys(("html", "xml", "markdown"), (_block("<!--", "-->"),)),
    "css": (_block("/*", "*/"), *_C_STRINGS),
    **dict.fromkeys(("scss", "less"), _C_LIKE),
}


@dataclass(frozen=True)
class _Scanner:
    openers: re.Pattern[str]
    delimiters: dict[str, Delimiter]  # by opening text
    bodies: dict[str, re.Pattern[str]]  # by opening text, for strings with escapes
    longest: int  # the longest opener's length


def _opener_pattern(delimiter: Delimiter) -> str:
    return ("(?<!\\S)" if delimiter.word_start else "") + re.escape(delimiter.open)


def _body_pattern(delimiter: Delimiter) -> re.Pattern[str]:
    """A string's body: plain runs, escaped characters, and closer look-alikes that are not it."""
    first, rest = re.escape(delimiter.close[0]), re.escape(delimiter.close[1:])
    stops = "\\\\" + first + ("" if delimiter.multiline else "\\n")
    alternatives = [f"[^{stops}]+", r"\\(?:.|\Z)"]
    if rest:
        alternatives.append(f"{first}(?!{rest})")
    return re.compile(f"(?:{'|'.join(alternatives)})*", re.DOTALL)


@cache
def _scanner(language: str) -> _Scanner | None:
    delimiters = SYNTAX.get(language)
    if delimiters is None:
        return None
    longest_first = sorted(delimiters, key=lambda d: len(d.open), reverse=True)
    return _Scanner(
        openers=re.compile("|".join(_opener_pattern(d) for d in longest_first)),
        delimiters={d.open: d for d in delimiters},
        bodies={d.open: _body_pattern(d) for d in delimiters if d.escape},
        longest=len(longest_first[0].open),
    )


def _token_end(text: str, start: int, delimiter: Delimiter, scanner: _Scanner) -> tuple[int, bool]:
    """Where the token whose body starts at `start` ends, and whether its closer was found.

    An unclosed token ends at its line break (one-line kinds) or at the end of the text.
    """
    line_end = text.find("\n", start)
    limit = len(text) if delimiter.multiline or line_end < 0 else line_end
    if not delimiter.close:
        return limit, False
    if delimiter.escape:
        body = scanner.bodies[delimiter.open].match(text, start)
        stop = body.end() if body else start  # the body pattern matches even when empty
        if text.startswith(delimiter.close, stop):
            return stop + len(delimiter.close), True
        return stop, False
    found = text.find(delimiter.close, start, limit)
    return (found + len(delimiter.close), True) if found >= 0 else (limit, False)


def zone_at(text: str, offset: int, language: str) -> Zone:
    """What the cursor at `offset` (code points, clamped) is inside, for an LSP language id."""
    scanner = _scanner(language)
    if scanner is None:
        return "code"
    offset = max(0, min(offset, len(text)))
    # Only openers that start before the cursor matter (the cursor may sit inside one: `""|"`).
    search_end = offset + scanner.longest - 1
    position = 0
    while (opener := scanner.openers.search(text, position, search_end)) is not None:
        if opener.start() >= offset:
            break
        delimiter = scanner.delimiters[opener.group()]
        end, closed = _token_end(text, opener.end(), delimiter, scanner)
        if offset < end or (offset == end and not closed):
            return delimiter.kind
        position = end
    return "code"


def completes_at(
    text: str, offset: int, language: str, policy: CommentsAndStrings, invoked: bool
) -> bool:
    """Whether `policy` allows completing at `offset`; `invoked`: the user asked explicitly."""
    if policy == "always" or (policy == "invoked" and invoked):
        return True
    return zone_at(text, offset, language) == "code"
