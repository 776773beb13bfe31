"""Snippets as prompt text: file sections for models that know them, comments for the rest."""

from __future__ import annotations

from collections.abc import Sequence

from model_runtime.crossfile.documents import Snippet
from model_runtime.templates import FimTemplate

# The line comment of each LSP language id; "#" for languages not listed.
_SLASHES = (
    "c", "cpp", "csharp", "go", "java", "javascript", "javascriptreact", "typescript",
    "typescriptreact", "kotlin", "scala", "swift", "rust", "php", "dart",
)  # fmt: skip
COMMENT = {**dict.fromkeys(_SLASHES, "//"), "lua": "--", "sql": "--", "haskell": "--"}


def comment_prefix(language: str) -> str:
    """How a line comment starts in `language`."""
    return COMMENT.get(language, "#")


def render_snippet(snippet: Snippet, template: FimTemplate, language: str) -> str:
    """One snippet: under the template's file separator, or commented with its path."""
    if template.file_header:
        return template.file_header.format(path=snippet.path) + snippet.text + "\n"
    mark = comment_prefix(language)
    lines = [f"{mark} Path: {snippet.path}"]
    lines += [f"{mark} {line}".rstrip() for line in snippet.text.split("\n")]
    return "\n".join(lines) + "\n"


def render_block(
    snippets: Sequence[Snippet], template: FimTemplate, language: str, path: str
) -> str:
    """The snippets in order, then (for commented snippets) the current file's path.

    Templates with a file separator name the current file themselves.
    """
    if not snippets:
        return ""
    text = "".join(render_snippet(s, template, language) for s in snippets)
    if template.file_header or not path:
        return text
    return text + f"{comment_prefix(language)} Path: {path}\n"
