"""Rank suggestions: length-normalised log-probability less penalties.

A suggestion's score is the mean log-probability of the tokens it kept, less a penalty for each
warning sign the checks found. A candidate that a check rejected scores -inf: last in the list.
Whether a suggestion is shown at all is the gate's to say (`gate.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence

from model_runtime.backend import Candidate
from model_runtime.context import CursorContext

# Log-probability units taken off the score for each warning sign.
PENALTIES = {
    "repetition": 0.5,  # the model looped; what is left of it is often noise too
    "copies_previous_line": 0.7,  # the line above, again
    "unfinished": 0.3,  # it ran out of tokens or time mid-thought
    "syntax": 0.3,  # its last lines had to go to parse
}

Decode = Callable[[Sequence[int]], str]


def kept_logprobs(candidate: Candidate, kept: int, decode: Decode | None) -> list[float]:
    """The log-probabilities of the tokens that produced the first `kept` characters.

    Without `decode` (or when all was kept) that is every token's.
    """
    ids, logprobs = candidate.token_ids, candidate.logprobs
    if decode is None or kept >= len(candidate.text) or len(ids) != len(logprobs):
        return logprobs
    low, high = 1, len(ids)
    covered = kept + len(candidate.lead)  # the first tokens re-type the lead, unshown
    while low < high:  # fewest tokens whose text covers `kept` characters
        middle = (low + high) // 2
        if len(decode(ids[:middle])) >= covered:
            high = middle
        else:
            low = middle + 1
    return logprobs[:low]


def score(logprobs: Sequence[float], flags: Collection[str], rejected: bool = False) -> float:
    """Mean log-probability less the penalties of `flags`; -inf when rejected or empty."""
    if rejected or not logprobs:
        return -math.inf
    return sum(logprobs) / len(logprobs) - sum(PENALTIES[flag] for flag in flags)


def unscored(flags: Collection[str], rejected: bool = False) -> float:
    """The score of a candidate that came without log-probabilities (some serving engines send
    none): neutral, less the penalties, so the checks alone rank it and gate it."""
    return score([0.0], flags, rejected)


def copies_previous_line(text: str, ctx: CursorContext) -> bool:
    """Whether the text's first line repeats the line above the cursor (a weak model's habit)."""
    if ctx.line_prefix.strip():
        return False
    before = ctx.prefix[: len(ctx.prefix) - len(ctx.line_prefix)]
    previous = next((line for line in reversed(before.split("\n")) if line.strip()), "")
    first = text.split("\n", 1)[0].strip()
    return bool(first) and any(c.isalnum() for c in first) and first == previous.strip()
