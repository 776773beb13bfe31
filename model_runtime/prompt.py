"""Prompt building: fit the cursor context into a token budget and render it with a template."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from model_runtime.context import CursorContext
from model_runtime.healing import TokenTable, split_lead
from model_runtime.templates import FimTemplate, PromptParts

# No tokenizer we know packs more than this many characters into one token on average, so
# cutting the text to budget * this before tokenizing never drops text that would have fitted.
_MAX_CHARS_PER_TOKEN = 8


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt and the (possibly shortened) parts it was made of."""

    text: str
    parts: PromptParts
    template: FimTemplate
    prefix_tokens: int
    suffix_tokens: int
    anchor: PrefixAnchor | None = None
    lead: str = ""  # the end of the prefix, left out of the prompt: the answer must re-type it


def fit_prefix(prefix: str, tokenizer: Tokenizer, budget: int) -> tuple[str, int]:
    """The longest tail of `prefix` within `budget` tokens; when cut, it starts a line if it can."""
    if budget <= 0 or not prefix:
        return "", 0
    window = prefix[-budget * _MAX_CHARS_PER_TOKEN :]
    ids = tokenizer.encode(window)
    if len(ids) <= budget:
        if len(window) == len(prefix):
            return prefix, len(ids)
        return _from_line_start(window, tokenizer)
    tail = tokenizer.decode(ids[-budget:]).lstrip("\ufffd")
    kept = prefix[len(prefix) - len(tail) :]
    return _from_line_start(kept, tokenizer)


def _from_line_start(text: str, tokenizer: Tokenizer) -> tuple[str, int]:
    newline = text.find("\n")
    kept = text[newline + 1 :] if 0 <= newline < len(text) - 1 else text
    return kept, len(tokenizer.encode(kept))


def fit_suffix(suffix: str, tokenizer: Tokenizer, budget: int) -> tuple[str, int]:
    """The longest head of `suffix` within `budget` tokens; when cut, it ends a line if it can."""
    if budget <= 0 or not suffix:
        return "", 0
    window = suffix[: budget * _MAX_CHARS_PER_TOKEN]
    ids = tokenizer.encode(window)
    if len(ids) <= budget and len(window) == len(suffix):
        return suffix, len(ids)
    head = tokenizer.decode(ids[:budget]).rstrip("\ufffd") if len(ids) > budget else window
    kept = suffix[: len(head)]
    newline = kept.rfind("\n")
    kept = kept[: newline + 1] if newline > 0 else kept
    return kept, len(tokenizer.encode(kept))


# Where the prefix must be cut, it is cut this much shorter than the budget, and later prompts
# keep the same first line while they fit: typing then appends tokens to a prompt whose start is
# unchanged, so the model's cache of it stays valid (see the backend's prefix reuse). Cutting to
# the budget exactly would move the start, and so invalidate the whole cache, every line or so.
PREFIX_SLACK = 0.2
_ANCHOR_CHARS = 160
_ANCHOR_LOOKBACK = 4096


@dataclass(frozen=True)
class PrefixAnchor:
    """Where the last prompt's prefix started: its first characters and their offset."""

    text: str
    offset: int


def anchored_prefix(
    prefix: str, tokenizer: Tokenizer, budget: int, anchor: PrefixAnchor | None
) -> tuple[str, int, PrefixAnchor | None]:
    """`fit_prefix` that keeps the previous start while it fits, and leaves slack when it cuts."""
    if anchor is not None and anchor.text:
        start = prefix.find(anchor.text, max(0, anchor.offset - _ANCHOR_LOOKBACK))
        if start >= 0:
            kept = prefix[start:]
            count = len(tokenizer.encode(kept))
            if count <= budget:
                return kept, count, PrefixAnchor(anchor.text, start)
    kept, count = fit_prefix(prefix, tokenizer, budget)
    if len(kept) == len(prefix):
        return kept, count, None  # the whole prefix fits: its start is the document's start
    kept, count = fit_prefix(prefix, tokenizer, int(budget * (1 - PREFIX_SLACK)))
    start = len(prefix) - len(kept)
    return kept, count, PrefixAnchor(kept[:_ANCHOR_CHARS], start)


def build_prompt(
    ctx: CursorContext,
    template: FimTemplate,
    tokenizer: Tokenizer,
    budget: int,
    suffix_share: float = 0.25,
    anchor: PrefixAnchor | None = None,
    healing: TokenTable | None = None,
    context: str = "",
) -> Prompt:
    """Render `ctx` with `template`, spending at most `budget` tokens on prefix and suffix.

    The suffix gets up to `suffix_share` of the budget; what it leaves unused goes to the prefix,
    which matters most for what comes next. With an `anchor` from the previous prompt of the
    same document, the prefix keeps its start where it can (`Prompt.anchor` is the new one).
    With a `healing` table the prefix's last token moves out of the prompt into `Prompt.lead`.
    `context` (other files' snippets, rendered) goes first and is not counted in `budget`.
    """
    suffix, suffix_tokens = (
        fit_suffix(ctx.suffix, tokenizer, int(budget * suffix_share))
        if template.uses_suffix
        else ("", 0)
    )
    prefix, prefix_tokens, new_anchor = anchored_prefix(
        ctx.prefix, tokenizer, budget - suffix_tokens, anchor
    )
    lead = ""
    if healing is not None:
        prefix, lead = split_lead(prefix, tokenizer, healing)
    parts = PromptParts(prefix=prefix, suffix=suffix, path=ctx.path, context=context)
    return Prompt(
        template.render(parts), parts, template, prefix_tokens, suffix_tokens, new_anchor, lead
    )
