"""Ranking by the code after the cursor, for models that cannot read it in their prompt.

A prefix-only model writes its candidates blind to what follows the cursor. Each candidate is
then asked a second question: given the prompt and this candidate, how likely is the code that
already follows it? One short forward pass per candidate, from the prompt's cached state, gives
the mean log-probability of the first tokens of that code; candidates are ordered by their own
score plus that fit. The gate still looks at the candidate's own confidence only.
"""

from __future__ import annotations

from model_runtime.context import CursorContext

# Characters of the code after a suggestion that it is scored against: about two lines.
CONTINUATION_CHARS = 120
# Weight of the continuation's mean log-probability against the candidate's own score.
FIT_WEIGHT = 1.0


def continuation(ctx: CursorContext, replace: int) -> str:
    """The code after a suggestion that replaces `replace` characters: what the model should
    find likely next. Blank lines are skipped; empty when only blank space follows."""
    rest = ctx.suffix[replace:]
    head, newline, tail = rest.partition("\n")
    lines = [line for line in tail.split("\n") if line.strip()]
    text = head + newline + "\n".join(lines) if head.strip() else "\n" + "\n".join(lines)
    return text[:CONTINUATION_CHARS] if text.strip() else ""


def ranked_score(own: float, fit: float | None) -> float:
    """The ordering key: the candidate's own score, plus its fit with what follows."""
    return own if fit is None else own + FIT_WEIGHT * fit
