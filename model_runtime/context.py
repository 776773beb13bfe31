"""The cursor's surroundings in a document, and the decision between one line and a block."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Literal

MultilineMode = Literal["auto", "always", "never"]

_BLOCK_OPENERS = (":", "{", "(", "[", "=>", "->", "do", "then")

LANGUAGE_BY_SUFFIX = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".jsx": "javascriptreact",
    ".mjs": "javascript", ".cjs": "javascript", ".ts": "typescript", ".tsx": "typescriptreact",
    ".java": "java", ".go": "go", ".rs": "rust", ".c": "c", ".h": "c", ".cc": "cpp",
    ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".cs": "csharp", ".rb": "ruby", ".php": "php",
    ".lua": "lua", ".sh": "shellscript", ".bash": "shellscript", ".kt": "kotlin",
    ".swift": "swift", ".scala": "scala", ".sql": "sql", ".html": "html", ".css": "css",
    ".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".md": "markdown",
}  # fmt: skip


@dataclass(frozen=True)
class CursorContext:
    """Text on both sides of the cursor, plus the cursor's own line split at the cursor."""

    prefix: str
    suffix: str
    path: str = ""
    language: str = ""

    @property
    def line_prefix(self) -> str:
        return self.prefix[self.prefix.rfind("\n") + 1 :]

    @property
    def line_suffix(self) -> str:
        end = self.suffix.find("\n")
        return (self.suffix if end < 0 else self.suffix[:end]).rstrip("\r")


def cursor_context(text: str, offset: int, path: str = "", language: str = "") -> CursorContext:
    """Split `text` at `offset` (clamped into the text); infer the language from the path."""
    offset = max(0, min(offset, len(text)))
    return CursorContext(text[:offset], text[offset:], path, language or language_for_path(path))


def language_for_path(path: str) -> str:
    """The LSP language id that a file name implies, or "" when unknown."""
    return LANGUAGE_BY_SUFFIX.get(PurePath(path).suffix.lower(), "") if path else ""


def wants_multiline(ctx: CursorContext, mode: MultilineMode) -> bool:
    """Whether to offer a block rather than the rest of the current line."""
    if mode != "auto":
        return mode == "always"
    if ctx.line_suffix.strip():
        return False  # mid-line before real text: finish this line only
    if not ctx.line_prefix.strip():
        return True  # on an empty line: a statement or a block may follow
    return ctx.line_prefix.rstrip().endswith(_BLOCK_OPENERS)


def next_code_line(ctx: CursorContext) -> str:
    """The first line after the cursor's that holds a letter or digit, or "" when none does."""
    for line in ctx.suffix.split("\n")[1:]:
        if any(c.isalnum() for c in line):
            return line.rstrip("\r")
    return ""
