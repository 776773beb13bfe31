"""One block of context from other documents: sources, one token budget, kept while typing.

The block goes at the very front of the prompt. The backend reuses the key/value cache of the
longest token prefix a prompt shares with the last one of its document, so a block that changed
on every keystroke would cost a full prefill each time; it is therefore rebuilt only when another
document (or its recent edits) changed, or the cursor moved more than `region_lines` away from
where it was built.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from model_runtime.context import CursorContext
from model_runtime.crossfile.definitions import DefinitionIndex, definition_snippets
from model_runtime.crossfile.documents import Deadline, EditedRange, OpenDocument, Snippet
from model_runtime.crossfile.edits import edit_snippets
from model_runtime.crossfile.render import render_block, render_snippet
from model_runtime.crossfile.similar import (
    COMMON_WORDS,
    WindowIndex,
    identifiers,
    similar_snippets,
)
from model_runtime.prompt import Tokenizer
from model_runtime.templates import FimTemplate

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IMPORT = re.compile(r"^\s*(?:from\s+\S+\s+)?import\s+(.+)$", re.MULTILINE)
_DEFINED_HERE = re.compile(
    r"^[ \t]*(?:async\s+)?(?:def|class|function|func|fn)\s+([A-Za-z_]\w*)"
    r"|^([A-Za-z_]\w*)\s*(?::[^=\n]*)?=",
    re.MULTILINE,
)
MAX_NAMES = 64
SOURCES = ("definitions", "edits", "similar")  # in the order the block takes from them


@dataclass(frozen=True)
class CrossFileOptions:
    """The token budget the sources share, each source's time budget, and when to rebuild."""

    tokens: int = 384  # 0: no context from other documents
    source_ms: float = 50.0
    region_lines: int = 20
    query_lines: int = 30  # the lines before the cursor (and a third as many after) to match
    sources: tuple[str, ...] = SOURCES  # which sources the block takes from (`wisp eval` tries)


@dataclass(frozen=True)
class ContextBlock:
    """The rendered context, its size in tokens, and the snippets it holds (last: nearest)."""

    text: str = ""
    tokens: int = 0
    snippets: tuple[Snippet, ...] = ()


EMPTY = ContextBlock()


def names_near(ctx: CursorContext, lines: int = 40) -> list[str]:
    """Names the cursor's code uses, nearest first, then the names it imports.

    Names the document defines itself are left out: their definitions are in the prompt, or
    would be, and other documents' namesakes are more likely noise than help.
    """
    before = ctx.prefix.split("\n")
    near = [w for line in reversed(before[-lines:]) for w in _IDENTIFIER.findall(line)]
    imported = [w for m in _IMPORT.finditer(ctx.prefix) for w in _IDENTIFIER.findall(m.group(1))]
    here = {a or b for a, b in _DEFINED_HERE.findall(ctx.prefix + ctx.suffix)}
    names = dict.fromkeys(
        w for w in near + imported if len(w) > 1 and w not in COMMON_WORDS and w not in here
    )
    return list(names)[:MAX_NAMES]


def query_text(ctx: CursorContext, lines: int) -> str:
    """The code around the cursor that snippets are matched against."""
    before = "\n".join(ctx.prefix.split("\n")[-lines:])
    after = "\n".join(ctx.suffix.split("\n")[: max(1, lines // 3)])
    return before + after


def within_budget(
    snippets: Sequence[Snippet],
    budget: int,
    tokenizer: Tokenizer,
    template: FimTemplate,
    language: str,
) -> list[Snippet]:
    """The snippets, in order, that fit `budget` tokens once rendered; repeats are skipped."""
    chosen: list[Snippet] = []
    used = 0
    for snippet in snippets:
        if any(snippet.path == c.path and snippet.text in c.text for c in chosen):
            continue
        cost = len(tokenizer.encode(render_snippet(snippet, template, language)))
        if used + cost <= budget:
            chosen.append(snippet)
            used += cost
    return chosen


@dataclass(frozen=True)
class _Kept:
    key: tuple[object, ...]
    line: int
    block: ContextBlock


@dataclass
class CrossFileContext:
    """Builds the block of other documents' context for a cursor, and keeps it per document."""

    tokenizer: Tokenizer
    options: CrossFileOptions = field(default_factory=CrossFileOptions)
    clock: Callable[[], float] = time.perf_counter
    size: int = 64  # documents whose block is kept
    builds: int = 0  # blocks built rather than reused, for tests and figures
    _kept: OrderedDict[str, _Kept] = field(default_factory=OrderedDict)
    _definitions: DefinitionIndex = field(default_factory=DefinitionIndex)
    _windows: WindowIndex = field(default_factory=WindowIndex)

    def block(
        self,
        ctx: CursorContext,
        others: Sequence[OpenDocument],
        edits: Sequence[EditedRange],
        template: FimTemplate,
    ) -> ContextBlock:
        """The block for `ctx`: the kept one while nothing it was made from changed."""
        if self.options.tokens <= 0:
            return EMPTY
        others = [d for d in others if d.path != ctx.path]
        if not others:
            return EMPTY
        edits = [e for e in edits if e.path != ctx.path]
        key = (template.name, ctx.language, self.options, self.sources(ctx.path, others, edits))
        line = ctx.prefix.count("\n")
        kept = self._kept.get(ctx.path)
        if (
            kept is not None
            and kept.key == key
            and abs(line - kept.line) <= self.options.region_lines
        ):
            return kept.block
        block = self._build(ctx, others, edits, template)
        self._kept[ctx.path] = _Kept(key, line, block)
        self._kept.move_to_end(ctx.path)
        if len(self._kept) > self.size:
            self._kept.popitem(last=False)
        return block

    def sources(
        self, path: str, others: Sequence[OpenDocument], edits: Sequence[EditedRange]
    ) -> tuple[object, ...]:
        """What a block for a cursor in `path` is made from: the other documents' texts (by
        hash) and their recent edits; () when there is no budget for a block."""
        if self.options.tokens <= 0:
            return ()
        return (
            tuple((d.path, hash(d.text)) for d in others if d.path != path),
            tuple(e for e in edits if e.path != path),
        )

    def _build(
        self,
        ctx: CursorContext,
        others: Sequence[OpenDocument],
        edits: Sequence[EditedRange],
        template: FimTemplate,
    ) -> ContextBlock:
        """Definitions first, then recent edits, then similar code, while the budget lasts."""
        self.builds += 1
        ms, wanted = self.options.source_ms, self.options.sources
        snippets: list[Snippet] = []
        if "definitions" in wanted:
            deadline = Deadline(ms, self.clock)
            snippets += definition_snippets(names_near(ctx), others, deadline, self._definitions)
        if "edits" in wanted:
            snippets += edit_snippets(edits, others, Deadline(ms, self.clock))
        if "similar" in wanted:
            query = identifiers(query_text(ctx, self.options.query_lines))
            snippets += similar_snippets(query, others, Deadline(ms, self.clock), self._windows)
        chosen = within_budget(
            snippets, self.options.tokens, self.tokenizer, template, ctx.language
        )
        chosen.reverse()  # the most wanted nearest the code it is for
        text = render_block(chosen, template, ctx.language, ctx.path)
        return ContextBlock(text, len(self.tokenizer.encode(text)) if text else 0, tuple(chosen))
