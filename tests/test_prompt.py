"""Fitting prefix and suffix into a token budget with a real BPE tokenizer."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from tiny_model import build_tokenizer

from model_runtime.context import cursor_context
from model_runtime.prompt import (
    PREFIX_SLACK,
    PrefixAnchor,
    build_prompt,
    fit_prefix,
    fit_suffix,
)
from model_runtime.templates import get_template


class BpeTokenizer:
    def __init__(self) -> None:
        self._tok = build_tokenizer()

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=False))


@pytest.fixture(scope="module")
def tok() -> BpeTokenizer:
    return BpeTokenizer()


CODE = "".join(f"def f{i}(a, b):\n    return a + b * {i}  # 😀 note\n\n" for i in range(60))


def test_short_text_is_kept_whole(tok: BpeTokenizer) -> None:
    assert fit_prefix("x = 1\ny = ", tok, 100) == ("x = 1\ny = ", len(tok.encode("x = 1\ny = ")))
    assert fit_suffix("\nprint(y)\n", tok, 100)[0] == "\nprint(y)\n"


@pytest.mark.parametrize("budget", [5, 20, 64, 300])
def test_prefix_fits_and_starts_at_a_line(tok: BpeTokenizer, budget: int) -> None:
    kept, n = fit_prefix(CODE, tok, budget)
    assert CODE.endswith(kept)
    assert n == len(tok.encode(kept)) <= budget
    assert kept == "" or CODE[len(CODE) - len(kept) - 1] == "\n"


@pytest.mark.parametrize("budget", [5, 20, 64, 300])
def test_suffix_fits_and_ends_at_a_line(tok: BpeTokenizer, budget: int) -> None:
    kept, n = fit_suffix(CODE, tok, budget)
    assert CODE.startswith(kept)
    assert n == len(tok.encode(kept)) <= budget
    assert kept.endswith("\n") or "\n" not in kept  # a line too long for the budget is cut


def test_single_long_line_keeps_its_tail(tok: BpeTokenizer) -> None:
    line = "x = [" + ", ".join(str(i) for i in range(500))
    kept, n = fit_prefix(line, tok, 30)
    assert line.endswith(kept) and 0 < n <= 30


def test_zero_budget(tok: BpeTokenizer) -> None:
    assert fit_prefix(CODE, tok, 0) == ("", 0)
    assert fit_suffix(CODE, tok, 0) == ("", 0)


def test_build_prompt_respects_budget_and_share(tok: BpeTokenizer) -> None:
    text = CODE + CODE
    ctx = cursor_context(text, len(CODE), "m.py")
    prompt = build_prompt(ctx, get_template("wisp"), tok, budget=200, suffix_share=0.25)
    assert prompt.suffix_tokens <= 50
    assert prompt.prefix_tokens + prompt.suffix_tokens <= 200
    assert prompt.prefix_tokens > 100  # the prefix gets what the suffix leaves
    assert prompt.text.startswith("<|file_sep|>m.py\n<|fim_suffix|>")
    assert prompt.text.endswith(prompt.parts.prefix + "<|fim_middle|>")


def test_unused_suffix_budget_goes_to_prefix(tok: BpeTokenizer) -> None:
    ctx = cursor_context(CODE + "\n", len(CODE))
    prompt = build_prompt(ctx, get_template("wisp"), tok, budget=200)
    assert prompt.suffix_tokens <= 2 and prompt.prefix_tokens > 150


def test_prefix_only_template_drops_the_suffix(tok: BpeTokenizer) -> None:
    ctx = cursor_context("a = 1\nb = \nc = 3\n", 10)
    prompt = build_prompt(ctx, get_template("prefix-only"), tok, budget=100)
    assert prompt.text == "a = 1\nb = " and prompt.suffix_tokens == 0


def test_typing_keeps_the_cut_prefix_start(tok: BpeTokenizer) -> None:
    template = get_template("wisp")
    first = build_prompt(cursor_context(CODE, len(CODE)), template, tok, budget=120)
    assert first.anchor is not None and first.prefix_tokens <= 120 * (1 - PREFIX_SLACK)
    start = first.anchor.offset
    typed, anchor = CODE, first.anchor
    for char in "def g(x):\n    return x":
        typed += char
        prompt = build_prompt(cursor_context(typed, len(typed)), template, tok, 120, anchor=anchor)
        assert prompt.anchor is not None and prompt.anchor.offset == start
        assert prompt.parts.prefix == typed[start:] and prompt.prefix_tokens <= 120
        anchor = prompt.anchor
    assert prompt.text.startswith(first.text[: first.text.index("<|fim_middle|>")])


def test_anchor_moves_when_the_prefix_outgrows_it(tok: BpeTokenizer) -> None:
    template = get_template("wisp")
    first = build_prompt(cursor_context(CODE, len(CODE)), template, tok, budget=120)
    grown = CODE + "x = 1\n" * 40
    assert first.anchor is not None
    grown_ctx = cursor_context(grown, len(grown))
    prompt = build_prompt(grown_ctx, template, tok, 120, anchor=first.anchor)
    assert prompt.anchor is not None and prompt.anchor.offset > first.anchor.offset
    assert prompt.prefix_tokens <= 120 and grown.endswith(prompt.parts.prefix)


@pytest.mark.parametrize(
    "anchor_text",
    ["not in the document", "def f0(a, b):"],  # gone / too far back to fit
)
def test_stale_anchor_falls_back_to_a_fresh_cut(tok: BpeTokenizer, anchor_text: str) -> None:
    fresh = build_prompt(cursor_context(CODE, len(CODE)), get_template("wisp"), tok, budget=120)
    stale = PrefixAnchor(anchor_text, len(CODE))
    prompt = build_prompt(
        cursor_context(CODE, len(CODE)), get_template("wisp"), tok, budget=120, anchor=stale
    )
    assert prompt.text == fresh.text and prompt.anchor == fresh.anchor


def test_whole_prefix_needs_no_anchor(tok: BpeTokenizer) -> None:
    prompt = build_prompt(cursor_context("x = 1\n", 6), get_template("wisp"), tok, budget=120)
    assert prompt.anchor is None and prompt.parts.prefix == "x = 1\n"
