"""Named trimming filters: pure functions from a suggestion's text and the cursor's context.

Cuts (`cut_*`) return a prefix of their input; rewrites change whitespace only. Each knows
delimiters, not grammars: brackets and quotes are scanned per language family, and the syntax
check (`syntax.py`) catches what these miss.

Here, in order: bracket and string scanning (`scan`, `Nesting`) and the end of the line
(`fit_line_suffix`, `is_no_op`); cuts of copies and loops (`cut_suffix_copy`,
`cut_repeated_lines`, `cut_looping_line` with `loop_start`, which a stop criterion shares);
cuts by block and statement (`indent_of` and `opens_block`, which the rewrites use too, then
`cut_at_scope`, `cut_to_statement`); whitespace rewrites (`strip_trailing_whitespace`,
`join_spacing`, `drop_doubled_indent`, then the document's indentation style: `indent_style`,
`match_indentation`); `normalised` to compare suggestions.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from model_runtime.context import CursorContext

PAIRS = {"(": ")", "[": "]", "{": "}"}
CLOSING = {close: open_ for open_, close in PAIRS.items()}
CLOSERS_AND_QUOTES = ")]}\"'`"
RETYPED_PUNCTUATION = ">;,: "  # re-typed after a closer, or alone (`int>` before `> v`)
BLOCK_OPENERS = (":", "{", "=>", " do", " then")
CONTINUATIONS = ("else", "elif", "except", "finally", "catch")
HASH_COMMENTS = {"python", "ruby", "shellscript", "perl", "r", "yaml", "toml", "julia"}
DASH_COMMENTS = {"lua", "sql", "haskell"}
# Looking at more of the document than this to guess its indentation changes nothing.
STYLE_SAMPLE_LINES = 400


@dataclass(frozen=True)
class Nesting:
    """Brackets left open (innermost last) and the string or block comment left open ("")."""

    brackets: str = ""
    string: str = ""


def string_openers(language: str) -> tuple[str, ...]:
    """What opens a string (or a block comment) in `language`, longest first."""
    if language == "python":
        return ('"""', "'''", '"', "'")
    if language == "rust":
        return ("/*", '"')  # `'a` is a lifetime, not an open quote
    if language in HASH_COMMENTS or language in DASH_COMMENTS:
        return ('"', "'", "`")
    return ("/*", '"', "'", "`")


def line_comment(language: str) -> str:
    if language in HASH_COMMENTS:
        return "#"
    return "--" if language in DASH_COMMENTS else "//"


def scan(
    text: str, language: str, start: Nesting = Nesting()
) -> tuple[Nesting, list[tuple[int, str]]]:
    """The nesting after `text`, and where `text` closes what it did not open itself.

    Starting inside `start`, returns (offset, closer) for each closing bracket that matches an
    opener of `start` or none at all, and for the quote that ends the string `start` is in.
    """
    stack, outer, string = list(start.brackets), len(start.brackets), start.string
    in_outer_string = bool(string)
    comment, openers = line_comment(language), string_openers(language)
    closes: list[tuple[int, str]] = []
    i = 0
    while i < len(text):
        if string:
            close = "*/" if string == "/*" else string
            if text[i] == "\\" and string != "/*":
                i += 2
            elif text.startswith(close, i):
                if in_outer_string:
                    closes.append((i, close))
                string, in_outer_string = "", False
                i += len(close)
            else:
                if text[i] == "\n" and string in ('"', "'"):
                    string, in_outer_string = "", False  # unterminated: it ends with its line
                i += 1
            continue
        if text.startswith(comment, i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        opener = next((q for q in openers if text.startswith(q, i)), "")
        char = text[i]
        if opener:
            string = opener
            i += len(opener)
            continue
        if char in PAIRS:
            stack.append(char)
        elif char in CLOSING:
            if stack and stack[-1] == CLOSING[char]:
                stack.pop()
                if len(stack) < outer:
                    outer = len(stack)
                    closes.append((i, char))
            else:
                closes.append((i, char))
        i += 1
    return Nesting("".join(stack), string), closes


def fit_line_suffix(text: str, ctx: CursorContext) -> tuple[str, int]:
    """Place the text against the rest of the cursor's line: (text, characters it replaces).

    When the text re-types what follows the cursor (an auto-closed `)` or `"`), it replaces
    it; when it closes a bracket or string that the rest of the line does not, it is cut there.
    A balanced `f(a)` before a `)` is inserted: its `)` is its own.
    """
    rest = ctx.line_suffix
    body = rest.rstrip()
    if not body:
        return text, 0
    start, _ = scan(ctx.line_prefix, ctx.language)
    _, text_closes = scan(text, ctx.language, start)
    _, rest_closes = scan(body, ctx.language, start)
    if text.rstrip().endswith(body) and len(text_closes) == len(rest_closes):
        return text, len(rest)
    lead = len(body) - len(body.lstrip(CLOSERS_AND_QUOTES))
    matched = covered = 0
    for _offset, closer in text_closes:
        if covered >= lead or not body.startswith(closer, covered):
            break
        matched, covered = matched + 1, covered + len(closer)
    if matched < len(text_closes):
        text = text[: text_closes[matched][0]]
    else:  # `">` typed before `"></div>`: the `>` is re-typed too
        end = text_closes[matched - 1][0] + len(text_closes[matched - 1][1]) if matched else 0
        covered += _retyped(text[end:].rstrip(), body[covered:])
    return text, len(rest) if covered and covered == len(body) else covered


def _retyped(tail: str, rest: str) -> int:
    """How many characters of punctuation that start `rest` the text `tail` ends with."""
    run = len(rest) - len(rest.lstrip(RETYPED_PUNCTUATION))
    return next((n for n in range(min(run, len(tail)), 0, -1) if tail.endswith(rest[:n])), 0)


def is_no_op(text: str, replace: int, ctx: CursorContext) -> bool:
    """Whether accepting the text would leave the document as it is."""
    return text.rstrip() == ctx.line_suffix[:replace].rstrip()


def _same_line(a: str, b: str) -> bool:
    """Equal lines; with content (a letter or digit), equal up to indentation."""
    if a.rstrip() == b.rstrip():
        return True
    return any(c.isalnum() for c in a) and a.strip() == b.strip()


def cut_suffix_copy(text: str, ctx: CursorContext) -> str:
    """Cut where the text starts to reproduce the lines that already follow the cursor.

    A copy is two or more consecutive lines, or lines that run to the end of the text.
    """
    lines = text.split("\n")
    following = [line for line in ctx.suffix.split("\n")[1:] if line.strip()][: len(lines) + 1]
    if not following:
        return text
    composed = [ctx.line_prefix + lines[0], *lines[1:]]
    first = 0 if lines[0].strip() else 1
    content = [i for i in range(first, len(lines)) if composed[i].strip()]
    for n, index in enumerate(content):
        run = 0
        while (
            n + run < len(content)
            and run < len(following)
            and _same_line(composed[content[n + run]], following[run])
        ):
            run += 1
        if run and (run >= 2 or n + run == len(content)):
            return "\n".join(lines[:index]) if index else ""
    return text


def cut_repeated_lines(text: str) -> str:
    """Cut at the first line or block of lines that repeats the one just before it."""
    lines = text.split("\n")
    for i in range(1, len(lines)):
        for size in range(1, min(i, len(lines) - i) + 1):
            block = lines[i - size : i]
            if any(line.strip() for line in block) and block == lines[i : i + size]:
                return "\n".join(lines[:i])
    return text


def loop_start(line: str, copies: float = 2.5, chars: int = 0) -> int | None:
    """Where a line that ends repeating itself should stop: after the first copy of the unit.

    The line must end in `copies` or more copies (and `chars` or more characters) of a unit of
    two or more different characters, one of them a letter (a run of one character, `xxxxxx`
    or `======`, is no loop).
    """
    loops = []
    for period in range(2, int(len(line) / copies) + 1):  # a longer unit has too few copies
        j = len(line) - period - 1
        while j >= 0 and line[j] == line[j + period]:
            j -= 1
        start, run = j + 1, len(line) - j - 1
        unit = line[start : start + period]
        letters = any(c.isalpha() or c == "_" for c in unit)
        if run >= copies * period and run >= chars and letters and len(set(unit)) > 1:
            loops.append((start, period))
    return sum(min(loops)) if loops else None


def cut_looping_line(text: str) -> str:
    """Cut a line that ends repeating itself (`f(f(f(f(`) after its first copy; drop the rest."""
    offset = 0
    for line in text.split("\n"):
        cut = loop_start(line.rstrip())
        if cut is not None:
            return text[: offset + cut]
        offset += len(line) + 1
    return text


def indent_of(line: str, tab: int = 4) -> int:
    """Columns of leading blank space, a tab counting `tab`."""
    expanded = line.expandtabs(tab)
    return len(expanded) - len(expanded.lstrip())


def opens_block(line: str) -> bool:
    return line.rstrip().endswith(BLOCK_OPENERS)


def _is_closer_line(line: str) -> bool:
    body = line.strip()
    return (bool(body) and body[0] in CLOSING) or body in ("end", "fi", "done", "esac")


def cut_at_scope(text: str, ctx: CursorContext) -> str:
    """Stop before the first line that leaves the cursor's block.

    That is a line indented less than the cursor's line (after a block opener: no deeper than
    it, bar `else:`-like lines and one closing line the code after the cursor lacks), or, when
    the code after the cursor starts by closing a bracket, where the text closes one it did not
    open.
    """
    lines = text.split("\n")
    composed = [ctx.line_prefix + lines[0], *lines[1:]]
    content = [i for i, line in enumerate(composed) if line.strip()]
    if len(lines) == 1 or not content:
        return text
    head = content[0]
    base, opener = indent_of(composed[head]), opens_block(composed[head])
    closed_after = ctx.suffix.lstrip()[:1] in CLOSING
    for i in range(head + 1, len(lines)):
        line = lines[i]
        if not line.strip():
            continue
        depth = indent_of(line)
        continues = line.lstrip().startswith(CONTINUATIONS)
        if depth < base or (opener and depth == base and not continues):
            keep_closer = opener and depth == base and _is_closer_line(line) and not closed_after
            return "\n".join(lines[: i + 1 if keep_closer else i])
    if closed_after:
        _, closes = scan(text, ctx.language)
        late = [at for at, closer in closes if at > len(lines[0]) and closer in CLOSING]
        if late:
            return text[: late[0]].rstrip(" \t")
    return text


def _previous_line(ctx: CursorContext) -> str:
    before = ctx.prefix[: len(ctx.prefix) - len(ctx.line_prefix)]
    return next((line for line in reversed(before.split("\n")) if line.strip()), "")


def cut_to_statement(text: str, ctx: CursorContext) -> str:
    """On an empty line that does not start a block: one statement, with its block if it opens one.

    After a block opener (`def f():`, `{`) the whole body is welcome; elsewhere a suggestion
    that runs on into unrelated statements is more to read than to accept.
    """
    if ctx.line_prefix.strip() or opens_block(_previous_line(ctx)):
        return text
    lines = text.split("\n")
    content = [i for i, line in enumerate(lines) if line.strip()]
    if not content:
        return text
    first = content[0]
    head = (ctx.line_prefix if first == 0 else "") + lines[first]
    nesting = Nesting()
    end = first
    for end in range(first, len(lines)):
        nesting, _ = scan(lines[end] + "\n", ctx.language, nesting)
        if not nesting.brackets and not nesting.string:
            break
    if not opens_block(lines[end]):
        return "\n".join(lines[: end + 1])
    base = indent_of(head)
    for i in range(end + 1, len(lines)):
        line = lines[i]
        if not line.strip() or indent_of(line) > base:
            continue
        if line.lstrip().startswith(CONTINUATIONS):
            continue
        if _is_closer_line(line) and indent_of(line) == base:
            return "\n".join(lines[: i + 1])
        return "\n".join(lines[:i])
    return text


def strip_trailing_whitespace(text: str) -> str:
    """No blank space at line ends, no blank lines at the end."""
    lines = [line.rstrip() for line in text.split("\n")]
    while len(lines) > 1 and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def join_spacing(text: str, ctx: CursorContext) -> str:
    """No second space where the cursor already follows one (`return ` + ` x`)."""
    if ctx.line_prefix.strip() and ctx.line_prefix.endswith((" ", "\t")):
        first, sep, rest = text.partition("\n")
        return first.lstrip(" \t") + sep + rest
    return text


def drop_doubled_indent(text: str, ctx: CursorContext) -> str:
    """No second indentation of a block's first line: after a block opener, with the editor's
    indentation already typed (the cursor follows only blank space, deeper than the opener),
    blank space that starts the text would nest the body twice. The text moves left by it,
    every line alike, so its lines keep their depth relative to the first.
    """
    line = ctx.line_prefix
    opener = _previous_line(ctx)
    if not line or line.strip() or not opens_block(opener) or indent_of(line) <= indent_of(opener):
        return text
    lines = text.split("\n")
    extra = indent_of(lines[0])
    if not extra or not lines[0].strip():
        return text
    out = []
    for row in lines:
        depth, body = indent_of(row), row.lstrip(" \t")
        out.append(" " * (depth - extra) + body if body and depth >= extra else row)
    return "\n".join(out)


@dataclass(frozen=True)
class IndentStyle:
    """How a document indents: with tabs, or with `width` spaces a level."""

    tabs: bool
    width: int


def indent_style(code: str) -> IndentStyle | None:
    """The indentation `code` uses most, or None when it does not show."""
    lines = [line for line in code.split("\n")[-STYLE_SAMPLE_LINES:] if line.strip()]
    tabbed = sum(line.startswith("\t") for line in lines)
    spaced = [line for line in lines if line.startswith(" ")]
    if tabbed > len(spaced):
        return IndentStyle(True, 4)
    steps: Counter[int] = Counter()
    previous = 0
    for line in lines:
        if line.startswith("\t"):
            continue
        depth = indent_of(line)
        if depth > previous and depth - previous in (2, 3, 4, 8):
            steps[depth - previous] += 1
        previous = depth
    return IndentStyle(False, steps.most_common(1)[0][0]) if steps else None


def _document_style(ctx: CursorContext) -> IndentStyle | None:
    before = "\n".join(ctx.prefix.split("\n")[-STYLE_SAMPLE_LINES:])
    after = "\n".join(ctx.suffix.split("\n")[: STYLE_SAMPLE_LINES // 2])
    return indent_style(before + after)


def _indentation(depth: int, style: IndentStyle) -> str:
    if style.tabs:
        return "\t" * (depth // style.width) + " " * (depth % style.width)
    return " " * depth


def match_indentation(text: str, ctx: CursorContext) -> str:
    """Indent the text the way the document does: tabs or spaces, and the same width.

    Lines deeper than the cursor's line are re-indented level by level relative to it; a text
    whose steps are not whole levels of its own (alignment under a bracket) keeps its widths.
    """
    style = _document_style(ctx)
    if style is None:
        return text
    lines = text.split("\n")
    base = indent_of(ctx.line_prefix + lines[0], style.width)
    steps = [
        d for line in lines[1:] if line.strip() and (d := indent_of(line, style.width) - base) > 0
    ]
    own = math.gcd(*steps) if steps and min(steps) == math.gcd(*steps) else style.width
    out = []
    for i, line in enumerate(lines):
        body = line.lstrip(" \t")
        if (i == 0 and ctx.line_prefix) or not body or body == line:
            out.append(line)
            continue
        depth = indent_of(line, style.width)
        if i > 0 and depth > base and own >= 2:
            levels, extra = divmod(depth - base, own)
            depth = base + levels * style.width + extra
        out.append(_indentation(depth, style) + body)
    return "\n".join(out)


def normalised(text: str) -> str:
    """The text with all runs of blank space as one space: equal suggestions compare equal."""
    return " ".join(text.split())
