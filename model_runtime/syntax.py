"""Does a suggestion add syntax errors? Parse the code around the cursor with and without it.

tree-sitter (from `tree-sitter-language-pack`, imported on first use) recovers from errors, so
code being typed parses with a few ERROR or MISSING nodes; a suggestion is judged by whether it
adds to them. Languages without a grammar, or a pack that cannot load one, skip the check.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import TYPE_CHECKING

from model_runtime.context import CursorContext

if TYPE_CHECKING:
    from tree_sitter import Node, Parser, Tree

log = logging.getLogger(__name__)

# LSP language id -> grammar name in tree-sitter-language-pack.
GRAMMARS = {
    "python": "python",
    "javascript": "javascript",
    "javascriptreact": "javascript",
    "typescript": "typescript",
    "typescriptreact": "tsx",
    "java": "java",
    "go": "go",
    "rust": "rust",
    "c": "c",
    "cpp": "cpp",
    "csharp": "csharp",
    "kotlin": "kotlin",
    "scala": "scala",
    "swift": "swift",
    "ruby": "ruby",
    "php": "php",
    "lua": "lua",
    "shellscript": "bash",
}
# The code parsed: this many lines before the cursor (from a line that starts at column 0) and
# after it. Errors are compared, not counted absolutely, so a window cut mid-construct is fine.
LINES_BEFORE = 200
LINES_AFTER = 60

_parse_lock = threading.Lock()  # a tree-sitter parser is not safe to share between threads


@functools.cache
def parser_for(language: str) -> Parser | None:
    """A cached parser for an LSP language id, or None when there is no grammar for it."""
    grammar = GRAMMARS.get(language)
    if grammar is None:
        return None
    try:
        from tree_sitter_language_pack import get_parser

        return get_parser(grammar)  # type: ignore[arg-type]
    except Exception as exc:  # a missing or broken grammar must not break completion
        log.warning("no syntax check for %s: %s", language, exc)
        return None


def parse(parser: Parser, source: bytes) -> Tree:
    """The tree of `source`; one parse at a time, whichever thread asks."""
    with _parse_lock:
        return parser.parse(source)


def error_count(parser: Parser, source: str) -> int:
    """ERROR and MISSING nodes in the parse of `source`."""
    tree = parse(parser, source.encode("utf-8"))
    count = 0
    pending: list[Node] = [tree.root_node]
    while pending:
        node = pending.pop()
        if node.is_error or node.is_missing:
            count += 1
        if node.has_error:
            pending.extend(node.children)
    return count


def window(ctx: CursorContext) -> tuple[str, str]:
    """The code before and after the cursor that the check parses."""
    lines = ctx.prefix.split("\n")
    start = max(0, len(lines) - LINES_BEFORE)
    if start:
        start = next((i for i in range(start, len(lines) - 1) if lines[i][:1].isalpha()), start)
    after = ctx.suffix.split("\n")[:LINES_AFTER]
    return "\n".join(lines[start:]), "\n".join(after)


class SyntaxCheck:
    """The errors of the code around one cursor, to compare each suggestion's against."""

    def __init__(self, parser: Parser, before: str, after: str) -> None:
        self.parser, self.before, self.after = parser, before, after
        self.baseline = error_count(parser, before + after)

    def adds_errors(self, text: str, replace: int = 0) -> bool:
        """Whether inserting `text` (over `replace` characters) gives more errors than before."""
        source = self.before + text + self.after[replace:]
        return error_count(self.parser, source) > self.baseline

    def longest_clean(self, text: str, replace: int = 0) -> str | None:
        """The text, or its longest prefix of whole lines that adds no error; None if none does.

        Only the whole text replaces characters after the cursor; a cut one is inserted.
        """
        lines = text.split("\n")
        for size in range(len(lines), 0, -1):
            head = "\n".join(lines[:size])
            if not head.strip():
                break
            if not self.adds_errors(head, replace if size == len(lines) else 0):
                return head
        return None


def syntax_check(ctx: CursorContext) -> SyntaxCheck | None:
    """The check for the cursor's language, or None when it has no grammar."""
    parser = parser_for(ctx.language)
    if parser is None:
        return None
    before, after = window(ctx)
    return SyntaxCheck(parser, before, after)
