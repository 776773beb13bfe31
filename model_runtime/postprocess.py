"""Turn raw candidates into suggestions: cut, clean, place against the text after the cursor."""

from __future__ import annotations

from dataclasses import dataclass

from model_runtime.backend import Candidate
from model_runtime.context import CursorContext
from model_runtime.stopping import cut_at_stops


@dataclass(frozen=True)
class Suggestion:
    """Text to insert at the cursor, replacing `replace` characters right of it on its line."""

    text: str
    score: float
    replace: int = 0


def clean_text(text: str, stops: tuple[str, ...], one_line: bool) -> str:
    """Cut at stop strings (and the line break in one-line mode); drop trailing blank space."""
    text = cut_at_stops(text, stops, one_line)
    lines = [line.rstrip() for line in text.split("\n")]
    while len(lines) > 1 and not lines[-1]:
        lines.pop()
    return "\n".join(lines).rstrip() if len(lines) == 1 else "\n".join(lines)


def overlap_with_line_suffix(text: str, line_suffix: str) -> int:
    """How many characters after the cursor the suggestion already types (an auto-closed `)`).

    When the suggestion ends with the rest of the line, it replaces it; otherwise it is inserted.
    """
    rest = line_suffix.rstrip()
    return len(line_suffix) if rest and text.rstrip().endswith(rest) else 0


def to_suggestions(
    candidates: list[Candidate], ctx: CursorContext, stops: tuple[str, ...], one_line: bool
) -> list[Suggestion]:
    """Cleaned, de-duplicated, non-empty suggestions, best mean log-probability first."""
    seen: set[str] = set()
    out: list[Suggestion] = []
    for cand in sorted(candidates, key=lambda c: c.mean_logprob, reverse=True):
        text = clean_text(cand.text, stops, one_line)
        if not text.strip() or text in seen:
            continue
        seen.add(text)
        out.append(
            Suggestion(text, cand.mean_logprob, overlap_with_line_suffix(text, ctx.line_suffix))
        )
    return out
