"""Fill-in-the-middle training examples (Bavarian et al. 2022) in the "wisp" template's spelling.

A chunk of a document becomes prefix + middle + suffix at random points and is written PSM or SPM;
besides uniform character splits, some middles end at a line end, as editor completions do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from model_runtime.templates import TEMPLATES, PromptParts

from .tokenizer import EOS

TEMPLATE = TEMPLATES["wisp"]
# The inference template in both layouts: rendering through it keeps training and inference alike.
_LAYOUTS = {layout: replace(TEMPLATE, layout=layout) for layout in ("psm", "spm")}


@dataclass(frozen=True)
class FimConfig:
    """How often examples are FIM, how they are laid out, and how middles are chosen."""

    rate: float = 0.9  # share of examples that are FIM rather than plain left-to-right text
    spm_rate: float = 0.5  # share of FIM examples written suffix-first
    line_rate: float = 0.5  # share of FIM middles that end at a line end


def plain_example(path: str, text: str) -> str:
    """A left-to-right example: file header, the text, end of text."""
    return TEMPLATE.header(PromptParts("", "", path)) + text + EOS


def psm_example(path: str, prefix: str, middle: str, suffix: str) -> str:
    """`<|file_sep|>{path}\\n<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>{middle}`."""
    return _layout("psm", path, prefix, middle, suffix)


def spm_example(path: str, prefix: str, middle: str, suffix: str) -> str:
    """`<|file_sep|>{path}\\n<|fim_suffix|>{suffix}<|fim_prefix|>{prefix}<|fim_middle|>{middle}`."""
    return _layout("spm", path, prefix, middle, suffix)


def _layout(layout: str, path: str, prefix: str, middle: str, suffix: str) -> str:
    return _LAYOUTS[layout].render(PromptParts(prefix, suffix, path)) + middle + EOS


def uniform_span(text: str, rng: random.Random) -> tuple[int, int]:
    """Two character positions drawn uniformly, in order."""
    a, b = rng.randint(0, len(text)), rng.randint(0, len(text))
    return min(a, b), max(a, b)


def line_span(text: str, rng: random.Random) -> tuple[int, int]:
    """A middle that ends at a line end: the rest of a line, or one to three whole lines."""
    start = rng.randint(0, len(text))
    if rng.random() < 0.5:
        end = text.find("\n", start)
        return start, len(text) if end < 0 else end
    start = text.rfind("\n", 0, start) + 1
    end = start
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        newline = text.find("\n", end)
        end = len(text) if newline < 0 else newline + 1
    return start, end


def make_example(path: str, text: str, rng: random.Random, config: FimConfig) -> str:
    """One training example from a chunk: plain text, or FIM in PSM or SPM layout."""
    if rng.random() >= config.rate:
        return plain_example(path, text)
    span = line_span if rng.random() < config.line_rate else uniform_span
    start, end = span(text, rng)
    pieces = (path, text[:start], text[start:end], text[end:])
    return spm_example(*pieces) if rng.random() < config.spm_rate else psm_example(*pieces)
