"""Stop criteria: small callables that look at a candidate so far and return why to stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal

from model_runtime.trimming import loop_start

StopReason = Literal[
    "eos",
    "fim_end",
    "stop_string",
    "newline",
    "suffix_line",
    "cut",
    "loop",
    "max_tokens",
    "deadline",
    "cancelled",
]


@dataclass
class DecodeState:
    """One candidate's progress: tokens chosen so far and the text they decode to."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    lead_tokens: int = 0  # of `token_ids`, those that re-type the healed lead; they are free


StopCriterion = Callable[[DecodeState], StopReason | None]


def eos(token_ids: Collection[int]) -> StopCriterion:
    """Stop on the model's end-of-text token(s)."""
    return lambda s: "eos" if s.token_ids and s.token_ids[-1] in token_ids else None


def fim_end(token_ids: Collection[int]) -> StopCriterion:
    """Stop on tokens that end a fill-in-the-middle answer (file separator, FIM pad, ...)."""
    return lambda s: "fim_end" if s.token_ids and s.token_ids[-1] in token_ids else None


def stop_strings(strings: Sequence[str]) -> StopCriterion:
    """Stop once the text contains any of `strings`."""
    wanted = [s for s in strings if s]
    return lambda s: "stop_string" if any(w in s.text for w in wanted) else None


def single_line() -> StopCriterion:
    """Stop at the end of the current line."""
    return lambda s: "newline" if "\n" in s.text else None


def suffix_line(line: str) -> StopCriterion:
    """Stop once a finished line of the text is `line` (up to indentation): the candidate has
    started re-typing the code after the cursor, which trimming cuts off anyway."""
    wanted = line.strip()

    def check(s: DecodeState) -> StopReason | None:
        done = s.text[: s.text.rfind("\n") + 1]  # finished lines only
        return "suffix_line" if any(row.strip() == wanted for row in done.split("\n")) else None

    return check if wanted else (lambda _s: None)


def cut_settled(cut: Callable[[str], str] | None) -> StopCriterion:
    """Stop once `cut` (the cuts trimming makes of a block, by whole lines) keeps whole lines and
    drops at least one finished line after them: the cut rests on finished lines only, so no
    token to come changes what is shown, and decoding on would be time for nothing."""

    def check(s: DecodeState) -> StopReason | None:
        kept = cut(s.text) if cut is not None else s.text
        if len(kept) >= len(s.text) or not kept.strip():
            return None
        lines = s.text.split("\n")
        whole = kept.count("\n") + 1
        return "cut" if whole <= len(lines) - 2 and "\n".join(lines[:whole]) == kept else None

    return check if cut is not None else (lambda _s: None)


def looping_line(copies: float = 4, chars: int = 32) -> StopCriterion:
    """Stop once the line being written ends in `copies` copies, `chars` characters or more, of
    a unit (`.types.types.types.types`): trimming keeps only the first copy of a line that ends
    repeating itself, so a small model caught in a loop would decode the rest of its budget for
    nothing. Legitimate repeats that long (`[None, None, None, None, None, None]`) are rare,
    and trimming cuts them so already whenever the budget runs out inside them."""

    def check(s: DecodeState) -> StopReason | None:
        line = s.text[s.text.rfind("\n") + 1 :].rstrip()
        looping = len(line) >= chars and loop_start(line, copies, chars) is not None
        return "loop" if looping else None

    return check


def max_tokens(limit: int) -> StopCriterion:
    """Stop after `limit` tokens (not counting those that re-type the lead)."""
    return lambda s: "max_tokens" if len(s.token_ids) - s.lead_tokens >= limit else None


def deadline(at: float, clock: Callable[[], float] = time.perf_counter) -> StopCriterion:
    """Stop once `clock()` reaches `at`: a late suggestion is worth less than a short one."""
    return lambda _s: "deadline" if clock() >= at else None


def cancelled(event: threading.Event) -> StopCriterion:
    """Stop as soon as someone sets `event` (a superseding request, `$/cancelRequest`)."""
    return lambda _s: "cancelled" if event.is_set() else None


def first_reason(criteria: Sequence[StopCriterion], state: DecodeState) -> StopReason | None:
    """The reason of the first criterion that fires, or None to go on."""
    for criterion in criteria:
        if (reason := criterion(state)) is not None:
            return reason
    return None


def cut_at_stops(text: str, strings: Sequence[str], one_line: bool) -> str:
    """The text before the earliest stop string (and, for one line, before the line break)."""
    ends = [text.find(s) for s in strings if s and s in text]
    if one_line and "\n" in text:
        ends.append(text.find("\n"))
    return text[: min(ends)] if ends else text
